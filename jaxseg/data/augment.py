"""Host-side image/label operations (NumPy + PIL): training augmentation and evaluation preprocessing.

Images are uint8 (H, W, 3), labels uint8 (H, W) throughout; conversion to float32 [0, 1] / int32 happens
when batches are assembled (``pipeline``). Images resize bilinearly, labels with nearest neighbour.

Training (the PIR-AT / PSPNet recipe, docs/algorithms.md#adversarial-training): horizontal flip (p = 0.5);
random rescale so the short side is a random integer in [0.5 base_size, 2.0 base_size]; pad bottom/right to
the crop size (image with ``image_fill``, label with the ignore index); random crop; Gaussian blur with a
radius drawn uniformly from [0, 1) pixels (p = 0.5).

Evaluation protocols (``eval_preprocess``):
  ``"sea"``: short side resized to ``size``, centre crop ``size`` x ``size``; ignore pixels become the
    dataset's ``sea_ignore_label`` (VOC: 0, background), so nothing is ignored
    (docs/sea_evaluation.md#protocols-by-dataset).
  ``"standard"``: the full image at its own resolution, downscaled (never upscaled) only when its long
    side exceeds ``size``, then padded bottom/right to ``size`` x ``size`` with the ignore label, so
    padding never counts and every batch has one shape.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from jaxseg.validation import DEFAULT_IGNORE_INDEX

PROTOCOLS = ("sea", "standard")
SCALE_RANGE = (0.5, 2.0)
BLUR_PROBABILITY = 0.5


def resize(image: np.ndarray, label: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Resizes image (bilinear) and label (nearest) to (height, width)."""
    if image.shape[:2] == (height, width):
        return image, label
    resized_image = Image.fromarray(image).resize((width, height), Image.BILINEAR)
    resized_label = Image.fromarray(label).resize((width, height), Image.NEAREST)
    return np.asarray(resized_image), np.asarray(resized_label)


def resize_short_side(image: np.ndarray, label: np.ndarray, short_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Resizes so the shorter side is ``short_side``; the other side keeps the aspect ratio (truncated)."""
    height, width = label.shape
    if height < width:
        new_height, new_width = short_side, max(1, int(width * short_side / height))
    else:
        new_height, new_width = max(1, int(height * short_side / width)), short_side
    return resize(image, label, new_height, new_width)


def pad_to(
    image: np.ndarray, label: np.ndarray, height: int, width: int, *, image_fill=0,
    ignore_index: int = DEFAULT_IGNORE_INDEX,
) -> tuple[np.ndarray, np.ndarray]:
    """Pads bottom/right to at least (height, width): image with ``image_fill`` (scalar or RGB), label with
    ``ignore_index``."""
    pad_height, pad_width = max(height - label.shape[0], 0), max(width - label.shape[1], 0)
    if pad_height == 0 and pad_width == 0:
        return image, label
    padded_image = np.empty((label.shape[0] + pad_height, label.shape[1] + pad_width, 3), np.uint8)
    padded_image[...] = np.asarray(image_fill, np.uint8)
    padded_image[: label.shape[0], : label.shape[1]] = image
    padded_label = np.full(padded_image.shape[:2], ignore_index, np.uint8)
    padded_label[: label.shape[0], : label.shape[1]] = label
    return padded_image, padded_label


def crop(image: np.ndarray, label: np.ndarray, top: int, left: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``size`` x ``size`` window at (top, left)."""
    return image[top : top + size, left : left + size], label[top : top + size, left : left + size]


def train_augment(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    *,
    crop_size: int,
    base_size: int,
    image_fill=0,
    ignore_index: int = DEFAULT_IGNORE_INDEX,
) -> tuple[np.ndarray, np.ndarray]:
    """One random training view: uint8 (crop, crop, 3) image and uint8 (crop, crop) label.

    Flip, rescale (short side in [0.5, 2.0] x base_size), pad (ignore label), random crop, blur; all
    randomness from ``rng``.
    """
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    short_side = int(rng.integers(int(base_size * SCALE_RANGE[0]), int(base_size * SCALE_RANGE[1]) + 1))
    image, label = resize_short_side(np.ascontiguousarray(image), np.ascontiguousarray(label), max(short_side, 1))
    image, label = pad_to(image, label, crop_size, crop_size, image_fill=image_fill, ignore_index=ignore_index)
    top = int(rng.integers(0, label.shape[0] - crop_size + 1))
    left = int(rng.integers(0, label.shape[1] - crop_size + 1))
    image, label = crop(image, label, top, left, crop_size)
    if rng.random() < BLUR_PROBABILITY:
        blurred = Image.fromarray(np.ascontiguousarray(image)).filter(ImageFilter.GaussianBlur(radius=rng.random()))
        image = np.asarray(blurred)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def center_view(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Short side resized to ``size``, then the centred ``size`` x ``size`` crop (offsets rounded)."""
    image, label = resize_short_side(image, label, size)
    top = int(round((label.shape[0] - size) / 2))
    left = int(round((label.shape[1] - size) / 2))
    return crop(image, label, top, left, size)


def eval_preprocess(
    image: np.ndarray,
    label: np.ndarray,
    *,
    protocol: str,
    size: int,
    ignore_index: int = DEFAULT_IGNORE_INDEX,
    sea_ignore_label: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """An evaluation view, uint8 (size, size, 3) and uint8 (size, size), under ``protocol``.

    ``"sea"``: ``center_view``, then ignore pixels → ``sea_ignore_label`` when it is not None.
    ``"standard"``: downscale to fit if needed (aspect kept), pad with the ignore label to size x size.
    """
    if protocol == "sea":
        image, label = center_view(image, label, size)
        if sea_ignore_label is not None:
            label = np.where(label == ignore_index, np.uint8(sea_ignore_label), label)
    elif protocol == "standard":
        height, width = label.shape
        if max(height, width) > size:
            scale = size / max(height, width)
            image, label = resize(image, label, max(1, round(height * scale)), max(1, round(width * scale)))
        image, label = pad_to(image, label, size, size, ignore_index=ignore_index)
    else:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; use one of {PROTOCOLS}")
    return np.ascontiguousarray(image), np.ascontiguousarray(label)
