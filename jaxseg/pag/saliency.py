"""Gradient attributions of a segmentation model: plain gradient, gradient x input, SmoothGrad and integrated
gradients of a class's or a region's score.

The score f(x) is one number per image, built from the logits u = model(x) (B, H, W, K), a per-pixel class map
c (B, H, W) (one class everywhere, or a label map) and a pixel region R (B, H, W) (default: every pixel):
- ``"logit"``: f = Σ_{p ∈ R} u_p[c_p]  (evidence for the class in the region; larger = more class),
- ``"ce"``: f = Σ_{p ∈ R} CE(u_p, c_p)  (the loss of the region; larger = less class).
Attributions are (B, H, W, 3) float32 in the units of f per unit of image intensity ([0, 1] scale).

Methods: ``"gradient"`` ∇f(x); ``"gradient-input"`` x ⊙ ∇f(x); ``"smoothgrad"`` the mean of ∇f(x + n),
n ~ N(0, σ²) with σ = ``noise_scale`` (Smilkov et al. 2017: 10–20% of the [0, 1] range), ``samples`` draws;
``"integrated-gradients"`` (x − x₀) ⊙ ∫₀¹ ∇f(x₀ + α(x − x₀)) dα by the trapezoid rule on ``steps`` intervals,
baseline x₀ default black; its attributions sum to ≈ f(x) − f(x₀) (completeness).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.attacks import make_forward, pixel_cross_entropy
from jaxseg.pag import common
from jaxseg.validation import DEFAULT_IGNORE_INDEX, is_traced, valid_mask

METHODS = ("gradient", "gradient-input", "smoothgrad", "integrated-gradients")
OBJECTIVES = ("logit", "ce")


class Attribution(NamedTuple):
    """values: (B, H, W, 3) float32 attributions. score: (B,) f(x). baseline_score: (B,) f(x₀) for integrated
    gradients (NaN for the other methods). prediction: (B, H, W) int32 the model's prediction on x."""

    values: jax.Array
    score: jax.Array
    baseline_score: jax.Array
    prediction: jax.Array


def region_score(logits: jax.Array, classes: jax.Array, region: jax.Array, objective: str) -> jax.Array:
    """(B,) score f of logits (B, H, W, K) for class map ``classes`` (B, H, W) int in [0, K) over ``region``
    (B, H, W) float/bool weights; see the module docstring."""
    logits = logits.astype(jnp.float32)
    if objective == "logit":
        values = jnp.take_along_axis(logits, classes[..., None], axis=-1)[..., 0]
    else:
        values = pixel_cross_entropy(logits, classes, None)
    return jnp.sum(values * region.astype(jnp.float32), axis=(1, 2))


def _attribute_core(variables, images, classes, region, key, baseline, *, logits_fn, method: str, objective: str,
                    samples: int, steps: int, noise_scale: float):
    forward = make_forward(logits_fn, variables, None)

    def score(x):
        return region_score(forward(x), classes, region, objective)

    def gradient(x):
        return jax.grad(lambda y: jnp.sum(score(y)))(x)

    logits = forward(images)
    image_score = region_score(logits, classes, region, objective)
    prediction = jnp.argmax(logits, -1).astype(jnp.int32)
    baseline_score = jnp.full(images.shape[:1], jnp.nan, jnp.float32)
    if method in ("gradient", "gradient-input"):
        values = gradient(images)
        values = values * images if method == "gradient-input" else values
    elif method == "smoothgrad":
        keys = jax.random.split(key, samples)
        values = jnp.mean(jax.lax.map(lambda k: gradient(images + noise_scale * jax.random.normal(k, images.shape)), keys), 0)
    else:
        alphas = jnp.linspace(0.0, 1.0, steps + 1)
        weights = jnp.full((steps + 1,), 1.0 / steps).at[0].mul(0.5).at[-1].mul(0.5)  # trapezoid rule on [0, 1]
        path = jax.lax.map(lambda a: gradient(baseline + a * (images - baseline)), alphas)
        values = (images - baseline) * jnp.tensordot(weights, path, axes=1)
        baseline_score = score(baseline)
    return Attribution(values, image_score, baseline_score, prediction)


_attribute_jit = jax.jit(_attribute_core,
                         static_argnames=("logits_fn", "method", "objective", "samples", "steps", "noise_scale"))


