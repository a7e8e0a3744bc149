"""``jaxseg evaluate`` and ``jaxseg attack`` as library calls: ``run_evaluation`` and ``run_attack``.

``check_options`` checks every option that can be checked without data or model; ``open_inputs`` then reads and
checks the data before it builds the model (a checkpoint, or random weights for smoke runs), and checks that the
model's classes cover the labels (``arrays``) or equal the dataset's. Parameters carry the commands' option names
(``num_classes`` is ``--num-classes``), and messages name the options.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

import jaxseg.train  # noqa: F401  (registers training work directories with jaxseg.checkpoint)
from jaxseg import adversarial_examples, arguments, attacks, checkpoint, data, evaluate
from jaxseg.progress import MakeBar, null_bar
from jaxseg.validation import valid_mask


@dataclasses.dataclass(frozen=True)
class AttackOptions:
    """The parsed threat model and attack settings: radii on the [0, 1] scale, step size (None: the attack's
    default)."""

    radii: list[float]
    step_size: float | None


def check_options(*, eps: str, step_size: str | None, norm: str, compute_dtype: str | None, out: str,
                  batch_size: int | None = None, iterations: int | None = None, num_examples: int | None = None,
                  num_classes: int | None = None, image_size: int | None = None) -> AttackOptions:
    """``ValueError``/``OSError`` for the first bad option; the parsed radii and step size otherwise."""
    from jaxseg.attacks import threat

    radii = arguments.parse_radii(eps)
    step = arguments.parse_step_size(step_size)
    threat.check_norm(norm)
    arguments.check_at_least({"--batch-size": batch_size, "--iterations": iterations,
                              "--num-examples": num_examples, "--num-classes": num_classes,
                              "--image-size": image_size})
    arguments.parse_compute_dtype(compute_dtype)  # checked here; the attacks take the name
    arguments.check_output_dir(out)
    return AttackOptions(radii, step)


@dataclasses.dataclass
class EvaluationInputs:
    """A model (``module``, ``variables``), its ``batches`` (dicts with ``image`` (B, H, W, 3), ``label``
    (B, H, W), ``valid`` (B,)), the number of examples (None: the whole split), the ``mask-ce-bal`` class weights
    and a description of the data for the results."""

    module: object
    variables: dict
    batches: Iterable[dict]
    total: int | None
    class_weights: data.ClassWeights
    description: dict


def _arrays_classes(path: str, labels, num_classes: int | None) -> int:
    needed = int(labels[valid_mask(labels)].max()) + 1
    if num_classes is not None and num_classes < needed:
        raise ValueError(f"{path}: labels go up to {needed - 1}, more than --num-classes {num_classes} allows")
    return needed


def _open_arrays(path: str, model: str, *, num_classes, random_init, class_weights, batch_size, num_examples,
                 seed) -> EvaluationInputs:
    images, labels = evaluate.load_arrays(path)
    needed = _arrays_classes(path, labels, num_classes)
    classes = num_classes or needed
    weights = None
    if random_init:  # the model will have `classes` classes: a bad weights file fails before it is built
        weights = data.resolve_class_weights(class_weights, classes, labels=labels)
    module, variables, metadata = checkpoint.open_model(model, num_classes=classes, random_init=random_init,
                                                        image_size=images.shape[1:3], seed=seed)
    model_classes = int(metadata["num_classes"])
    if model_classes < needed:
        raise ValueError(f"{path}: labels go up to {needed - 1} but the model {model} predicts "
                         f"{model_classes} classes (0 to {model_classes - 1}; 255 = ignored)")
    if num_classes is not None and num_classes != model_classes:
        raise ValueError(f"--num-classes {num_classes} but the model {model} has {model_classes} classes")
    if weights is None or model_classes != classes:
        weights = data.resolve_class_weights(class_weights, model_classes, labels=labels)
    batches = evaluate.array_batches(images, labels, batch_size, num_examples)
    total = min(num_examples or len(images), len(images))
    return EvaluationInputs(module, variables, batches, total, weights, {"arrays": path, "image_size": images.shape[1]})


def _open_dataset(dataset: str, model: str, *, split, data_dir, protocol, image_size, attack, num_classes,
                  random_init, class_weights, batch_size, num_examples, seed) -> EvaluationInputs:
    classes = num_classes or data.dataset_info(dataset).num_classes
    protocol, image_size = data.default_eval_view(dataset, attack, protocol, image_size)
    module, variables, metadata = checkpoint.open_model(model, num_classes=classes, random_init=random_init,
                                                        image_size=image_size, seed=seed)
    model_classes = int(metadata["num_classes"])
    if model_classes != classes:
        raise ValueError(f"the model {model} has {model_classes} classes but dataset {dataset} has "
                         f"{classes}" + (" (--num-classes)" if num_classes else ""))
    weights = data.resolve_class_weights(class_weights, classes, dataset=dataset, data_dir=data_dir)
    batches = data.eval_batches(dataset, split, data_dir=data_dir, batch_size=batch_size, protocol=protocol,
                                image_size=image_size, num_examples=num_examples)
    description = {"dataset": dataset, "split": split, "protocol": protocol, "image_size": image_size}
    return EvaluationInputs(module, variables, batches, num_examples, weights, description)


def open_inputs(*, model: str, dataset: str | None = None, arrays: str | None = None, split: str = "validation",
                data_dir: str | None = None, protocol: str | None = None, image_size: int | None = None,
                attack: str = "sea", num_classes: int | None = None, random_init: bool = False,
                class_weights: str = "dataset", batch_size: int = 8, num_examples: int | None = None,
                seed: int = 0) -> EvaluationInputs:
    """The model and data of an evaluation: ``model`` is a checkpoint directory, or a registered name with
    ``random_init``; the data is ``arrays`` (an ``.npz``, ``jaxseg.evaluate.load_arrays``) or a prepared
    ``dataset`` viewed with its default protocol and size for ``attack`` (``jaxseg.data.default_eval_view``);
    ``class_weights``: ``dataset`` | ``image`` | a JSON file (``jaxseg.data.resolve_class_weights``)."""
    if (dataset is None) == (arrays is None):
        raise ValueError("give one of --dataset NAME or --arrays FILE.npz (or --config NAME, whose data section names "
                         "the dataset)")
    common = dict(num_classes=num_classes, random_init=random_init, class_weights=class_weights,
                  batch_size=batch_size, num_examples=num_examples, seed=seed)
    if arrays:
        return _open_arrays(arrays, model, **common)
    return _open_dataset(dataset, model, split=split, data_dir=data_dir or None, protocol=protocol,
                         image_size=image_size, attack=attack, **common)


BUILT_IN_DEFAULTS = {"attack": "sea", "eps": "4/255", "norm": "linf", "batch_size": 8, "split": "validation"}


def _config_defaults(config) -> dict:
    """The options a config's ``evaluate``, ``data`` and ``model`` sections give (``jaxseg evaluate --config``)."""
    section, data_section = config.evaluate, config.data
    return {
        "attack": section.attack, "eps": ",".join(repr(float(e)) for e in section.eps), "norm": section.norm,
        "iterations": int(section.iterations), "batch_size": int(section.batch_size), "dataset": data_section.name,
        "split": data_section.eval_split, "data_dir": data_section.data_dir or None,
        "protocol": data_section.eval_protocol, "image_size": int(data_section.eval_size),
        "num_examples": int(data_section.num_eval_examples) or None, "num_classes": int(config.model.num_classes),
    }


