"""Experiment configs: ml_collections ``get_config(arg)`` files, command-line overrides, saving.

A config is named either by a path (``configs/synthetic.py``) or by the bare name of a file in the
repository's ``configs/`` folder (``synthetic``), optionally followed by ``:arg`` that is passed to
``get_config`` (``synthetic:quick``). Overrides are ``dotted.path=value`` strings; the value is parsed as a
Python literal when it is one (``100``, ``4/255`` is evaluated as arithmetic, ``(1, 2)``, ``True``) and kept
as a string otherwise. Assigning to a field that does not exist raises a ``ValueError`` naming it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import operator
from pathlib import Path

import ml_collections

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def resolve_config_path(name: str) -> Path:
    """The file behind a config name or path (without its ``:arg`` part)."""
    path = Path(name)
    if path.suffix == ".py" and path.exists():
        return path
    candidate = CONFIG_DIR / f"{name}.py"
    if candidate.exists():
        return candidate
    available = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))
    raise FileNotFoundError(
        f"no config {name!r}: expected a .py file path or one of {available} (in {CONFIG_DIR})"
    )


def load_config(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """Build the config named by ``spec`` (``name[:arg]``) and apply ``overrides`` (``a.b=value``)."""
    name, _, arg = spec.partition(":")
    path = resolve_config_path(name)
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


def _evaluate(node):
    """Literal values plus + - * / arithmetic (so ``4/255`` works); anything else raises ValueError."""
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
    """Load a config saved by ``save_config``."""
    return ml_collections.ConfigDict(json.loads(Path(path).read_text(encoding="utf-8")))
