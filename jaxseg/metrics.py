"""Segmentation metrics: confusion matrices, aAcc, IoU, mIoU, mAcc and per-image statistics.

Every function here is jit-able and works on device arrays. Dataset-level scores are *pooled*: per-class
intersections and unions (or a confusion matrix) are summed over all images first and only then turned into
ratios, so results are independent of how the data was batched or sharded. Only the pixels of
``validation.valid_mask`` count: a pixel whose label equals ``ignore_index`` (or lies outside [0, K)) never does.

Shapes: ``predictions`` and ``labels`` are int (B, H, W); ``num_classes`` is K.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.validation import DEFAULT_IGNORE_INDEX, valid_mask


class PerImageStatistics(NamedTuple):
    """Per-image counts, enough to rebuild any pooled score over any subset of images.

    correct: (B,) int32, labelled pixels predicted correctly.
    labelled: (B,) int32, pixels whose label is not ``ignore_index``.
    intersection: (B, K) int32, per class |pred == c and label == c|.
    union: (B, K) int32, per class |pred == c or label == c| over labelled pixels.
    class_pixels: (B, K) int32, per class |label == c| (the same for every attack on an image).
    """

    correct: jax.Array
    labelled: jax.Array
    intersection: jax.Array
    union: jax.Array
    class_pixels: jax.Array

    @property
    def pixel_accuracy(self) -> jax.Array:
        """(B,) float32 fraction of labelled pixels predicted correctly (1.0 for an image with none)."""
        return accuracy_from_counts(self.correct, self.labelled)


def accuracy_from_counts(correct, labelled, empty: float = 1.0) -> jax.Array:
    """Pixel accuracy ``correct / labelled`` as float32, ``empty`` where ``labelled`` is 0. Same shapes in and out."""
    return jnp.where(labelled > 0, correct / jnp.maximum(labelled, 1), empty).astype(jnp.float32)


def pixel_accuracy(
    predictions: jax.Array,
    labels: jax.Array,
    num_classes: int | None = None,
    ignore_index: int | None = DEFAULT_IGNORE_INDEX,
    *,
    axis=(1, 2),
    empty: float = 1.0,
) -> jax.Array:
    """Fraction of the ``valid_mask`` pixels where ``predictions == labels``, reduced over ``axis``.

    predictions, labels: int (B, H, W) → (B,) float32 per image (``axis=(1, 2)``), or () pooled over the batch
    (``axis=None``); ``empty`` where there is no labelled pixel.
    """
    valid = valid_mask(labels, num_classes, ignore_index)
    correct = jnp.sum((predictions == labels) & valid, axis=axis)
    return accuracy_from_counts(correct, jnp.sum(valid, axis=axis), empty)


def confusion_matrix(
    predictions: jax.Array,
    labels: jax.Array,
    num_classes: int,
    ignore_index: int | None = DEFAULT_IGNORE_INDEX,
) -> jax.Array:
    """(K, K) int32 confusion matrix; rows are true classes, columns predicted classes.

    Ignored pixels are dropped. Sum matrices over batches/devices to accumulate a dataset.
    """
    valid = valid_mask(labels, num_classes, ignore_index)
    index = jnp.where(valid, labels * num_classes + predictions, 0).reshape(-1)
    counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index].add(
        valid.reshape(-1).astype(jnp.int32)
    )
    return counts.reshape(num_classes, num_classes)


def per_image_statistics(
    predictions: jax.Array,
    labels: jax.Array,
    num_classes: int,
    ignore_index: int | None = DEFAULT_IGNORE_INDEX,
) -> PerImageStatistics:
    """Per-image correct/labelled counts and per-class intersection/union, see ``PerImageStatistics``."""
    valid = valid_mask(labels, num_classes, ignore_index)
    classes = jnp.arange(num_classes)
    pred_onehot = (predictions[..., None] == classes) & valid[..., None]  # (B, H, W, K)
    label_onehot = (labels[..., None] == classes) & valid[..., None]
    intersection = jnp.sum(pred_onehot & label_onehot, axis=(1, 2), dtype=jnp.int32)
    union = jnp.sum(pred_onehot | label_onehot, axis=(1, 2), dtype=jnp.int32)
    correct = jnp.sum((predictions == labels) & valid, axis=(1, 2), dtype=jnp.int32)
    labelled = jnp.sum(valid, axis=(1, 2), dtype=jnp.int32)
    class_pixels = jnp.sum(label_onehot, axis=(1, 2), dtype=jnp.int32)
    return PerImageStatistics(correct, labelled, intersection, union, class_pixels)


def iou_from_confusion(matrix: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-class intersection (K,) and union (K,) from a (K, K) confusion matrix."""
    intersection = jnp.diagonal(matrix)
    union = matrix.sum(0) + matrix.sum(1) - intersection
    return intersection, union