def resolve_options(options: dict) -> dict:
    """The command's ``options`` with every unset (None) one filled: from the config named by ``config`` (with
    its ``overrides``), whose ``evaluate`` section gives attack, radii, norm, iterations and batch size and whose
    ``data`` section the dataset, split, protocol, image size and number of examples (``data.num_eval_examples``,
    0 = all); then from ``BUILT_IN_DEFAULTS``. Options given explicitly win. A config's dataset is used only when
    neither ``dataset`` nor ``arrays`` is given, its ``model.num_classes`` only for a ``random_init`` model."""
    resolved = dict(options)
    spec, overrides = resolved.pop("config", None), resolved.pop("overrides", None) or []
    if overrides and not spec:
        raise ValueError("--config.* overrides need --config NAME")
    defaults = {}
    if spec:
        from jaxseg.config import load_config

        defaults = _config_defaults(load_config(spec, overrides))
        if resolved.get("arrays") is not None or resolved.get("dataset") is not None:
            for key in ("dataset", "split", "data_dir", "protocol", "image_size"):
                defaults.pop(key)
        if not resolved.get("random_init"):
            defaults.pop("num_classes")
    for key, value in {**BUILT_IN_DEFAULTS, **defaults}.items():
        if resolved.get(key) is None:
            resolved[key] = value
    resolved["config"] = None if not spec else {"name": spec, "overrides": list(overrides)}
    return resolved


