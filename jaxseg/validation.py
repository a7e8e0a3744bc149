"""The image and label contracts shared by every public entry point (below; docs/architecture.md), and the
checks of them.

Images are float (B, H, W, 3) in [0, 1]; labels are int (B, H, W) in [0, K) or ``ignore_index``
(``DEFAULT_IGNORE_INDEX`` = 255); ``valid_mask`` marks the pixels that carry a class. Shape and dtype checks
also work on traced arrays; value checks run only on concrete arrays (``is_traced``), so call these at
boundaries (CLI, public functions), not inside ``jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_IGNORE_INDEX = 255


def valid_mask(labels, num_classes: int | None = None, ignore_index: int | None = DEFAULT_IGNORE_INDEX):
    """Bool mask of the pixels that carry a class: ``labels != ignore_index`` and, given ``num_classes`` K,
    ``0 <= labels < K``. labels: int (...), NumPy or JAX (traced too) → bool (...) of the same kind.

    ``ignore_index=None`` ignores no value; ``num_classes=None`` checks no range.
    """
    checks = []
    if num_classes is not None:
        checks.append((labels >= 0) & (labels < num_classes))
    if ignore_index is not None:
        checks.append(labels != ignore_index)
    if not checks:
        return labels == labels  # every pixel: all True, the kind and shape of ``labels``
    return checks[0] & checks[1] if len(checks) == 2 else checks[0]


def check_iterations(iterations, name: str = "iterations") -> None:
    """``ValueError`` unless ``iterations`` is a positive Python int (loop lengths are static)."""
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"{name} must be a positive integer; got {iterations!r}")


def is_traced(*trees) -> bool:
    """True if any array leaf of ``trees`` is a JAX tracer (inside ``jit``/``grad``/``vmap``): its values are
    unknown, so value checks must be skipped."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


def validate_images(images, *, check_range: bool = True) -> None:
    """Raise ``ValueError`` unless ``images`` is a floating (B, H, W, 3) array of finite values in [0, 1]."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (B, H, W, 3) (NHWC, RGB); got shape {tuple(images.shape)}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(
            f"images must be floating point in [0, 1]; got dtype {images.dtype} (divide uint8 images by 255)"
        )
    if 0 in images.shape:
        raise ValueError(f"a batch needs at least one image of at least one pixel; got shape {tuple(images.shape)}")
    if check_range and not is_traced(images):
        finite = jnp.isfinite(images)
        if not bool(jnp.all(finite)):
            count = int(images.size - jnp.sum(finite))
            raise ValueError(f"image values must be finite numbers in [0, 1]; found {count} NaN or infinite values")
        low, high = float(jnp.min(images)), float(jnp.max(images))
        if low < 0.0 or high > 1.0:
            raise ValueError(f"image values must lie in [0, 1]; found range [{low:.4g}, {high:.4g}]")


def validate_labels(labels, num_classes: int, ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> None:
    """Raise ``ValueError`` unless ``labels`` is an integer (B, H, W) map with values in [0, K) or the ignore index.

    Checks values only for concrete (non-traced) arrays; call at public boundaries, not inside jit.
    """
    labels = labels if is_traced(labels) else np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must have shape (B, H, W); got shape {tuple(labels.shape)}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integers; got dtype {labels.dtype}")
    if isinstance(labels, np.ndarray):
        valid = valid_mask(labels, num_classes, None)
        if ignore_index is not None:
            valid |= labels == ignore_index
        if not valid.all():
            bad = np.unique(labels[~valid])[:10].tolist()
            raise ValueError(
                f"labels must lie in [0, {num_classes}) or equal ignore_index={ignore_index}; "
                f"found {bad}"
            )