def mean_iou(intersection: jax.Array, union: jax.Array) -> jax.Array:
    """Mean IoU over the classes with union > 0 (NaN if there is none). Inputs (..., K) pooled counts."""
    present = union > 0
    iou = jnp.where(present, intersection / jnp.maximum(union, 1), 0.0)
    return jnp.sum(iou, -1) / jnp.where(present.sum(-1) > 0, present.sum(-1), jnp.nan)


def scores_from_confusion(matrix: jax.Array) -> dict[str, jax.Array]:
    """Dataset scores from a pooled (K, K) confusion matrix.

    Returns a dict with ``aAcc`` (correct / labelled pixels), ``mIoU`` (mean over classes with union > 0),
    ``mAcc`` (mean per-class recall over classes present in the labels), ``IoU`` (K,) with NaN for absent
    classes and ``Acc`` (K,) per-class recall with NaN for classes absent from the labels. Fractions, not %.
    """
    matrix = jnp.asarray(matrix)
    intersection, union = iou_from_confusion(matrix)
    label_count = matrix.sum(1)
    total = matrix.sum()
    iou = jnp.where(union > 0, intersection / jnp.maximum(union, 1), jnp.nan)
    recall = jnp.where(label_count > 0, intersection / jnp.maximum(label_count, 1), jnp.nan)
    return {
        "aAcc": jnp.where(total > 0, intersection.sum() / jnp.maximum(total, 1), jnp.nan),
        "mIoU": mean_iou(intersection, union),
        "mAcc": jnp.nanmean(recall),
        "IoU": iou,
        "Acc": recall,
    }


def mean_class_accuracy(intersection: jax.Array, class_pixels: jax.Array) -> jax.Array:
    """Mean per-class recall over the classes present in the labels (NaN if none); pooled (..., K) counts."""
    present = class_pixels > 0
    recall = jnp.where(present, intersection / jnp.maximum(class_pixels, 1), 0.0)
    return jnp.sum(recall, -1) / jnp.where(present.sum(-1) > 0, present.sum(-1), jnp.nan)


def scores_from_statistics(stats: PerImageStatistics) -> dict[str, jax.Array]:
    """Pooled ``aAcc``, ``mIoU`` and ``mAcc`` over all images of a (possibly concatenated)
    ``PerImageStatistics``, and ``aAcc_per_image``: the mean over images (with labelled pixels) of each
    image's pixel accuracy, the form the SEA reference code reports (equal to the pooled aAcc when every
    image has the same number of labelled pixels)."""
    labelled = stats.labelled.sum()
    has_pixels = stats.labelled > 0
    per_image = stats.correct / jnp.maximum(stats.labelled, 1)
    return {
        "aAcc": jnp.where(labelled > 0, stats.correct.sum() / jnp.maximum(labelled, 1), jnp.nan),
        "aAcc_per_image": jnp.sum(jnp.where(has_pixels, per_image, 0.0)) / jnp.where(has_pixels.sum() > 0, has_pixels.sum(), jnp.nan),
        "mIoU": mean_iou(stats.intersection.sum(0), stats.union.sum(0)),
        "mAcc": mean_class_accuracy(stats.intersection.sum(0), stats.class_pixels.sum(0)),
    }


def concatenate_statistics(parts: list[PerImageStatistics]) -> PerImageStatistics:
    """Join per-image statistics of several batches along the image axis (as NumPy arrays)."""
    if not parts:
        raise ValueError("concatenate_statistics needs at least one batch of statistics")
    return PerImageStatistics(*(np.concatenate([np.asarray(getattr(p, f)) for p in parts]) for f in PerImageStatistics._fields))