def _inputs(options: dict) -> tuple[AttackOptions, EvaluationInputs]:
    """Check ``options`` (resolved with ``resolve_options``), then open the model and data."""
    checked = check_options(**{k: options[k] for k in (
        "eps", "step_size", "norm", "compute_dtype", "out", "batch_size", "iterations", "num_examples", "num_classes",
        "image_size")})
    return checked, open_inputs(**{k: options[k] for k in (
        "model", "dataset", "arrays", "split", "data_dir", "protocol", "image_size", "attack", "num_classes",
        "random_init", "class_weights", "batch_size", "num_examples", "seed")})


def run_evaluation(*, attacked_only: bool = False, make_bar: MakeBar = null_bar, **options) -> tuple[str, str]:
    """``jaxseg evaluate``: clean and robust scores per radius and component (``jaxseg.evaluate.evaluate``),
    written as results.json and results.md to ``out``. ``options``: the keyword arguments of ``check_options``
    and ``open_inputs``, plus ``config``/``overrides`` (``resolve_options``). Returns (the Markdown table, a line
    naming the files written)."""
    options = resolve_options(options)
    checked, inputs = _inputs(options)
    bar = make_bar(f"evaluate {options['attack']}", inputs.total, "img")
    try:
        results = evaluate.evaluate(
            attacks.logits_function(inputs.module), inputs.batches, variables=inputs.variables,
            attack=options["attack"], eps=checked.radii, norm=options["norm"], iterations=options["iterations"],
            step_size=checked.step_size, seed=options["seed"], class_weights=inputs.class_weights,
            compute_dtype=options["compute_dtype"], data_description=inputs.description,
            clean_in_worst_case=not attacked_only, progress=bar.update)
    finally:
        bar.close()
    results["model"] = options["model"]
    if options["config"] is not None:
        results["config"] = options["config"]
    json_path, markdown_path = evaluate.write_results(results, options["out"])
    return evaluate.results_markdown(results), f"wrote {json_path} and {markdown_path}"


def run_attack(**options) -> tuple[str, str]:
    """``jaxseg attack``: attack the first ``num_examples`` images (default: one batch) at one radius and save
    ``adversarial.npz`` (``jaxseg.adversarial_examples``) to ``out``. ``options``: as ``run_evaluation``'s.
    Returns (the scores as JSON, a line naming the file written)."""
    import json

    import jax

    options = resolve_options(options)
    checked, inputs = _inputs(options)
    if len(checked.radii) != 1:
        raise ValueError(f"jaxseg attack takes one radius; got {options['eps']!r} (use jaxseg evaluate for several)")
    examples = adversarial_examples.attack_examples(
        options["attack"], attacks.logits_function(inputs.module), inputs.batches, eps=checked.radii[0],
        variables=inputs.variables, norm=options["norm"], iterations=options["iterations"],
        step_size=checked.step_size, class_weights=inputs.class_weights, compute_dtype=options["compute_dtype"],
        key=jax.random.PRNGKey(options["seed"]), max_batches=None if options["num_examples"] else 1)
    path = adversarial_examples.save_examples(Path(options["out"]) / "adversarial.npz", examples)
    summary = {"attack": options["attack"], "eps": checked.radii[0], "num_examples": len(examples["images"]),
               **adversarial_examples.example_scores(examples)}
    return json.dumps(summary, indent=2), f"wrote {path}"
