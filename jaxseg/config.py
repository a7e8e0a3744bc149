"""Experiment configs: ml_collections ``get_config(arg)`` files, command-line overrides, saving.

A config is named either by a path (``configs/synthetic.py``) or by the bare name of a config shipped with
the package (``synthetic``; ``available_configs()`` lists them), optionally followed by ``:arg`` that is passed
to ``get_config`` (``synthetic:quick``). The shipped configs are the repository's top-level ``configs/`` folder,
installed as the package ``jaxseg.configs`` (setup.py's ``package_dir``) and read with ``importlib.resources``,
so bare names work the same from a wheel and from an editable install. Overrides are ``dotted.path=value``
strings; the value is parsed as a Python literal when it is one (``100``, ``4/255`` is evaluated as arithmetic,
``(1, 2)``, ``True``) and kept as a string otherwise. Assigning to a field that does not exist raises a
``ValueError`` naming it.

Why not ``ml_collections.config_flags``: it parses ``--config.a.b=value`` through absl's process-wide flag
registry, which the argparse subcommands (and library callers, who pass override strings) do not use; it
converts a value by the field's type, so ``--config.attack.eps=4/255``, the way radii are written throughout
the field, is refused ("could not convert string to float"); and an unknown field fails with a bare
``AttributeError``. The short parser here keeps those three.
"""

from __future__ import annotations

import ast
import importlib.resources
import importlib.util
import json
import operator
from importlib.resources.abc import Traversable
from pathlib import Path

import ml_collections

CONFIG_PACKAGE = "jaxseg.configs"


def _config_files() -> dict[str, Traversable]:
    """The shipped configs by name: every ``NAME.py`` of ``jaxseg.configs`` not starting with ``_``."""
    try:
        files = importlib.resources.files(CONFIG_PACKAGE).iterdir()
    except ModuleNotFoundError:  # an editable install made before configs/ became jaxseg.configs
        raise FileNotFoundError(f"the shipped configs ({CONFIG_PACKAGE}) are not installed; reinstall jaxseg "
                                "(pip install -e . in a checkout)") from None
    return {f.name.removesuffix(".py"): f for f in files
            if f.is_file() and f.name.endswith(".py") and not f.name.startswith("_")}


def available_configs() -> list[str]:
    """The names of the configs shipped with the package (``synthetic``, ``pirat_voc``, ...), sorted."""
    return sorted(_config_files())


def resolve_config_path(name: str) -> Path | Traversable:
    """The file behind a config name or path (without its ``:arg`` part): an existing ``.py`` path as given,
    else the shipped config of that name (a package resource, a real file unless the package is zipped)."""
    path = Path(name)
    if path.suffix == ".py" and path.exists():
        return path
    files = _config_files()
    if name in files:
        return files[name]
    raise FileNotFoundError(
        f"no config {name!r}: expected a .py file path or one of {sorted(files)} "
        f"(shipped in {importlib.resources.files(CONFIG_PACKAGE)})"
    )


