"""Shared machinery of the PyTorch → Flax converters: safe loading, key clean-up, mapping tables.

A *mapping table* is a list of ``Rule``s: a regular expression that must match a whole PyTorch key, the
'/'-separated Flax variable path it becomes (``\\1``-style group references allowed; the first component is
the collection, ``params`` or ``batch_stats``) and a transform of the array. ``target=None`` drops the key on
purpose (``num_batches_tracked``, an ImageNet classifier a segmentor does not use). ``apply_table`` checks
every key and shape against the variables the model expects and reports all problems in one ``ValueError``.

Layout rules (docs/algorithms.md#weight-conversion): convolution OIHW → HWIO (a depthwise (C, 1, k, k) kernel
becomes (k, k, 1, C) by the same transpose), Linear (out, in) → (in, out), BatchNorm weight/bias → ``params``
scale/bias and running_mean/var → ``batch_stats`` mean/var, LayerNorm weight/bias → scale/bias.

Files are read without running code from them: ``.safetensors`` with ``safetensors.numpy``; ``.pt/.pth/.bin/
.ckpt`` only through ``torch.load(..., weights_only=True)`` (torch is imported here, lazily, and nowhere else).
"""

from __future__ import annotations

import hashlib
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import jax
import numpy as np

from jaxseg.models.segmentor import IMAGENET_MEAN, IMAGENET_STD

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
WRAPPER_PREFIXES = ("module.", "base_model.", "model.")
WRAPPER_KEYS = ("state_dict", "model")
NORMALIZATION_KEY = re.compile(r"(?:base_)?normalize\.(mean|std)")


# --------------------------------------------------------------------------------------------- transforms


def keep(array: np.ndarray) -> np.ndarray:
    return array


def conv_kernel(array: np.ndarray) -> np.ndarray:
    """(O, I, kh, kw) → (kh, kw, I, O); a depthwise (C, 1, k, k) kernel becomes (k, k, 1, C)."""
    if array.ndim != 4:
        raise ValueError(f"expected a 4-D convolution weight, got shape {array.shape}")
    return array.transpose(2, 3, 1, 0)


def dense_kernel(array: np.ndarray) -> np.ndarray:
    """Linear (out, in) → (in, out); a 1x1 convolution (out, in, 1, 1) used as a Linear is accepted too."""
    if array.ndim == 4 and array.shape[2:] == (1, 1):
        array = array[:, :, 0, 0]
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D Linear weight, got shape {array.shape}")
    return array.T


@dataclass(frozen=True)
class Rule:
    """PyTorch key pattern (full match) → Flax variable path template (None: drop) with an array transform."""

    pattern: str
    target: str | None
    transform: Callable[[np.ndarray], np.ndarray] = keep


def conv_rules(source: str, target: str, bias: bool = True) -> list[Rule]:
    rules = [Rule(rf"{source}\.weight", f"params/{target}/kernel", conv_kernel)]
    return rules + ([Rule(rf"{source}\.bias", f"params/{target}/bias")] if bias else [])


def dense_rules(source: str, target: str) -> list[Rule]:
    return [Rule(rf"{source}\.weight", f"params/{target}/kernel", dense_kernel), Rule(rf"{source}\.bias", f"params/{target}/bias")]


def layer_norm_rules(source: str, target: str) -> list[Rule]:
    return [Rule(rf"{source}\.weight", f"params/{target}/scale"), Rule(rf"{source}\.bias", f"params/{target}/bias")]


def batch_norm_rules(source: str, target: str) -> list[Rule]:
    return [
        Rule(rf"{source}\.weight", f"params/{target}/scale"),
        Rule(rf"{source}\.bias", f"params/{target}/bias"),
        Rule(rf"{source}\.running_mean", f"batch_stats/{target}/mean"),
        Rule(rf"{source}\.running_var", f"batch_stats/{target}/var"),
        Rule(rf"{source}\.num_batches_tracked", None),
    ]


def conv_norm_act_rules(source: str, target: str) -> list[Rule]:
    """``source.conv`` (no bias) + ``source.bn`` or ``source.batch_norm`` → ``ConvNormAct`` ``target/{conv,bn}``."""
    return conv_rules(rf"{source}\.conv", f"{target}/conv", bias=False) + batch_norm_rules(
        rf"{source}\.(?:bn|batch_norm)", f"{target}/bn"
    )


# --------------------------------------------------------------------------------------------- families


@dataclass
class ModelSpec:
    """What a checkpoint converts to: registry name, number of classes and model options."""

    model: str
    num_classes: int
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """A source layout: how to recognise it, which model it becomes, and its mapping table.

    ``detect(keys)`` sees the keys after wrapper prefixes are stripped; ``infer(state_dict)`` reads sizes and
    the class count from shapes; ``table`` is the mapping table; ``normalize`` is whether the source
    expects ImageNet-normalised input when the checkpoint carries no normalisation buffers.
    """

    name: str
    description: str
    detect: Callable[[set[str]], bool]
    infer: Callable[[Mapping[str, np.ndarray]], ModelSpec]
    table: tuple[Rule, ...]
    normalize: bool