def class_map(images_shape, *, class_index=None, labels=None) -> jax.Array:
    """The per-pixel class map (B, H, W) int32: ``class_index`` (int or (B,)) everywhere, or ``labels``."""
    batch, height, width = images_shape[:3]
    if (class_index is None) == (labels is None):
        raise ValueError("give exactly one of class_index (a class per image) or labels (a label map)")
    if labels is not None:
        return jnp.asarray(labels).astype(jnp.int32)
    index = jnp.asarray(class_index, jnp.int32)
    if index.ndim > 1 or (index.ndim == 1 and index.shape[0] != batch):
        raise ValueError(f"class_index must be an int or have shape (B,) = ({batch},); got shape {index.shape}")
    return jnp.broadcast_to(index.reshape((-1, 1, 1)) if index.ndim else index, (batch, height, width))


def attribute(logits_fn: Callable, images, *, method: str = "gradient", objective: str = "logit", class_index=None,
              labels=None, region=None, key: jax.Array | None = None, samples: int = 16, noise_scale: float = 0.15,
              steps: int = 32, baseline=None, variables=None,
              ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> Attribution:
    """Attributions of the score of a class (``class_index``) or label map (``labels``) over ``region``.

    Args:
      logits_fn: ``images -> logits`` (B, H, W, K), or ``(variables, images) -> logits`` with ``variables``.
      images: (B, H, W, 3) float in [0, 1].
      method: one of ``METHODS``. objective: "logit" or "ce" (module docstring).
      class_index: int or (B,) class in [0, K), or labels: (B, H, W) int label map (ignored pixels drop out of
        the region). region: optional (B, H, W) bool mask of the pixels whose score counts (non-empty).
      key: PRNG key (SmoothGrad only). samples, noise_scale: SmoothGrad's draws and σ.
      steps: integrated-gradients intervals. baseline: (B, H, W, 3) or broadcastable, default zeros.
    Returns: ``Attribution``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown saliency method {method!r}; choose one of {METHODS}")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown saliency objective {objective!r}; choose one of {OBJECTIVES}")
    images = jnp.asarray(images)
    common.check_images(images)
    shape = images.shape[:3]
    num_classes = common.num_classes_of(logits_fn, variables, images)
    if labels is not None:
        common.check_label_map(labels, shape, num_classes, ignore_index)
    classes = class_map(images.shape, class_index=class_index, labels=labels)
    if class_index is not None and not is_traced(classes):
        values = np.asarray(class_index)
        if np.any(values < 0) or np.any(values >= num_classes):
            raise ValueError(f"class_index must lie in [0, {num_classes}); got {values.tolist()}")
    weights = jnp.ones(shape, bool) if region is None else common.check_mask(region, shape, name="region")
    if labels is not None and ignore_index is not None:
        weights = weights & valid_mask(classes, None, ignore_index)
        classes = jnp.where(classes == ignore_index, 0, classes)
    if method == "smoothgrad":
        if key is None:
            raise ValueError("method 'smoothgrad' needs a PRNG key")
        if not isinstance(samples, int) or samples < 1 or not noise_scale > 0:
            raise ValueError(f"smoothgrad needs samples >= 1 and noise_scale > 0; got {samples}, {noise_scale}")
    if method == "integrated-gradients" and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    baseline = jnp.zeros_like(images, jnp.float32) if baseline is None else jnp.broadcast_to(
        jnp.asarray(baseline, jnp.float32), images.shape)
    key = jax.random.key(0) if key is None else key
    return _attribute_jit(variables, images.astype(jnp.float32), classes, weights, key, baseline,
                          logits_fn=logits_fn, method=method, objective=objective, samples=samples, steps=steps,
                          noise_scale=float(noise_scale))


def saliency_map(attributions) -> np.ndarray:
    """(B, H, W) float32 saliency in [0, 1]: |attribution| averaged over channels, divided by each image's max
    (an all-zero map stays zero). Host NumPy."""
    values = np.abs(np.asarray(attributions, np.float32))
    if values.ndim != 4:
        raise ValueError(f"attributions must have shape (B, H, W, C); got {values.shape}")
    saliency = values.mean(axis=-1)
    peak = saliency.reshape(saliency.shape[0], -1).max(axis=1)
    return saliency / np.where(peak > 0, peak, 1.0)[:, None, None]
