"""Checkpoints with Orbax: model variables with metadata (conversions, exports) and training runs.

A *variables checkpoint* is a directory holding ``variables/`` (an Orbax PyTree checkpoint of the Flax
variables ``{'params': ..., 'batch_stats': ...}``) and ``metadata.json`` (at least ``model`` and
``num_classes`` so the model can be rebuilt, plus provenance such as ``source``, ``family``, ``sha256``).
``load_variables`` also accepts a training work directory and restores the model variables of its latest
(or best) step. Restores are onto host memory or any mesh via ``shardings``.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

VARIABLES_DIR = "variables"
METADATA_FILE = "metadata.json"
TRAIN_CHECKPOINTS_DIR = "checkpoints"


def save_variables(directory: str | Path, variables: dict, metadata: dict) -> Path:
    """Write ``variables`` and ``metadata`` (JSON-serialisable, must name ``model`` and ``num_classes``).

    The Orbax write is atomic (temporary directory, then rename); ``metadata.json`` is written last, so a
    directory without it is incomplete and ``load_variables`` refuses it.
    """
    missing = {"model", "num_classes"} - set(metadata)
    if missing:
        raise ValueError(f"checkpoint metadata must include {sorted(missing)}")
    directory = Path(directory).resolve()
    if (directory / VARIABLES_DIR).exists():
        raise FileExistsError(f"{directory / VARIABLES_DIR} already exists; choose a new output directory")
    directory.mkdir(parents=True, exist_ok=True)
    variables = jax.tree_util.tree_map(np.asarray, dict(variables))
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


def raise_on_mismatch(source, saved, expected) -> None:
    """``ValueError`` listing the mismatched parameters (at most 20 lines) if ``saved`` and ``expected`` differ."""
    lines = variable_mismatches(saved, expected)
    if lines:
        shown = "\n  ".join(lines[:20]) + (f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else "")
        raise ValueError(
            f"checkpoint {source} was saved from a different model ({len(lines)} mismatched parameters):\n  {shown}"
        )


def _json_default(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def read_metadata(directory: str | Path) -> dict:
    """The ``metadata.json`` of a variables checkpoint."""
    path = Path(directory) / METADATA_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{directory} is not a complete jaxseg variables checkpoint: {METADATA_FILE} is missing "
            f"(expected {VARIABLES_DIR}/ and {METADATA_FILE})"
        )
    return json.loads(path.read_text())


def load_variables(directory: str | Path, target=None, shardings=None) -> tuple[dict, dict]:
    """Restore ``(variables, metadata)`` from a variables checkpoint or a training work directory.

    Args:
      directory: a directory written by ``save_variables`` (e.g. by ``jaxseg convert``) or a training workdir
        (``checkpoints/`` inside it; the latest step is used).
      target: optional pytree of arrays/``jax.ShapeDtypeStruct`` giving the expected structure; restoring
        then fails with a clear error if the checkpoint does not match.
      shardings: optional pytree of ``jax.sharding.Sharding`` matching ``target`` to restore onto a mesh.
    """
    directory = Path(directory).resolve()
    if not directory.exists():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if (directory / TRAIN_CHECKPOINTS_DIR).exists() and not (directory / VARIABLES_DIR).exists():
        from jaxseg.train.checkpoints import load_training_variables

        return load_training_variables(directory, target=target, shardings=shardings)
    metadata = read_metadata(directory)
    with ocp.StandardCheckpointer() as checkpointer:
        if target is None:
            variables = checkpointer.restore(directory / VARIABLES_DIR)
        else:
            abstract = jax.tree_util.tree_map(
                lambda leaf, sharding=None: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
                target,
                *(() if shardings is None else (shardings,)),
            )
            saved = checkpointer.metadata(directory / VARIABLES_DIR)
            raise_on_mismatch(directory, getattr(saved, "item_metadata", saved), abstract)
            variables = checkpointer.restore(directory / VARIABLES_DIR, abstract)
    return dict(variables), metadata
