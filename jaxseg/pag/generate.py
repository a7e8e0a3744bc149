"""Image generation from a target label map with a (robust) model's gradients (see
docs/algorithms.md#perceptually-aligned-gradients).

Santurkar et al. (2019) generate class images by *minimising* the cross-entropy toward a target class with
targeted L2 PGD from a seed drawn from a per-class Gaussian, keeping the lowest-loss iterate. For segmentation
the target is a label map (B, H, W) and the loss the mean per-pixel CE toward it (Sandoval-Segura et al. 2022).

Seeds (``make_seed``):
- ``"class-gaussian"``: the segmentation analogue of Santurkar's per-class Gaussian over 4x-downsampled class
  images. ``fit_class_gaussians`` cuts training images into non-overlapping d x d blocks (d = ``downsample``,
  default 4, so the block grid is the 4x-downsampled image) and fits, for every class k, a full-covariance
  Gaussian (+1e-4 I) over the flattened RGB blocks (D = 3 d^2) that lie entirely inside class k. Sampling
  draws, for every class, one block per grid cell, and each pixel takes the value of the sample of its target
  class, so a seed follows the target map exactly at pixel resolution while carrying each class's colours and
  d x d texture statistics.
- ``"mean"``: every pixel set to the dataset's mean colour.
- ``"noise"``: uniform noise in [0, 1].
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.pag import common
from jaxseg.attacks import make_forward
from jaxseg.metrics import pixel_accuracy
from jaxseg.validation import DEFAULT_IGNORE_INDEX, valid_mask

SEED_KINDS = ("class-gaussian", "mean", "noise")
GENERATION_EPS = 40.0  # Santurkar et al.: L2 radius at 224x224, 60 steps of size 1
GENERATION_STEPS_PER_RADIUS = 40.0


class ClassGaussians(NamedTuple):
    """Per-class Gaussians over d x d RGB blocks (see module docstring).

    mean: (K, D) float32, D = 3 d^2 (block flattened in (row, column, channel) order).
    covariance: (K, D, D) float32 (regularised; identity for classes without data).
    counts: (K,) int64 number of pure blocks each class was fitted on (< 2: no Gaussian for that class).
    block: d, the block side in pixels.
    """

    mean: np.ndarray
    covariance: np.ndarray
    counts: np.ndarray
    block: int


class GenerationResult(NamedTuple):
    """images: (B, H, W, 3) float32 in [0, 1], the lowest-loss iterate per image. prediction: (B, H, W) int32,
    the model's prediction on them. target_accuracy: (B,) float32 fraction of target-labelled pixels predicted
    as the target. loss: (B,) mean per-pixel CE toward the target. loss_history: (T, B) loss of each iterate."""

    images: jax.Array
    prediction: jax.Array
    target_accuracy: jax.Array
    loss: jax.Array
    loss_history: jax.Array


def fit_class_gaussians(images, labels, num_classes: int, downsample: int = 4, *, regularization: float = 1e-4,
                        ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> ClassGaussians:
    """Fit a full-covariance Gaussian per class over d x d blocks lying entirely in that class (host NumPy).

    images: (N, H, W, 3) float in [0, 1]; labels: (N, H, W) int. Rows/columns past a multiple of d are dropped.
    """
    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    common.check_images(images)
    common.check_label_map(labels, images.shape[:3], num_classes, ignore_index)
    if not isinstance(downsample, int) or downsample < 1 or downsample > min(images.shape[1:3]):
        raise ValueError(f"downsample must be an integer in [1, {min(images.shape[1:3])}]; got {downsample!r}")
    d = downsample
    n, height, width = images.shape[0], images.shape[1] // d * d, images.shape[2] // d * d
    blocks = images[:, :height, :width].reshape(n, height // d, d, width // d, d, 3).transpose(0, 1, 3, 2, 4, 5)
    blocks = blocks.reshape(-1, d * d * 3).astype(np.float64)
    block_labels = labels[:, :height, :width].reshape(n, height // d, d, width // d, d).transpose(0, 1, 3, 2, 4)
    block_labels = block_labels.reshape(-1, d * d)
    pure = np.all(block_labels == block_labels[:, :1], axis=1)
    dim = d * d * 3
    mean = np.zeros((num_classes, dim), np.float32)
    covariance = np.tile(np.eye(dim, dtype=np.float32), (num_classes, 1, 1))
    counts = np.zeros(num_classes, np.int64)
    for k in range(num_classes):
        samples = blocks[pure & (block_labels[:, 0] == k)]
        counts[k] = len(samples)
        if len(samples) >= 2:
            mean[k] = samples.mean(axis=0)
            covariance[k] = np.cov(samples, rowvar=False) + regularization * np.eye(dim)
    return ClassGaussians(mean, covariance, counts, d)


def dataset_mean(images) -> np.ndarray:
    """(3,) float32 mean colour of images (N, H, W, 3)."""
    images = np.asarray(images, np.float32)
    common.check_images(images)
    return images.mean(axis=(0, 1, 2))


@functools.partial(jax.jit, static_argnames="d")
def _sample_blocks(key, mean, covariance, target, *, d: int):
    batch, height, width = target.shape
    num_classes, dim = mean.shape
    rows, cols = -(-height // d), -(-width // d)
    factor = jnp.linalg.cholesky(covariance)
    noise = jax.random.normal(key, (batch, num_classes, rows, cols, dim), jnp.float32)
    samples = mean[None, :, None, None, :] + jnp.einsum("kde,bkhwe->bkhwd", factor, noise)
    samples = samples.reshape(batch, num_classes, rows, cols, d, d, 3).transpose(0, 1, 2, 4, 3, 5, 6)
    samples = samples.reshape(batch, num_classes, rows * d, cols * d, 3)[:, :, :height, :width]
    return jnp.moveaxis(samples, 1, -2)  # (B, H, W, K, 3)


def sample_class_gaussian_seed(key: jax.Array, gaussians: ClassGaussians, target,
                               ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> jax.Array:
    """A seed (B, H, W, 3) float32 in [0, 1] for ``target`` (B, H, W) int: each pixel from its target class's
    Gaussian (see module docstring); ignored pixels get the average of the fitted classes' samples."""
    num_classes = gaussians.mean.shape[0]
    target = np.asarray(target)
    common.check_label_map(target, target.shape, num_classes, ignore_index, name="target")
    fitted = gaussians.counts >= 2
    valid = valid_mask(target, num_classes, None)  # in range; ignored pixels get the average below
    used = np.unique(target[valid])
    missing = [int(k) for k in used if not fitted[k]]
    if missing:
        raise ValueError(f"target uses class(es) {missing} that had fewer than 2 pure {gaussians.block}x"
                         f"{gaussians.block} blocks in the fitting data; fit on more images or a smaller downsample")
    per_class = _sample_blocks(key, jnp.asarray(gaussians.mean), jnp.asarray(gaussians.covariance), jnp.asarray(target),
                              d=gaussians.block)
    chosen = jnp.take_along_axis(per_class, jnp.asarray(np.where(valid, target, 0))[..., None, None], axis=3)[..., 0, :]
    weights = jnp.asarray(fitted, jnp.float32)[:, None]
    average = jnp.sum(per_class * weights, axis=3) / jnp.maximum(jnp.sum(weights), 1.0)
    return jnp.clip(jnp.where(jnp.asarray(valid)[..., None], chosen, average), 0.0, 1.0)


