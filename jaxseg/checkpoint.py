"""Variables checkpoints with Orbax: model variables with metadata (conversions, exports).

A *variables checkpoint* is a directory holding ``variables/`` (an Orbax PyTree checkpoint of the Flax
variables ``{'params': ..., 'batch_stats': ...}``) and ``metadata.json`` (at least ``model`` and
``num_classes`` so the model can be rebuilt, plus provenance such as ``source``, ``family``, ``sha256``).
Restores are onto host memory or any mesh via ``shardings``. ``load_model`` rebuilds the model a checkpoint
names and checks every parameter name and shape against it before restoring.

Other kinds of directory are read through a ``DirectoryReader`` that the package writing them registers
(``register_reader``): ``jaxseg.train`` registers training work directories when it is imported, so
``load_variables`` and ``load_model`` then also accept a run's directory (its latest step's ``params`` and
``batch_stats``, never the optimiser state). This module knows no such layout and imports no such package.

Everything a user can point at is checked: a damaged or incomplete Orbax directory, an unreadable or
incomplete ``metadata.json`` and weights of another model each raise one ``ValueError`` (``UnreadableFileError``
for files that cannot be read) naming the directory or file and the problem.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

VARIABLES_DIR = "variables"
METADATA_FILE = "metadata.json"
MODEL_COLLECTIONS = ("params", "batch_stats")
DIGEST_KEY = "variables_sha256"
ABSTRACT_INPUT_SHAPE = (1, 64, 64, 3)  # fixes the variable shapes only (as jaxseg.convert); valid for every model


class UnreadableFileError(ValueError):
    """A file or directory exists but cannot be read as what it should be (a damaged checkpoint, a non-image
    file, a corrupt weights file). The message names the path and the problem; ``path`` holds the path."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        super().__init__(f"{path}: {problem}")


def short_error(error: BaseException, limit: int = 300) -> str:
    """``Type: message`` of a library error on one line, without TensorStore's spec dumps, at most ``limit`` chars."""
    text = " ".join(str(error).split("[tensorstore_spec=")[0].split())
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DirectoryReader(NamedTuple):
    """How ``load_variables`` and ``load_model`` read a kind of directory other than a variables checkpoint.

    recognizes(directory: Path) -> bool: whether ``directory`` (existing, without ``variables/``) is of this kind.
    metadata(directory: Path) -> dict: ``model``, ``num_classes``, ``options`` (see ``check_metadata``) and
      provenance, without reading any weight.
    variables(directory: Path, target=None, shardings=None) -> (variables, metadata), as ``load_variables``.
    """

    recognizes: Callable[[Path], bool]
    metadata: Callable[[Path], dict]
    variables: Callable[..., tuple[dict, dict]]


_READERS: list[DirectoryReader] = []


def register_reader(reader: DirectoryReader) -> None:
    """Let ``load_variables`` and ``load_model`` read the directories ``reader`` recognizes (idempotent)."""
    if reader not in _READERS:
        _READERS.append(reader)


def _reader_for(directory: Path) -> DirectoryReader | None:
    """The registered reader of ``directory`` (existing); None for a variables checkpoint or an unknown kind."""
    if (directory / VARIABLES_DIR).exists():
        return None
    return next((reader for reader in _READERS if reader.recognizes(directory)), None)


