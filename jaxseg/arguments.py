"""Checks of the values a user types or points at: radii, step sizes, counts, dtypes, output paths.

Shared by the command line and the library's file-level entry points (``jaxseg.evaluation_inputs``,
``jaxseg.pag.runs``), so that both refuse the same inputs with the same message before any data is read or any
model is built. Each check names the option it was given (``option``, e.g. ``"--eps"``) and raises
``ValueError``, or an ``OSError`` subclass for paths. Nothing here imports JAX at module level.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path


def parse_radii(text: str, option: str = "--eps") -> list[float]:
    """Comma-separated radii on the [0, 1] image scale, such as ``"0,4/255,8/255"`` → [0.0, 0.0157, 0.0314]."""
    from jaxseg.config import parse_value

    radii = [parse_value(part) for part in text.split(",") if part.strip()]
    if not radii or not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in radii):
        raise ValueError(f"{option} must be comma-separated numbers such as 4/255,8/255; got {text!r}")
    if not all(math.isfinite(r) and r >= 0 for r in radii):
        raise ValueError(f"{option} must be finite numbers >= 0 on the [0, 1] image scale, such as 4/255; got {text!r}")
    return [float(r) for r in radii]


def parse_step_size(text: str | None, option: str = "--step-size") -> float | None:
    """One step size on the [0, 1] image scale, such as ``"2/255"`` or ``"0.01"``; None stays None."""
    if text is None:
        return None
    from jaxseg.config import parse_value

    value = parse_value(text.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{option} {text!r}: step_size must be finite and > 0, one number on the [0, 1] image scale "
                         "such as 2/255")
    return float(value)


def check_at_least(values: dict[str, int | None], low: int = 1) -> None:
    """``ValueError`` for the first ``{option: value}`` that is given (not None) and below ``low``."""
    for option, value in values.items():
        if value is not None and value < low:
            raise ValueError(f"{option} must be >= {low}; got {value}")


def check_positive(values: dict[str, float | None], *, allow_zero: bool = False, scale: str = "") -> None:
    """``ValueError`` for the first given ``{option: value}`` that is not finite and > 0 (>= 0 with ``allow_zero``);
    ``scale`` (e.g. ``" on the [0, 1] image scale"``) follows the bound in the message."""
    for option, value in values.items():
        if value is not None and not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{option} must be finite and {bound}{scale}; got {value}")


def parse_compute_dtype(value: str | None, option: str = "--compute-dtype"):
    """A floating NumPy dtype from its name (``"bfloat16"``); None stays None."""
    if value is None:
        return None
    import jax.numpy as jnp

    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{option} must be a floating dtype: float32, bfloat16 or float16; got {value!r}")
    return dtype


def check_output_dir(path: str | Path, option: str = "--out") -> None:
    """Fail now, before any work, if directory ``path`` cannot be created or written (a file in the way, a
    read-only or foreign directory). Creates nothing."""
    _check_writable(path, option, directory=True)


def check_output_file(path: str | Path, option: str) -> None:
    """Fail now if the file ``path`` cannot be written (its directory is blocked or read-only, or it is a directory)."""
    _check_writable(path, option, directory=False)


def check_new_dir(path: str | Path, option: str = "--out") -> None:
    """``ValueError`` unless ``path`` does not exist or is an empty directory; then ``check_output_dir``."""
    target = Path(path)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{option} {target} must be a new or empty directory")
    check_output_dir(path, option)


def _check_writable(path: str | Path, option: str, *, directory: bool) -> None:
    target = Path(path).expanduser().absolute()
    if target.exists():
        if directory and not target.is_dir():
            raise NotADirectoryError(f"{option} {path} is a file, not a directory")
        if not directory and target.is_dir():
            raise IsADirectoryError(f"{option} {path} is a directory, not a file")
    ancestor = target if directory and target.exists() else target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"{option} {path} cannot be created: {ancestor} is a file, not a directory")
    try:  # a real probe: permissions, read-only file systems, ACLs
        os.rmdir(tempfile.mkdtemp(prefix=".jaxseg-write-test-", dir=ancestor))
    except OSError as error:
        raise PermissionError(f"{option} {path} cannot be written: {ancestor} is not writable "
                              f"({error.strerror or error})") from error