def require(state_dict: Mapping[str, np.ndarray], key: str, family: str) -> np.ndarray:
    """``state_dict[key]``, or a ValueError saying the checkpoint lacks a key its family must have."""
    if key not in state_dict:
        raise ValueError(f"checkpoint has no {key!r}, which every {family} checkpoint has")
    return state_dict[key]


def count_indices(keys, pattern: str) -> int:
    """Number of distinct integers captured by ``pattern`` (one group) in ``keys``: blocks in a stage."""
    found = {int(m.group(1)) for key in keys if (m := re.match(pattern, key))}
    return max(found) + 1 if found else 0


# --------------------------------------------------------------------------------------------- loading


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict as {key: numpy array} without executing anything from the file.

    ``.safetensors`` files are read with ``safetensors.numpy``; ``.pt/.pth/.bin/.ckpt/.tar`` with
    ``torch.load(map_location='cpu', weights_only=True)`` (needs the ``torch`` extra). A file whose unpickling
    needs arbitrary code is refused. ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers are unwrapped.
    Floating tensors become float32 arrays.

    Raises:
      FileNotFoundError: no such file (IsADirectoryError: a directory).
      ValueError: unsupported suffix, refused pickle, or no tensors inside; ``UnreadableFileError`` (a
        ValueError) for an empty, truncated, corrupt or foreign file. Messages name the file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give the PyTorch checkpoint file itself")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.stat().st_size == 0:
        raise _unreadable(path, "the file is empty")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        raw = _load_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        raw = _load_torch(path)
    else:
        raise ValueError(
            f"unsupported checkpoint file {path.name}: expected a {' / '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)} file"
        )
    try:
        raw = _unwrap(raw)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    arrays = {key: value for key, value in raw.items() if isinstance(key, str) and isinstance(value, np.ndarray)}
    if not arrays:
        raise ValueError(f"{path} holds no tensors (top-level keys: {sorted(map(str, raw))[:20]})")
    return arrays


def _load_safetensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    try:
        raw = load_file(str(path))
    except PermissionError:
        raise
    except Exception as error:  # the safetensors reader raises several types for corrupt files
        raise _unreadable(path, f"could not read it as safetensors (truncated or corrupt?): {_first_line(error)}") from error
    return {key: _as_float32(value) for key, value in raw.items()}


def _load_torch(path: Path) -> dict:
    try:
        import torch
    except ImportError as error:
        raise ValueError(
            f"reading {path.name} needs PyTorch: install the torch extra (pip install 'jaxseg[torch]') "
            "or convert the file to .safetensors first"
        ) from error
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not _refused_code(error) and not _looks_like_pickle(path):  # bytes that are no pickle at all
            raise _unreadable(path, "could not read it as a PyTorch checkpoint (truncated or corrupt, or not a "
                                    f"checkpoint at all?): {_unpickling_reason(error)}") from error
        raise ValueError(
            f"refusing {path}: it is not a plain weights file, loading it would need arbitrary code "
            f"({_unpickling_reason(error)}); convert it to .safetensors in a trusted environment"
        ) from error
    except PermissionError:
        raise
    except Exception as error:  # torch's readers raise many types (EOFError, KeyError, IndexError, RuntimeError ...)
        raise _unreadable(path, "could not read it as a PyTorch checkpoint (truncated or corrupt, or not a "
                                f"checkpoint at all?): {_first_line(error)}") from error
    return _tensors_to_numpy(raw, torch)


REFUSED_PICKLE_MARKERS = ("GLOBAL", "Can only create new object", "Can only build")


def _refused_code(error: Exception) -> bool:
    """Whether torch's weights_only unpickler refused an object that would run code (a global, a class), as
    opposed to bytes that are not a pickle it understands."""
    return any(marker in str(error) for marker in REFUSED_PICKLE_MARKERS)


def _looks_like_pickle(path: Path) -> bool:
    """Whether the file starts as a pickle of protocol 2-5 does (PROTO opcode): a plain ``pickle.dump`` that the
    weights-only reader cannot follow, rather than random bytes."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _unpickling_reason(error: Exception) -> str:
    """The line of torch's weights_only message that names the refused object (e.g. 'Unsupported global: ...')."""
    lines = [line.strip().removeprefix("WeightsUnpickler error:").strip() for line in str(error).splitlines()
             if any(word in line for word in ("Unsupported", "GLOBAL", "Can only"))]
    return lines[0].split(". ")[0] if lines else _first_line(error)


