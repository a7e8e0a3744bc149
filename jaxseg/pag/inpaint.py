"""Inpainting with a (robust) model's gradients: fill a masked region so that the model's prediction of the
whole image matches a label map, keeping the rest of the image anchored (see
docs/algorithms.md#perceptually-aligned-gradients).

The region is first set to the channel mean of the image's *visible* (unmasked) pixels (Santurkar et al. use
the image's channel mean; the visible mean leaks nothing of the hidden content), then projected descent runs
from that corrupted image x_c, keeping each image's lowest-objective iterate. Two modes:

- ``"penalty"`` (Santurkar et al. 2019): objective = mean per-pixel CE toward the labels
  + λ · mean(((x − x_c)(1 − M))²) (mean over all H·W·C values, λ = ``anchor_weight`` = 10); steps and the
  eps-ball around x_c cover the whole image, so visible pixels may drift a little.
- ``"hard"``: objective = the CE alone; steps and projection are restricted to the mask
  (``threat.step``/``threat.project`` with the mask), so visible pixels equal the input exactly.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxseg.attacks import make_forward
from jaxseg.metrics import pixel_accuracy
from jaxseg.pag import common
from jaxseg.validation import DEFAULT_IGNORE_INDEX

MODES = ("penalty", "hard")
INPAINTING_EPS = 21.6  # Santurkar et al.: L2 radius at 224x224, step 0.1, 720 iterations
INPAINTING_STEPS_PER_RADIUS = 216.0


class InpaintResult(NamedTuple):
    """images: (B, H, W, 3) float32 in [0, 1], the inpainted images. corrupted: (B, H, W, 3) the start x_c.
    prediction: (B, H, W) int32 model prediction on ``images``. label_accuracy: (B,) fraction of labelled pixels
    predicted as the label map. loss: (B,) the objective of ``images``. loss_history: (T, B)."""

    images: jax.Array
    corrupted: jax.Array
    prediction: jax.Array
    label_accuracy: jax.Array
    loss: jax.Array
    loss_history: jax.Array


def corrupt(images: jax.Array, mask: jax.Array) -> jax.Array:
    """images (B, H, W, C) with the region ``mask`` (B, H, W) bool set to the per-image channel mean of the
    visible pixels; visible pixels are returned bit-for-bit."""
    visible = (~mask)[..., None].astype(images.dtype)
    count = jnp.maximum(jnp.sum(visible, axis=(1, 2), keepdims=True), 1.0)
    fill = jnp.sum(images * visible, axis=(1, 2), keepdims=True) / count
    return jnp.where(mask[..., None], fill, images)


def _inpaint_core(variables, images, mask, labels, eps, step_size, anchor_weight, *, logits_fn, iterations: int,
                  norm: str, mode: str, ignore_index):
    forward = make_forward(logits_fn, variables, None)
    corrupted = corrupt(images, mask)
    visible = (~mask)[..., None].astype(jnp.float32)

    def objective(x):
        value = common.image_cross_entropy(forward(x), labels, ignore_index)
        if mode == "penalty":
            value = value + anchor_weight * jnp.mean(jnp.square((x - corrupted) * visible), axis=(1, 2, 3))
        return value

    region = mask if mode == "hard" else None
    result = common.descend(objective, corrupted, corrupted, eps, step_size, region, iterations=iterations, norm=norm)
    prediction = jnp.argmax(forward(result.images), -1).astype(jnp.int32)
    accuracy = pixel_accuracy(prediction, labels, None, ignore_index)
    return InpaintResult(result.images, corrupted, prediction, accuracy, result.objective, result.history)


_inpaint_jit = jax.jit(_inpaint_core, static_argnames=("logits_fn", "iterations", "norm", "mode", "ignore_index"))


def inpaint(logits_fn: Callable, images, mask, labels, *, mode: str = "penalty", anchor_weight: float = 10.0,
            eps=None, step_size=None, iterations: int = 720, norm: str = "l2", variables=None,
            ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> InpaintResult:
    """Fill ``mask`` in ``images`` so the model segments the result as ``labels`` (see module docstring).

    Args:
      logits_fn: ``images -> logits`` (B, H, W, K), or ``(variables, images) -> logits`` with ``variables``.
      images: (B, H, W, 3) float in [0, 1] (what is under the mask is never read).
      mask: (B, H, W) or (B, H, W, 1) bool/0-1, the region to fill; non-empty in every image.
      labels: (B, H, W) int label map the prediction should match, in [0, K) or ``ignore_index``.
      mode: "penalty" or "hard". anchor_weight: λ of the penalty mode (Santurkar: 10).
      eps: radius around the corrupted image on the [0, 1] scale. Default (L2 only): Santurkar's 21.6 at
        224x224 rescaled to H x W. step_size: default eps / 216 (Santurkar: 0.1 at eps 21.6).
      iterations: T (Santurkar: 720). norm: "l2" or "linf".
    Returns: ``InpaintResult``; in hard mode ``images`` equals the input outside the mask exactly.
    """
    if mode not in MODES:
        raise ValueError(f"unknown inpainting mode {mode!r}; choose one of {MODES}")
    images = jnp.asarray(images)
    common.check_images(images)
    mask = common.check_mask(mask, images.shape[:3])
    labels = jnp.asarray(labels)
    eps, step_size = common.descent_settings(norm, iterations, eps, step_size, images.shape[1:3],
                                             INPAINTING_EPS, INPAINTING_STEPS_PER_RADIUS)
    if not anchor_weight >= 0:
        raise ValueError(f"anchor_weight must be >= 0; got {anchor_weight}")
    num_classes = common.num_classes_of(logits_fn, variables, images)
    common.check_label_map(labels, images.shape[:3], num_classes, ignore_index)
    return _inpaint_jit(variables, images.astype(jnp.float32), mask, labels, eps, step_size, anchor_weight,
                        logits_fn=logits_fn, iterations=iterations, norm=norm, mode=mode, ignore_index=ignore_index)


def region_error(result_images, true_images, mask) -> tuple[jax.Array, jax.Array]:
    """(mse, psnr) per image over the masked region: mean squared error of (B, H, W, C) images in [0, 1]
    against the true images over the mask's pixels and channels, and PSNR = 10 log10(1 / mse) in dB."""
    result_images, true_images = jnp.asarray(result_images, jnp.float32), jnp.asarray(true_images, jnp.float32)
    if result_images.shape != true_images.shape:
        raise ValueError(f"images differ in shape: {result_images.shape} vs {true_images.shape}")
    mask = common.check_mask(mask, result_images.shape[:3])
    weights = mask[..., None].astype(jnp.float32)
    count = jnp.sum(weights, axis=(1, 2, 3)) * result_images.shape[-1]
    mse = jnp.sum(jnp.square(result_images - true_images) * weights, axis=(1, 2, 3)) / count
    return mse, 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-12))
