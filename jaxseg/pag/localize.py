"""Localisation from saliency (Aggarwal et al. 2020 lineage), on host NumPy/SciPy; see
docs/algorithms.md#perceptually-aligned-gradients.

``localize``: saliency (B, H, W) (e.g. ``saliency.saliency_map``) → per image: clip to its 2nd–98th
percentile, rescale to [0, 1], Gaussian blur (σ in pixels), threshold at 0.2 × the blurred max, keep the
largest 8-connected component → a mask and the box around it. Boxes are int (y0, x0, y1, x1) with exclusive
ends, (0, 0, 0, 0) for an empty mask. Scores: localisation accuracy (box IoU >= 0.5) and the pointing game
(the saliency maximum falls inside the object).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.ndimage


class Localization(NamedTuple):
    """masks: (B, H, W) bool, the largest component of the thresholded saliency. boxes: (B, 4) int32
    (y0, x0, y1, x1), exclusive ends."""

    masks: np.ndarray
    boxes: np.ndarray


def _as_maps(saliency) -> np.ndarray:
    saliency = np.asarray(saliency, np.float32)
    if saliency.ndim != 3:
        raise ValueError(f"saliency must have shape (B, H, W) (see saliency.saliency_map); got {saliency.shape}")
    if not np.all(np.isfinite(saliency)):
        raise ValueError("saliency contains NaN or infinite values")
    return saliency


def boxes_from_masks(masks) -> np.ndarray:
    """(B, 4) int32 (y0, x0, y1, x1) boxes (exclusive ends) around the True pixels of masks (B, H, W); empty → 0s."""
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (B, H, W); got {masks.shape}")
    boxes = np.zeros((masks.shape[0], 4), np.int32)
    for index, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size:
            boxes[index] = (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
    return boxes


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a (H, W) bool mask (ties: the lowest label), or an empty mask."""
    components, count = scipy.ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros_like(mask, bool)
    sizes = np.bincount(components.ravel())[1:]
    return components == (int(np.argmax(sizes)) + 1)


def localize(saliency, *, low_percentile: float = 2.0, high_percentile: float = 98.0, sigma: float = 1.0,
             threshold: float = 0.2) -> Localization:
    """Masks and boxes from saliency maps (B, H, W) (module docstring). sigma: blur in pixels (0: none);
    threshold: fraction of the blurred map's max."""
    saliency = _as_maps(saliency)
    if not 0.0 <= low_percentile < high_percentile <= 100.0:
        raise ValueError(f"need 0 <= low_percentile < high_percentile <= 100; got {low_percentile}, {high_percentile}")
    if not 0.0 < threshold < 1.0 or sigma < 0:
        raise ValueError(f"threshold must lie in (0, 1) and sigma be >= 0; got {threshold}, {sigma}")
    masks = np.zeros(saliency.shape, bool)
    for index, values in enumerate(saliency):
        low, high = np.percentile(values, [low_percentile, high_percentile])
        if high <= low:  # a flat map carries no location
            continue
        scaled = (np.clip(values, low, high) - low) / (high - low)
        blurred = scipy.ndimage.gaussian_filter(scaled, sigma) if sigma > 0 else scaled
        peak = blurred.max()
        if peak > 0:
            masks[index] = largest_component(blurred >= threshold * peak)
    return Localization(masks, boxes_from_masks(masks))


def box_iou(boxes_a, boxes_b) -> np.ndarray:
    """(B,) IoU of paired (B, 4) boxes (y0, x0, y1, x1), exclusive ends; 0 when both are empty."""
    a, b = np.asarray(boxes_a, np.float64), np.asarray(boxes_b, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"boxes must be paired (B, 4) arrays; got {a.shape} and {b.shape}")
    height = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    width = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    intersection = height * width

    def area(boxes):
        return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)

    union = area(a) + area(b) - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def localization_accuracy(predicted_boxes, true_boxes, iou_threshold: float = 0.5) -> float:
    """Fraction of images whose predicted box has IoU >= ``iou_threshold`` with the true box."""
    return float(np.mean(box_iou(predicted_boxes, true_boxes) >= iou_threshold))


def pointing_game(saliency, object_masks, tolerance: int = 0) -> np.ndarray:
    """(B,) bool: the saliency maximum (first one in raster order) lies in the object mask (B, H, W), dilated
    by ``tolerance`` pixels. Images with an empty object mask count as misses."""
    saliency = _as_maps(saliency)
    object_masks = np.asarray(object_masks, bool)
    if object_masks.shape != saliency.shape:
        raise ValueError(f"object_masks must match the saliency shape {saliency.shape}; got {object_masks.shape}")
    if tolerance > 0:
        structure = np.ones((1, 2 * tolerance + 1, 2 * tolerance + 1), bool)
        object_masks = scipy.ndimage.binary_dilation(object_masks, structure=structure)
    flat = saliency.reshape(saliency.shape[0], -1).argmax(axis=1)
    return object_masks.reshape(saliency.shape[0], -1)[np.arange(saliency.shape[0]), flat]