def load_config(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """Build the config named by ``spec`` (``name[:arg]``) and apply ``overrides`` (``a.b=value``)."""
    name, _, arg = spec.partition(":")
    resource = resolve_config_path(name)
    with importlib.resources.as_file(resource) as path:  # the file itself, or a temporary copy if zipped
        module_spec = importlib.util.spec_from_file_location(f"jaxseg_config_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} defines no get_config(arg) function")
    config = module.get_config(arg) if arg else module.get_config()
    for override in overrides:
        apply_override(config, override)
    return config


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def config_json(config: str, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """``jaxseg config``: the config ``config`` with ``overrides`` applied (``load_config``), as sorted JSON."""
    return load_config(config, overrides).to_json_best_effort(indent=2, sort_keys=True)


def _evaluate(node):
    """Literal values plus + - * / arithmetic, also inside tuples and lists (so ``4/255`` and ``(4/255, 8/255)``
    work); anything else raises ValueError."""
    if isinstance(node, (ast.Tuple, ast.List)):
        values = [_evaluate(element) for element in node.elts]
        return tuple(values) if isinstance(node, ast.Tuple) else values
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    return ast.literal_eval(node)


def parse_value(text: str):
    """A command-line value: a Python literal or arithmetic if it parses as one, else the string."""
    try:
        return _evaluate(ast.parse(text.strip(), mode="eval").body)
    except (ValueError, SyntaxError, TypeError, ZeroDivisionError):
        return text


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
    """Set ``config.a.b = value`` from the string ``"a.b=value"``; unknown fields raise ValueError."""
    if "=" not in override:
        raise ValueError(f"config override {override!r} must look like field.path=value")
    key, _, text = override.partition("=")
    key = key.strip().removeprefix("--").removeprefix("config.")
    *parents, leaf = key.split(".")
    node = config
    for depth, part in enumerate(parents):
        if part not in node:
            raise ValueError(f"config has no field {'.'.join(parents[: depth + 1])!r} (override {override!r})")
        node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise ValueError(
            f"config has no field {key!r} (override {override!r}); "
            f"fields here: {sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []}"
        )
    value = parse_value(text)
    current = node[leaf]
    if isinstance(current, str) and not isinstance(value, str):
        value = text.strip()
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    try:
        node[leaf] = value
    except TypeError as error:
        raise ValueError(f"config field {key!r}: {error}") from error


def save_config(config: ml_collections.ConfigDict, path: str | Path) -> None:
    """Write the config as JSON (human-readable; reload with ``config_from_json``)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(config.to_json_best_effort(indent=2, sort_keys=True) + "\n", encoding="utf-8")


def config_from_json(path: str | Path) -> ml_collections.ConfigDict:
    """Load a config saved by ``save_config``. JSON arrays become tuples, as configs write sequences."""

    def tuples(value):
        if isinstance(value, list):
            return tuple(tuples(v) for v in value)
        if isinstance(value, dict):
            return {k: tuples(v) for k, v in value.items()}
        return value

    return ml_collections.ConfigDict(tuples(json.loads(Path(path).read_text(encoding="utf-8"))))


MODEL_OPTION_FIELDS = ("drop_path_rate", "normalize", "dtype", "depthwise")


def model_options(model_section) -> dict:
    """The ``create_model`` options set in a ``config.model`` section (a ConfigDict or its saved JSON dict)."""
    return {k: model_section[k] for k in MODEL_OPTION_FIELDS if k in model_section}


def default_config() -> ml_collections.ConfigDict:
    """Every field a run reads, with defaults; ``configs/*.py`` start from this and change what differs.

    Sections: ``model`` (registry name and options), ``data`` (dataset, splits, crops, protocol), ``mesh``
    (device axes), ``train`` (recipe, optimiser, schedule, checkpoints), ``attack`` (the attack used inside
    adversarial training), ``evaluate`` (what ``jaxseg evaluate --config`` runs: attack, radii, norm, iterations,
    batch size, with ``data.eval_*`` and ``data.num_eval_examples``; training's periodic evaluation uses
    ``evaluate.batch_size`` and, for its APGD-CE check, ``train.robust_eval_iterations`` at ``attack.eps``).
    Units: radii and step sizes on the [0, 1] image scale; sizes in pixels; batch sizes are global (over all
    hosts and devices). The run directory is not a field: ``jaxseg train --workdir`` names it.
    """
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.name = "upernet_convnext_atto"
    config.model.num_classes = 6
    config.model.drop_path_rate = 0.0
    config.model.normalize = False
    config.model.dtype = "float32"  # compute dtype; parameters stay float32
    config.model.depthwise = "auto"
    config.model.init_from = ""  # checkpoint dir whose backbone initialises this model (PIR-AT)

    config.data = ml_collections.ConfigDict()
    config.data.name = "synthetic_shapes"
    config.data.data_dir = ""  # "" = JAXSEG_DATA_DIR or ~/tensorflow_datasets
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    config.data.crop_size = 64
    config.data.base_size = 64
    config.data.eval_protocol = "standard"  # or "sea" (short side resized, centre crop, VOC 255 → 0)
    config.data.eval_size = 64
    config.data.num_eval_examples = 0  # jaxseg evaluate --config: 0 = the whole split
    config.data.worker_count = 0

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    config.mesh.model = 1

    config.train = ml_collections.ConfigDict()
    config.train.recipe = "clean"  # clean | pgd-at | segpgd-at (PIR-AT = pgd-at + model.init_from)
    config.train.steps = 1000
    config.train.batch_size = 16
    config.train.optimizer = "adamw"  # adamw | sgd
    config.train.learning_rate = 1e-3
    config.train.weight_decay = 1e-2
    config.train.momentum = 0.9
    config.train.warmup_steps = 50
    config.train.schedule_power = 1.0
    config.train.encoder_lr_ratio = 1.0  # backbone learning rate = ratio * learning_rate
    config.train.auxiliary_weight = 0.4
    config.train.log_every = 10
    config.train.eval_every = 200
    config.train.checkpoint_every = 200
    config.train.keep_checkpoints = 2
    config.train.best_metric = "robust_mIoU"
    config.train.eval_examples = 64
    config.train.robust_eval_iterations = 10

    config.attack = ml_collections.ConfigDict()
    config.attack.norm = "linf"
    config.attack.eps = 4 / 255
    config.attack.step_size = 0.01
    config.attack.steps = 2
    config.attack.loss = "ce"
    # Start of the training attack: False = delta 0, the clean image (PGD-AT / PIR-AT, Croce et al. 2024);
    # True = a uniform point of the eps-ball (SegPGD, Gu et al. 2022, Algorithm 1).
    config.attack.random_start = False
    # segpgd-at only: "sum" = L_clean + L_adv, each a per-pixel mean over its half of the batch (Gu et al. 2022,
    # Sec. 3.3); "mean" = one per-pixel mean over the concatenated half-clean/half-adversarial batch.
    config.attack.segpgd_at_loss = "sum"

    config.evaluate = ml_collections.ConfigDict()
    config.evaluate.attack = "sea"
    config.evaluate.eps = (4 / 255, 8 / 255)
    config.evaluate.norm = "linf"
    config.evaluate.iterations = 300
    config.evaluate.batch_size = 16
    return config


def apply_quick(config, size: int = 64) -> None:
    """Shrink a recipe to a CPU smoke run of a few steps on tiny crops; the recipe's structure is kept."""
    config.train.steps = 4
    config.train.batch_size = 8
    config.train.warmup_steps = 1
    config.train.log_every = 1
    config.train.eval_every = 2
    config.train.checkpoint_every = 2
    config.train.eval_examples = 8
    config.train.robust_eval_iterations = 2
    config.data.crop_size = size
    config.data.base_size = size
    config.data.eval_size = size
    config.evaluate.iterations = 4
    config.evaluate.batch_size = 8


def parse_config_args(arg: str, choices: set[str], config_name: str) -> set[str]:
    """The comma-separated options of a ``get_config(arg)``; unknown ones raise ``ValueError``."""
    options = set(filter(None, arg.split(",")))
    unknown = options - choices
    if unknown:
        raise ValueError(f"{config_name} config: unknown arg(s) {sorted(unknown)}; choose from {sorted(choices)}")
    return options