def make_seed(kind: str, key: jax.Array, target, *, gaussians: ClassGaussians | None = None, mean_colour=None,
              ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> jax.Array:
    """A starting image (B, H, W, 3) float32 in [0, 1] for ``target`` (B, H, W).

    kind: one of ``SEED_KINDS``. ``"class-gaussian"`` needs ``gaussians`` (``fit_class_gaussians``); ``"mean"``
    needs ``mean_colour`` (3,) (``dataset_mean``); ``"noise"`` is uniform in [0, 1].
    """
    if kind not in SEED_KINDS:
        raise ValueError(f"unknown seed kind {kind!r}; choose one of {SEED_KINDS}")
    shape = tuple(np.shape(target)) + (3,)
    if len(shape) != 4:
        raise ValueError(f"target must be a label map (B, H, W); got shape {np.shape(target)}")
    if kind == "class-gaussian":
        if gaussians is None:
            raise ValueError("seed 'class-gaussian' needs gaussians=fit_class_gaussians(images, labels, K)")
        return sample_class_gaussian_seed(key, gaussians, target, ignore_index)
    if kind == "mean":
        if mean_colour is None or np.shape(mean_colour) != (3,):
            raise ValueError(f"seed 'mean' needs mean_colour of shape (3,) (dataset_mean(images)); got {mean_colour!r}")
        colour = np.clip(np.asarray(mean_colour, np.float32), 0.0, 1.0)
        return jnp.broadcast_to(jnp.asarray(colour), shape)
    return jax.random.uniform(key, shape, jnp.float32)


def _generate_core(variables, target, seeds, eps, step_size, *, logits_fn, iterations: int, norm: str, ignore_index):
    forward = make_forward(logits_fn, variables, None)

    def objective(x):
        return common.image_cross_entropy(forward(x), target, ignore_index)

    result = common.descend(objective, seeds, seeds, eps, step_size, None, iterations=iterations, norm=norm)
    prediction = jnp.argmax(forward(result.images), -1).astype(jnp.int32)
    accuracy = pixel_accuracy(prediction, target, None, ignore_index)
    return GenerationResult(result.images, prediction, accuracy, result.objective, result.history)


_generate_jit = jax.jit(_generate_core, static_argnames=("logits_fn", "iterations", "norm", "ignore_index"))


def generate(logits_fn: Callable, target, seeds, *, eps=None, step_size=None, iterations: int = 60, norm: str = "l2",
             variables=None, ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> GenerationResult:
    """Optimise ``seeds`` so the model segments them as ``target``: projected descent on the mean per-pixel CE
    toward the target (targeted PGD, Santurkar et al. 2019), keeping each image's lowest-loss iterate.

    Args:
      logits_fn: ``images -> logits`` (B, H, W, K), or ``(variables, images) -> logits`` with ``variables``.
      target: (B, H, W) int label map in [0, K) (``ignore_index`` pixels are free).
      seeds: (B, H, W, 3) float in [0, 1], the start and centre of the ball (``make_seed``).
      eps: radius of the ball around the seed on the [0, 1] scale. Default (L2 only): Santurkar's 40 at
        224x224 rescaled to H x W (``common.scaled_radius``). step_size: default eps / 40 (L2: Santurkar's
        step 1 at eps 40). iterations: T gradient steps (Santurkar: 60). norm: "l2" or "linf".
    Returns: ``GenerationResult``. One compiled ``lax`` loop per (shape, static options).
    """
    seeds = jnp.asarray(seeds)
    common.check_images(seeds, "seeds")
    target = jnp.asarray(target)
    eps, step_size = common.descent_settings(norm, iterations, eps, step_size, seeds.shape[1:3],
                                             GENERATION_EPS, GENERATION_STEPS_PER_RADIUS)
    num_classes = common.num_classes_of(logits_fn, variables, seeds)
    common.check_label_map(target, seeds.shape[:3], num_classes, ignore_index, name="target")
    return _generate_jit(variables, target, seeds.astype(jnp.float32), eps, step_size, logits_fn=logits_fn,
                         iterations=iterations, norm=norm, ignore_index=ignore_index)
