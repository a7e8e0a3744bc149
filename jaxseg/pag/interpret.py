"""Interpretability metrics for attributions: ROAR / KAR for segmentation and a gradient-alignment score
(docs/algorithms.md#perceptually-aligned-gradients).

ROAR (remove and retrain, Hooker et al. 2019) and KAR (keep and retrain), as Kim, Seo & Jeon (2019) use
them to compare robust and standard models: for each fraction q, the top q of each image's pixels ranked by
saliency are replaced by the dataset mean (ROAR), or everything *but* the top q is (KAR), in the training and
the test images; a fresh model is trained on the degraded training images (labels unchanged) and scored on
the degraded test images. The same is done with a uniformly random ranking. The reported area is the area
between the two score curves over q (trapezoid rule), signed so that larger = better attribution:
ROAR ∫ (random − attribution) dq (removing salient pixels should hurt more), KAR ∫ (attribution − random) dq
(keeping them should help more).

Training is the caller's: ``train_fn(images, labels) -> evaluate_fn`` with ``evaluate_fn(images, labels) ->
float`` (higher = better, e.g. mIoU); ``simple_trainer`` builds one around a small conv net.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg import metrics
from jaxseg.attacks import segmentation_cross_entropy
from jaxseg.pag import common
from jaxseg.validation import DEFAULT_IGNORE_INDEX

RETRAIN_MODES = ("roar", "kar")
DEFAULT_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)

TrainFunction = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray, np.ndarray], float]]


class RetrainCurve(NamedTuple):
    """mode: "roar" or "kar". fractions: (Q,) q values. scores: (Q,) test score with the attribution's ranking.
    random_scores: (Q,) with a random ranking. area: signed area between the curves (larger = better)."""

    mode: str
    fractions: np.ndarray
    scores: np.ndarray
    random_scores: np.ndarray
    area: float


def degrade(images, saliency, fraction: float, fill, *, keep: bool = False) -> np.ndarray:
    """Replace the top ``fraction`` of each image's pixels by saliency (ties: raster order) with ``fill``;
    with ``keep=True`` replace all the other pixels instead (KAR).

    images: (N, H, W, C) float; saliency: (N, H, W); fill: (C,) colour. Returns float32 (N, H, W, C).
    """
    images, saliency = np.asarray(images, np.float32), np.asarray(saliency, np.float32)
    if saliency.shape != images.shape[:3]:
        raise ValueError(f"saliency must have shape (N, H, W) = {images.shape[:3]}; got {saliency.shape}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1]; got {fraction}")
    flat = saliency.reshape(saliency.shape[0], -1)
    count = int(round(fraction * flat.shape[1]))
    order = np.argsort(-flat, axis=1, kind="stable")[:, :count]
    top = np.zeros(flat.shape, bool)
    np.put_along_axis(top, order, True, axis=1)
    replace = (~top if keep else top).reshape(saliency.shape)
    return np.where(replace[..., None], np.asarray(fill, np.float32), images)


def _retrain_scores(train_images, train_labels, train_saliency, test_images, test_labels, test_saliency, train_fn,
                    fractions, fill, keep: bool, progress) -> np.ndarray:
    scores = []
    for fraction in fractions:
        evaluate = train_fn(degrade(train_images, train_saliency, fraction, fill, keep=keep), train_labels)
        if not callable(evaluate):
            raise ValueError("train_fn(images, labels) must return a callable evaluate_fn(images, labels) -> float")
        scores.append(float(evaluate(degrade(test_images, test_saliency, fraction, fill, keep=keep), test_labels)))
        if progress:
            progress(fraction)
    return np.asarray(scores, np.float64)


def remove_and_retrain(train_images, train_labels, train_saliency, test_images, test_labels, test_saliency,
                       train_fn: TrainFunction, *, mode: str = "roar", fractions: Sequence[float] = DEFAULT_FRACTIONS,
                       fill=None, seed: int = 0, random_scores=None,
                       progress: Callable[[float], None] | None = None) -> RetrainCurve:
    """ROAR or KAR curve of an attribution against a random ranking (module docstring).

    Args:
      train_images, test_images: (N, H, W, 3) float in [0, 1]; train_labels, test_labels: (N, H, W) int.
      train_saliency, test_saliency: (N, H, W) per-pixel saliency of those images (e.g.
        ``saliency.saliency_map`` of the model's gradients). train_fn: see module docstring.
      mode: "roar" or "kar". fractions: q values in [0, 1], increasing. fill: (3,) replacement colour,
        default the training images' mean. seed: of the random ranking. random_scores: (Q,) scores of the
        random ranking from an earlier call (they do not depend on the attribution), to skip retraining.
      progress: called with q after each retraining (for progress bars).
    """
    if mode not in RETRAIN_MODES:
        raise ValueError(f"unknown retraining mode {mode!r}; choose one of {RETRAIN_MODES}")
    fractions = np.asarray(fractions, np.float64)
    if fractions.ndim != 1 or fractions.size < 2 or np.any(np.diff(fractions) <= 0) or fractions[0] < 0 or fractions[-1] > 1:
        raise ValueError(f"fractions must be at least two increasing values in [0, 1]; got {fractions.tolist()}")
    train_images = np.asarray(train_images, np.float32)
    common.check_images(train_images, "train_images")
    common.check_images(np.asarray(test_images, np.float32), "test_images")
    fill = train_images.mean(axis=(0, 1, 2)) if fill is None else np.asarray(fill, np.float32)
    keep = mode == "kar"
    arguments = (train_images, train_labels, train_saliency, test_images, test_labels, test_saliency)
    scores = _retrain_scores(*arguments, train_fn, fractions, fill, keep, progress)
    if random_scores is None:
        rng = np.random.default_rng(seed)
        random_train = rng.uniform(size=np.shape(train_saliency)).astype(np.float32)
        random_test = rng.uniform(size=np.shape(test_saliency)).astype(np.float32)
        random_scores = _retrain_scores(train_images, train_labels, random_train, test_images, test_labels,
                                        random_test, train_fn, fractions, fill, keep, progress)
    random_scores = np.asarray(random_scores, np.float64)
    if random_scores.shape != fractions.shape:
        raise ValueError(f"random_scores must have one score per fraction ({fractions.size}); got {random_scores.shape}")
    gap = scores - random_scores if keep else random_scores - scores
    area = float(np.sum((gap[1:] + gap[:-1]) * np.diff(fractions)) / 2)
    return RetrainCurve(mode, fractions, scores, random_scores, area)


class SmallSegNet(nn.Module):
    """A small fully-convolutional segmenter for retraining: 3x3 convs, one dilated for context.
    (B, H, W, 3) in [0, 1] → logits (B, H, W, num_classes)."""

    num_classes: int
    features: int = 32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = nn.relu(nn.Conv(self.features, (3, 3))(images))
        x = nn.relu(nn.Conv(self.features, (3, 3), kernel_dilation=2)(x))
        x = nn.relu(nn.Conv(self.features, (3, 3), kernel_dilation=4)(x))
        return nn.Conv(self.num_classes, (1, 1))(x)


def simple_trainer(num_classes: int, *, steps: int = 300, batch_size: int = 16, learning_rate: float = 3e-3,
                   features: int = 32, seed: int = 0,
                   ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> TrainFunction:
    """A ``train_fn`` that trains ``SmallSegNet`` with Adam on per-pixel CE for ``steps`` minibatches (sampled
    with replacement, seeded) and returns ``evaluate_fn(images, labels) -> mIoU`` (pooled, in [0, 1])."""
    if not isinstance(steps, int) or steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive integers; got {steps}, {batch_size}")
    model = SmallSegNet(num_classes, features)
    optimizer = optax.adam(learning_rate)

    def loss_fn(params, images, labels):
        return segmentation_cross_entropy(model.apply(params, images), labels, ignore_index)

    @jax.jit
    def update(params, state, images, labels):
        grads = jax.grad(loss_fn)(params, images, labels)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    @jax.jit
    def confusion(params, images, labels):
        prediction = jnp.argmax(model.apply(params, images), -1)
        return metrics.confusion_matrix(prediction, labels, num_classes, ignore_index)

    def train_fn(images, labels):
        images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32)
        params = model.init(jax.random.key(seed), images[:1])
        state = optimizer.init(params)
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            index = rng.integers(0, images.shape[0], batch_size)
            params, state = update(params, state, images[index], labels[index])

        def evaluate_fn(test_images, test_labels) -> float:
            test_images, test_labels = np.asarray(test_images, np.float32), np.asarray(test_labels, np.int32)
            total = sum(np.asarray(confusion(params, test_images[i:i + 64], test_labels[i:i + 64]))
                        for i in range(0, test_images.shape[0], 64))
            return float(metrics.scores_from_confusion(jnp.asarray(total))["mIoU"])

        return evaluate_fn

    return train_fn


def gradient_alignment(gradients, reference) -> np.ndarray:
    """(B,) cosine similarity between each image's input gradient and a reference direction (Ganz et al. 2023),
    both (B, H, W, C) (flattened per image); 0 where either is all zero."""
    gradients = np.asarray(gradients, np.float64).reshape(np.shape(gradients)[0], -1)
    reference = np.asarray(reference, np.float64)
    if reference.shape[0] != gradients.shape[0] or reference.size != gradients.size:
        raise ValueError(f"reference must have the gradients' shape; got {reference.shape}")
    reference = reference.reshape(gradients.shape)
    norms = np.linalg.norm(gradients, axis=1) * np.linalg.norm(reference, axis=1)
    return np.where(norms > 0, np.sum(gradients * reference, axis=1) / np.where(norms > 0, norms, 1.0), 0.0)