def variables_digest(variables) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of every array of ``variables`` (host arrays)."""
    import hashlib

    digest = hashlib.sha256()
    for path, leaf in sorted(
        ("/".join(_key_name(k) for k in path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(variables)
    ):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{path}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_variables(directory: str | Path, variables: dict, metadata: dict) -> Path:
    """Write ``variables`` and ``metadata`` (JSON-serialisable, must name ``model`` and ``num_classes``).

    The Orbax write is atomic (temporary directory, then rename); ``metadata.json`` is written last, so a
    directory without it is incomplete and ``load_variables`` refuses it. The metadata also records
    ``variables_sha256`` (``variables_digest``), which ``load_variables`` checks, so damaged weights are
    reported instead of silently used.
    """
    missing = {"model", "num_classes"} - set(metadata)
    if missing:
        raise ValueError(f"checkpoint metadata must include {sorted(missing)}")
    directory = Path(directory).resolve()
    if (directory / VARIABLES_DIR).exists():
        raise FileExistsError(f"{directory / VARIABLES_DIR} already exists; choose a new output directory")
    directory.mkdir(parents=True, exist_ok=True)
    variables = jax.tree_util.tree_map(np.asarray, dict(variables))
    metadata = {**metadata, DIGEST_KEY: variables_digest(variables)}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / VARIABLES_DIR, variables)
    temporary = directory / (METADATA_FILE + ".tmp")
    temporary.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=_json_default))
    temporary.replace(directory / METADATA_FILE)
    return directory


def _key_name(key) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def leaf_shapes(tree) -> dict[str, tuple[int, ...]]:
    """``{'params/backbone/stem/conv/kernel': shape, ...}`` for arrays, shape structs or Orbax array metadata."""
    return {
        "/".join(_key_name(k) for k in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if hasattr(leaf, "shape")
    }


def variable_mismatches(saved, expected, prefixes: tuple[str, ...] = ("params/", "batch_stats/")) -> list[str]:
    """Differences between the model variables of a checkpoint and those a model expects.

    Compares the leaves of ``saved`` and ``expected`` under ``prefixes`` by name and shape; returns one line
    per difference ('missing from the checkpoint: ...', 'not in the model: ...', '...: checkpoint (a, b) vs
    model (c, d)'), empty when they match.
    """
    saved_shapes = {k: v for k, v in leaf_shapes(saved).items() if k.startswith(prefixes)}
    expected_shapes = {k: v for k, v in leaf_shapes(expected).items() if k.startswith(prefixes)}
    lines = [f"missing from the checkpoint: {k}" for k in sorted(expected_shapes.keys() - saved_shapes.keys())]
    lines += [f"not in the model: {k}" for k in sorted(saved_shapes.keys() - expected_shapes.keys())]
    lines += [
        f"{k}: checkpoint {saved_shapes[k]} vs model {expected_shapes[k]}"
        for k in sorted(saved_shapes.keys() & expected_shapes.keys())
        if saved_shapes[k] != expected_shapes[k]
    ]
    return lines


class ModelMismatchError(ValueError):
    """The variables of a checkpoint are not those of the model they are loaded into (names or shapes differ)."""


def raise_on_mismatch(source, saved, expected) -> None:
    """``ModelMismatchError`` (a ``ValueError``) listing the mismatched parameters (at most 20 lines) if ``saved``
    and ``expected`` differ."""
    lines = variable_mismatches(saved, expected)
    if lines:
        shown = "\n  ".join(lines[:20]) + (f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else "")
        raise ModelMismatchError(
            f"checkpoint {source} was saved from a different model ({len(lines)} mismatched parameters):\n  {shown}"
        )


def _json_default(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def read_metadata(directory: str | Path) -> dict:
    """The ``metadata.json`` of a variables checkpoint, checked: a JSON object naming a registered-looking
    ``model`` (a string), ``num_classes`` (a positive integer) and optional ``options`` (an object)."""
    path = Path(directory) / METADATA_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{directory} is not a complete jaxseg variables checkpoint: {METADATA_FILE} is missing "
            f"(expected {VARIABLES_DIR}/ and {METADATA_FILE})"
        )
    try:
        metadata = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnreadableFileError(path, f"not valid JSON ({short_error(error)}); the checkpoint's metadata is "
                                        "damaged") from error
    except IsADirectoryError as error:
        raise UnreadableFileError(path, "is a directory, not a JSON file") from error
    return check_metadata(metadata, path)


def check_metadata(metadata, source) -> dict:
    """``metadata`` if it names ``model`` (str), ``num_classes`` (int >= 1) and optional ``options`` (dict);
    otherwise an ``UnreadableFileError`` naming ``source``."""
    if not isinstance(metadata, dict):
        raise UnreadableFileError(source, f"checkpoint metadata must be a JSON object with 'model' and "
                                          f"'num_classes'; got {type(metadata).__name__}")
    missing = [key for key in ("model", "num_classes") if key not in metadata]
    if missing:
        raise UnreadableFileError(source, f"checkpoint metadata lacks {', '.join(map(repr, missing))} (it must name "
                                          "the model and its number of classes)")
    if not isinstance(metadata["model"], str):
        raise UnreadableFileError(source, f"'model' must be a registered model name; got {metadata['model']!r}")
    classes = metadata["num_classes"]
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise UnreadableFileError(source, f"'num_classes' must be a positive integer; got {classes!r}")
    if not isinstance(metadata.get("options", {}), dict):
        raise UnreadableFileError(source, f"'options' must be a JSON object of model options; got "
                                          f"{metadata['options']!r}")
    return metadata


def _abstract(target, shardings=None):
    """``target`` (arrays, shape structs or Orbax metadata) as ``jax.ShapeDtypeStruct``s, with ``shardings``."""
    return jax.tree_util.tree_map(
        lambda leaf, sharding=None: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        target,
        *(() if shardings is None else (shardings,)),
    )


def damaged_error(directory, error: BaseException) -> UnreadableFileError:
    """The ``UnreadableFileError`` for a checkpoint ``directory`` that Orbax failed to read with ``error``."""
    return UnreadableFileError(
        directory,
        f"the checkpoint is damaged or incomplete and cannot be read ({short_error(error)}); write it again "
        "(jaxseg convert, jaxseg train) or restore it from a copy",
    )


def _saved_tree(checkpointer, item_directory: Path) -> dict:
    """The saved tree's array metadata (names, shapes, dtypes) of an Orbax PyTree item, read without the data."""
    if not item_directory.is_dir():
        raise UnreadableFileError(item_directory.parent, f"the checkpoint is incomplete: {item_directory.name}/ "
                                                         "is missing")
    _quiet_abandoned_reads()
    try:
        with quiet_orbax_warnings():
            saved = checkpointer.metadata(item_directory)
        saved = getattr(saved, "item_metadata", saved)
        saved = getattr(saved, "tree", saved)
    except Exception as error:  # Orbax and TensorStore raise many types for damaged files
        raise damaged_error(item_directory, error) from error
    if not isinstance(saved, dict) or not saved:
        raise damaged_error(item_directory, ValueError("Orbax finds no readable array metadata (names, shapes) in it"))
    return saved


@contextlib.contextmanager
def quiet_orbax_warnings():
    """Hide Orbax's absl warnings while reading (read-only manager notices, missing optional metadata files):
    they are noise around a successful read, and a failed one raises its own message."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def _quiet_abandoned_reads() -> None:
    """Drop TensorStore's 'Event loop is closed' reports (idempotent; every other report goes on as before).

    When one array of a damaged checkpoint fails to read, Orbax closes its event loop while the reads of other
    arrays are still in flight; their completion callbacks then report ``RuntimeError('Event loop is closed')``
    through ``sys.unraisablehook``, which prints a traceback per array after the real error was raised.
    """
    import sys

    previous = sys.unraisablehook
    if getattr(previous, "_jaxseg_quiet_abandoned_reads", False):
        return

    def hook(unraisable):
        if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
            return
        previous(unraisable)

    hook._jaxseg_quiet_abandoned_reads = True
    sys.unraisablehook = hook


def _restore_arrays(item_directory: Path, abstract) -> dict:
    """Restore exactly the leaves of ``abstract`` (other saved leaves, e.g. the optimiser state, are not read):
    onto their shardings, or as NumPy arrays without one."""

    def restore_args(leaf):
        if getattr(leaf, "sharding", None) is not None:
            return ocp.ArrayRestoreArgs(sharding=leaf.sharding, global_shape=leaf.shape, dtype=leaf.dtype)
        return ocp.RestoreArgs(restore_type=np.ndarray, dtype=leaf.dtype)

    args = ocp.args.PyTreeRestore(item=abstract, restore_args=jax.tree_util.tree_map(restore_args, abstract),
                                  partial_restore=True)
    _quiet_abandoned_reads()
    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            return dict(checkpointer.restore(item_directory, args=args))
    except Exception as error:  # Orbax and TensorStore raise many types for damaged files
        raise damaged_error(item_directory, error) from error


def restore_variables(item_directory: Path, *, target=None, shardings=None, source=None,
                      collections: tuple[str, ...] | None = None) -> tuple[dict, dict]:
    """``(variables, saved)`` of the Orbax PyTree item ``item_directory``; ``saved`` is its array metadata.

    collections: restore only these top-level entries (e.g. ``MODEL_COLLECTIONS`` of a training state: its
      optimiser state is never read; an ``UnreadableFileError`` if one is missing), or None for all.
    target, shardings: as in ``load_variables``; a mismatch raises ``ModelMismatchError`` naming ``source``
      (default: the item's directory) before any array is read. Without shardings arrays come back as NumPy.
    """
    with ocp.PyTreeCheckpointer() as checkpointer:
        saved = _saved_tree(checkpointer, item_directory)
    if collections is not None:
        missing = [name for name in collections if name not in saved]
        if missing:
            raise UnreadableFileError(item_directory, f"the saved training state has no {' or '.join(missing)}")
        saved = {name: saved[name] for name in collections}
    if target is None:
        abstract = _abstract(saved)
    else:
        abstract = _abstract(target, shardings)
        raise_on_mismatch(item_directory.parent if source is None else source, saved, abstract)
    return _restore_arrays(item_directory, abstract), saved


def load_variables(directory: str | Path, target=None, shardings=None) -> tuple[dict, dict]:
    """Restore ``(variables, metadata)`` from a variables checkpoint or a registered kind of directory.

    Args:
      directory: a directory written by ``save_variables`` (e.g. by ``jaxseg convert``) or one a registered
        ``DirectoryReader`` recognizes (a training work directory once ``jaxseg.train`` is imported: its latest
        step, only ``params`` and ``batch_stats``).
      target: optional pytree of arrays/``jax.ShapeDtypeStruct`` giving the expected structure; a checkpoint
        that does not match raises ``ValueError`` listing every mismatched parameter before anything is read.
      shardings: optional pytree of ``jax.sharding.Sharding`` matching ``target`` to restore onto a mesh.

    Raises:
      FileNotFoundError: no such directory, or not a checkpoint (no ``metadata.json``, no complete step).
      UnreadableFileError (a ValueError): damaged files or metadata; the message names them.
      ValueError: the saved variables differ from ``target``.
    """
    directory = _existing_checkpoint_directory(directory)
    reader = _reader_for(directory)
    if reader is not None:
        return reader.variables(directory, target=target, shardings=shardings)
    metadata = read_metadata(directory)
    item = directory / VARIABLES_DIR
    variables, saved = restore_variables(item, target=target, shardings=shardings, source=directory)
    expected = metadata.get(DIGEST_KEY)
    if expected and shardings is None and _leaf_types(variables) == _leaf_types(saved) and \
            variables_digest(variables) != expected:
        raise UnreadableFileError(item, f"the checkpoint is damaged: the restored weights do not match the checksum "
                                        f"in {METADATA_FILE}; write it again (jaxseg convert, jaxseg train) or restore "
                                        "it from a copy")
    return variables, metadata


def _leaf_types(tree) -> dict[str, tuple]:
    """{path: (shape, dtype)} of the array leaves of ``tree`` (arrays or Orbax array metadata)."""
    return {
        "/".join(_key_name(k) for k in path): (tuple(leaf.shape), np.dtype(leaf.dtype))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if hasattr(leaf, "shape")
    }


def load_model(directory: str | Path, *, segmentation: bool = False, model_options: dict | None = None,
               shardings=None):
    """``(module, variables, metadata)``: the model a checkpoint's metadata names, and its variables.

    The model is built from ``metadata['model']``, ``metadata['num_classes']`` and its ``options`` (updated with
    ``model_options``); its parameter names and shapes are compared with the checkpoint's before any weight is
    read (a ``ValueError`` lists every difference). ``segmentation=True`` refuses image classifiers, whose
    (B, K) logits cannot be scored per pixel.
    """
    from jaxseg import models

    directory = Path(directory)
    metadata = _model_metadata(directory)
    options = {**metadata.get("options", {}), **(model_options or {})}
    try:
        module = models.create_model(metadata["model"], int(metadata["num_classes"]), **options)
    except ValueError as error:
        raise ValueError(f"checkpoint {directory} names a model jaxseg cannot build: {error}") from error
    if segmentation:
        check_segmentation_model(module, f"checkpoint {directory}", metadata["model"], int(metadata["num_classes"]))
    expected = _expected_variables(metadata["model"], int(metadata["num_classes"]),
                                   json.dumps(options, sort_keys=True, default=_json_default))
    try:
        variables, metadata = load_variables(directory, target=expected, shardings=shardings)
    except ModelMismatchError as error:
        raise ModelMismatchError(
            f"{error}\n(the checkpoint's metadata names model {metadata['model']!r} with {metadata['num_classes']} "
            "classes and options " + json.dumps(options, sort_keys=True, default=_json_default) + "; either the "
            "metadata or the weights belong to another model)"
        ) from None
    return module, variables, metadata


@functools.lru_cache(maxsize=8)
def _expected_variables(name: str, num_classes: int, options_json: str) -> dict:
    """The model variables' names, shapes and dtypes (``jax.eval_shape``: traced once per model, not compiled)."""
    from jaxseg import models

    module = models.create_model(name, num_classes, **json.loads(options_json))
    expected = jax.eval_shape(lambda: models.init_variables(module, jax.random.key(0), ABSTRACT_INPUT_SHAPE))
    return {k: v for k, v in expected.items() if k in MODEL_COLLECTIONS}


def _existing_checkpoint_directory(directory) -> Path:
    """``directory`` resolved, after checking that it exists and is a directory."""
    directory = Path(directory).resolve()
    if not directory.exists():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is a file, not a checkpoint directory (a variables checkpoint from "
                                 f"jaxseg convert, or a training work directory)")
    return directory


def _model_metadata(directory: Path) -> dict:
    """The model description of a variables checkpoint or registered kind of directory, reading no weights."""
    directory = _existing_checkpoint_directory(directory)
    reader = _reader_for(directory)
    return read_metadata(directory) if reader is None else reader.metadata(directory)


def check_segmentation_model(module, source: str, name: str, num_classes: int) -> None:
    """``ValueError`` if ``module`` is an image classifier ((B, K) logits) rather than a segmentor."""
    from jaxseg.models.segmentor import Classifier

    if isinstance(module, Classifier):
        raise ValueError(
            f"{source} holds {name!r}, an image classifier ({num_classes} classes, one prediction per image); "
            "this command needs a segmentation model with per-pixel predictions, e.g. upernet_convnext_* "
            "(a classifier initialises one through train.init_from)"
        )


def open_model(source: str | Path, *, random_init: bool = False, num_classes: int | None = None,
               image_size: int | tuple[int, int] = 64, seed: int = 0, model_options: dict | None = None,
               segmentation: bool = True, option: str = "--model"):
    """``(module, variables, metadata)`` from a checkpoint directory or, with ``random_init``, a registry name.

    The one way every command opens a model. A directory (variables checkpoint or training run) goes through
    ``load_model`` (parameter names and shapes checked before any weight is read; ``num_classes`` is then
    ignored). A registered name needs ``random_init=True`` and ``num_classes``: the model gets random weights
    initialised for ``image_size`` (side or (H, W)) from ``seed`` (cached per process, so repeated smoke runs
    initialise once) and ``metadata`` ``{"model", "num_classes", "options", "random_init": True}``.
    ``segmentation`` refuses image classifiers. Errors name ``option`` (the flag the value came from):
    ``FileNotFoundError`` for a missing directory, ``ValueError`` otherwise.
    """
    from jaxseg import models

    path = Path(source)
    if path.is_dir():
        return load_model(path, segmentation=segmentation, model_options=model_options)
    if path.exists():
        raise ValueError(f"{option} {source} is a file; give a checkpoint directory (jaxseg convert, jaxseg train) "
                         "or a registered model name with --random-init")
    name = str(source)
    if name not in models.list_models():
        if "/" in name or "\\" in name:
            raise FileNotFoundError(f"checkpoint directory {name} does not exist")
        raise ValueError(f"{option} {name!r} is neither a checkpoint directory nor a registered model "
                         f"({', '.join(models.list_models())})")
    if not random_init:
        raise ValueError(f"model {name!r} has no weights: pass a checkpoint directory, or --random-init for a smoke run")
    if num_classes is None:
        raise ValueError("a randomly initialised model needs the number of classes (--num-classes)")
    options = dict(model_options or {})
    module = models.create_model(name, int(num_classes), **options)
    if segmentation:
        check_segmentation_model(module, option, name, int(num_classes))
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    variables = _random_variables(name, int(num_classes), json.dumps(options, sort_keys=True, default=_json_default),
                                  size, int(seed))
    return module, variables, {"model": name, "num_classes": int(num_classes), "options": options,
                               "random_init": True}


@functools.lru_cache(maxsize=4)
def _random_variables(name: str, num_classes: int, options_json: str, image_size: tuple[int, int], seed: int) -> dict:
    """Random weights of a registered model for (1, H, W, 3) inputs (cached per process)."""
    from jaxseg import models

    module = models.create_model(name, num_classes, **json.loads(options_json))
    return models.init_variables(module, jax.random.PRNGKey(seed), (1, *image_size, 3))