def _first_line(error: BaseException, limit: int = 200) -> str:
    """``Type: first sentence`` of a reader's error message (torch's run to many lines of advice)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text.split(". ")[0]
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unreadable(path: Path, problem: str):
    from jaxseg.checkpoint import UnreadableFileError

    return UnreadableFileError(path, problem)


def _tensors_to_numpy(value, torch):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.to(torch.float32).numpy() if value.is_floating_point() else value.numpy()
    if isinstance(value, Mapping):
        return {key: _tensors_to_numpy(item, torch) for key, item in value.items()}
    return value


def _as_float32(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


def _unwrap(raw):
    while isinstance(raw, Mapping):
        wrapped = [key for key in WRAPPER_KEYS if isinstance(raw.get(key), Mapping)]
        if not wrapped:
            break
        raw = raw[wrapped[0]]
    if not isinstance(raw, Mapping):
        raise ValueError(f"expected a state dict (a mapping of names to tensors), found {type(raw).__name__}")
    return raw


def strip_wrapper_prefixes(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Remove leading ``module.`` (DataParallel), ``base_model.`` and ``model.`` (robustness wrappers) from keys."""
    stripped = {}
    for key, value in state_dict.items():
        original = key
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        if key in stripped:
            raise ValueError(f"keys {original!r} and another one both become {key!r} once wrapper prefixes are removed")
        stripped[key] = value
    return stripped


def split_normalization(state_dict: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bool]:
    """Drop ``normalize.mean/std`` buffers; return the rest and whether they were present.

    jaxseg models normalise with ImageNet statistics or not at all, so other values raise ``ValueError``.
    """
    rest, found = {}, {}
    for key, value in state_dict.items():
        match = NORMALIZATION_KEY.fullmatch(key)
        if match:
            found[match.group(1)] = np.asarray(value, np.float64).reshape(-1)
        else:
            rest[key] = value
    if not found:
        return rest, False
    expected = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    for name, values in found.items():
        if values.shape != (3,) or not np.allclose(values, expected[name], atol=1e-3):
            raise ValueError(
                f"the checkpoint normalises inputs with {name}={values.tolist()}; jaxseg models support ImageNet "
                f"statistics (mean {IMAGENET_MEAN}, std {IMAGENET_STD}) or none"
            )
    return rest, True


# --------------------------------------------------------------------------------------------- tables


def apply_table(
    state_dict: Mapping[str, np.ndarray], rules: list[Rule], expected, context: str
) -> dict:
    """Map ``state_dict`` through ``rules`` onto the structure of ``expected`` (abstract Flax variables).

    Every source key must match a rule, every produced array must have the shape the model expects, and every
    model variable must be produced exactly once; otherwise one ``ValueError`` lists all the problems.
    Returns nested dicts of numpy arrays, float32 for floating leaves.
    """
    expected_shapes = {
        "/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(expected)
    }
    compiled = [(re.compile(rule.pattern), rule) for rule in rules]
    produced: dict[str, np.ndarray] = {}
    unmatched, mismatched, unknown, duplicated = [], [], [], []
    mismatched_paths = set()
    for key in sorted(state_dict):
        value = state_dict[key]
        match = next(((m, rule) for pattern, rule in compiled if (m := pattern.fullmatch(key))), None)
        if match is None:
            unmatched.append(f"{key} {tuple(value.shape)}")
            continue
        found, rule = match
        if rule.target is None:
            continue
        path = found.expand(rule.target)
        if path not in expected_shapes:
            unknown.append(f"{key} → {path}")
            continue
        try:
            array = np.asarray(rule.transform(np.asarray(value)))
        except ValueError as error:
            mismatched.append(f"{key} {tuple(value.shape)} → {path} {expected_shapes[path]}: {error}")
            mismatched_paths.add(path)
            continue
        if array.shape != expected_shapes[path]:
            mismatched.append(f"{key} {tuple(value.shape)} → {path}: expected {expected_shapes[path]}, got {array.shape}")
            mismatched_paths.add(path)
            continue
        if path in produced:
            duplicated.append(f"{key} → {path}")
            continue
        produced[path] = array.astype(np.float32, copy=False) if np.issubdtype(array.dtype, np.floating) else array
    missing = sorted(set(expected_shapes) - set(produced) - mismatched_paths)
    problems = [
        (unmatched, "source keys match no rule of the mapping table"),
        (unknown, "source keys map to variables the model does not have"),
        (mismatched, "shapes differ"),
        (duplicated, "model variables are given twice"),
        (missing, "model variables have no source key"),
    ]
    if any(items for items, _ in problems):
        lines = [f"cannot convert {context}:"]
        for items, title in problems:
            if items:
                lines.append(f"  {len(items)} {title}: " + "; ".join(items))
        raise ValueError("\n".join(lines))
    return _unflatten(produced)


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree
