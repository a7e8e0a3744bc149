"""Pieces shared by the perceptually-aligned-gradient tools: input checks, the default radii, the
projected-descent loop that generation and inpainting run, and their per-image objective.

Calling convention (as for the attacks): ``logits_fn`` maps images (B, H, W, 3) in [0, 1] to logits
(B, H, W, K); pass ``variables=...`` together with a pure ``(variables, images) -> logits`` function (e.g.
``jaxseg.attacks.ModelLogits(model)``) so the compiled loop is reused across calls. ``logits_fn`` is a static
argument: pass the same object every time to avoid recompiling.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import attacks
from jaxseg.attacks import keep_best_loop, make_forward, threat
from jaxseg.validation import check_iterations, is_traced, validate_images, validate_labels

REFERENCE_SIDE = 224  # ImageNet side length the published L2 radii (Santurkar et al. 2019) refer to


class DescentResult(NamedTuple):
    """Outcome of ``descend``: the lowest-objective iterate per image.

    images: (B, H, W, C) float32 in [0, 1]. objective: (B,) float32, its objective value.
    history: (T, B) float32 objective of the iterates x_0 .. x_{T-1}.
    """

    images: jax.Array
    objective: jax.Array
    history: jax.Array


def num_classes_of(logits_fn: Callable, variables, images) -> int:
    """K of the model's output for ``images``, from an abstract evaluation (no computation)."""
    shape = jax.eval_shape(lambda v, x: make_forward(logits_fn, v, None)(x), variables,
                           jax.ShapeDtypeStruct(images.shape, jnp.float32)).shape
    if len(shape) != 4 or tuple(shape[:3]) != tuple(images.shape[:3]):
        raise ValueError(f"logits_fn must map images {tuple(images.shape)} to logits (B, H, W, K); got {shape}")
    return int(shape[-1])


def scaled_radius(reference_eps: float, height: int, width: int) -> float:
    """An L2 radius published for 224x224 images, rescaled to (height, width) so the per-pixel RMS change is
    the same: eps * sqrt(H W) / 224."""
    return float(reference_eps) * float(np.sqrt(height * width)) / REFERENCE_SIDE


def check_images(images, name: str = "images") -> None:
    """``ValueError`` unless float (B, H, W, 3) in [0, 1] (values checked when concrete)."""
    try:
        validate_images(images, check_range=not is_traced(images))
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def check_label_map(labels, shape: tuple[int, ...], num_classes: int, ignore_index, name: str = "labels") -> None:
    """``ValueError`` unless ``labels`` is an int map of ``shape`` (B, H, W) with values in [0, K) or ignore."""
    if getattr(labels, "ndim", None) != 3 or tuple(labels.shape) != tuple(shape):
        raise ValueError(f"{name} must be an integer label map of shape (B, H, W) = {tuple(shape)}; "
                         f"got {tuple(getattr(labels, 'shape', ()))}")
    if is_traced(labels):
        return
    try:
        validate_labels(labels, num_classes, ignore_index)
    except ValueError as error:
        raise ValueError(f"{name}: {error} (the model has K = {num_classes} classes)") from None


def check_mask(mask, shape: tuple[int, ...], *, allow_empty: bool = False, name: str = "mask") -> jax.Array:
    """(B, H, W) or (B, H, W, 1) bool/0-1 mask matching ``shape`` = (B, H, W) → bool (B, H, W).

    Raises ``ValueError`` for another size or (unless ``allow_empty``) an image whose mask selects no pixel.
    """
    mask = jnp.asarray(mask)
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have the images' size (B, H, W) = {tuple(shape)} (or with a trailing 1); "
                         f"got {tuple(jnp.shape(mask))}")
    mask = mask.astype(bool)
    if not allow_empty and not is_traced(mask):
        empty = np.flatnonzero(~np.asarray(mask).reshape(mask.shape[0], -1).any(axis=1))
        if empty.size:
            raise ValueError(f"{name} selects no pixel in image(s) {empty[:10].tolist()}; each image needs a non-empty region")
    return mask


def descent_settings(norm: str, iterations: int, eps, step_size, size: tuple[int, int], reference_eps: float,
                     steps_per_radius: float):
    """The checked (eps, step size) of a descent on (H, W) = ``size`` images: ``eps`` None (L2 only) is
    ``reference_eps`` published for 224x224, rescaled (``scaled_radius``); ``step_size`` None is
    eps / ``steps_per_radius``. ``ValueError`` for a bad norm, iteration count, radius or step size."""
    if eps is None:
        if norm != "l2":
            raise ValueError("eps has a default only for norm='l2'; give eps for norm='linf'")
        eps = scaled_radius(reference_eps, size[0], size[1])
    step_size = eps / steps_per_radius if step_size is None else step_size
    check_loop_options(norm, iterations, eps, step_size)
    return eps, step_size


def check_loop_options(norm: str, iterations: int, eps, step_size) -> None:
    """``ValueError`` for an unknown norm, a non-positive iteration count, radius or step size."""
    threat.check_norm(norm)
    check_iterations(iterations)
    for name, value in (("eps", eps), ("step_size", step_size)):
        if not is_traced(value) and not (np.all(np.isfinite(value)) and np.all(np.asarray(value) > 0)):
            raise ValueError(f"{name} must be finite and > 0 (on the [0, 1] image scale); got {value}")


def descend(objective: Callable[[jax.Array], jax.Array], start: jax.Array, center: jax.Array, eps, step_size,
            mask, *, iterations: int, norm: str) -> DescentResult:
    """Projected descent on a per-image objective, keeping each image's lowest-objective iterate.

    x_{t+1} = P(x_t - α sign(g)) (Linf) or P(x_t - α g / ‖g‖_2) (L2), g = ∇ Σ_b objective(x)_b, P = projection
    onto the eps-ball around ``center`` ∩ [0, 1] (and onto ``mask``'s support: pixels outside it keep
    ``center``'s values exactly). The attacks' loop (``jaxseg.attacks.keep_best_loop``) with a descent step;
    call it inside ``jit``.

    objective: (B, H, W, C) → (B,). start, center: (B, H, W, C) in [0, 1]. eps, step_size: scalar or (B,).
    mask: None or (B, H, W) bool.
    """
    def summed(x):
        values = objective(x)
        return jnp.sum(values), values

    gradient = jax.value_and_grad(summed, has_aux=True)

    def evaluate(x, t):
        (_, value), grad = gradient(x)
        return value, grad

    def update(x, evaluation, state):
        return threat.project(threat.step(x, -evaluation[1], step_size, norm, mask), center, eps, norm, mask), state

    best_x, best_value, _, (history,), _ = keep_best_loop(
        evaluate, start, update, (), iterations=iterations, choose=lambda ev, best: (ev[0] < best, ev[0]),
        initial_value=jnp.full((start.shape[0],), jnp.inf, jnp.float32), recorded=lambda ev: (ev[0],),
        num_recorded=1)
    return DescentResult(best_x, best_value, history)


def image_cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index) -> jax.Array:
    """(B,) the objective of generation and inpainting: ``attacks.pixel_cross_entropy`` of logits (B, H, W, K)
    toward labels (B, H, W) averaged over all H*W pixels (ignored and out-of-range labels count 0 but stay in
    the denominator, as in docs/algorithms.md#losses)."""
    return jnp.mean(attacks.pixel_cross_entropy(logits, labels, ignore_index), axis=(1, 2))

