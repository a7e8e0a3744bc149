"""Reading the official archives' files into arrays (PIL, scipy), with errors that name the file."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import scipy.io
from PIL import Image

from jaxseg.data.info import label_colormap
from jaxseg.validation import DEFAULT_IGNORE_INDEX


def require_paths(root: str, relative_paths: Iterable[str], what: str) -> None:
    """Raises FileNotFoundError listing every path of ``relative_paths`` missing under ``root``.

    ``what`` names the dataset and how to obtain it; the message lists the whole expected layout so an
    incomplete manual directory can be fixed in one go.
    """
    relative_paths = list(relative_paths)
    if root is None or not os.path.isdir(root):
        raise FileNotFoundError(
            f"{what}: manual directory {root!r} does not exist; it must contain:\n  " + "\n  ".join(relative_paths)
        )
    missing = [p for p in relative_paths if not os.path.exists(os.path.join(root, p))]
    if missing:
        raise FileNotFoundError(
            f"{what}: manual directory {root} is incomplete; missing:\n  "
            + "\n  ".join(missing)
            + "\nexpected layout:\n  "
            + "\n  ".join(relative_paths)
        )


def require_files(paths: Iterable[str], what: str, limit: int = 10) -> None:
    """Raises FileNotFoundError naming (up to ``limit`` of) the files in ``paths`` that do not exist."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = "\n  ".join(missing[:limit])
        more = f"\n  ... and {len(missing) - limit} more" if len(missing) > limit else ""
        raise FileNotFoundError(f"{what}: {len(missing)} listed file(s) are missing:\n  {shown}{more}")


def read_ids(path: str) -> list[str]:
    """Image ids of an ImageSets-style list file, one per line (blank lines skipped)."""
    with open(path, encoding="utf-8") as handle:
        return [line.strip().split()[0] for line in handle if line.strip()]


def read_rgb(path: str) -> np.ndarray:
    """A JPEG/PNG image as uint8 (H, W, 3) RGB; ValueError naming ``path`` if it cannot be decoded."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), np.uint8)
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot decode image {path}: {error}") from error


_VOC_PALETTE_LOOKUP = {tuple(int(c) for c in color): index for index, color in enumerate(label_colormap(256))}


def read_label_png(path: str) -> np.ndarray:
    """A label PNG as uint8 (H, W) class indices.

    Palette ('P') PNGs — VOC's SegmentationClass — give their palette indices directly; greyscale PNGs
    (ADE20K, Cityscapes labelIds) give their values. RGB PNGs are decoded with the VOC colour map
    (255 = boundary colour); a colour outside it is an error naming the file.
    """
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode in ("P", "L"):
                return np.asarray(image, np.uint8)
            if mode in ("I", "I;16", "I;16B"):
                values = np.asarray(image)
                if values.min() < 0 or values.max() > 255:
                    raise ValueError(f"label values outside 0..255 ({values.min()}..{values.max()})")
                return values.astype(np.uint8)
            rgb = np.asarray(image.convert("RGB"), np.uint8)
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot decode label map {path}: {error}") from error
    colors, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    indices = []
    for color in colors:
        index = _VOC_PALETTE_LOOKUP.get(tuple(int(c) for c in color))
        if index is None:
            raise ValueError(f"label map {path}: colour {tuple(int(c) for c in color)} is not in the VOC palette")
        indices.append(index)
    return np.asarray(indices, np.uint8)[inverse.reshape(-1)].reshape(rgb.shape[:2])


def read_sbd_mat(path: str) -> np.ndarray:
    """An SBD ``cls/*.mat`` (struct ``GTcls`` with field ``Segmentation``) as uint8 (H, W) class indices."""
    try:
        contents = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
        segmentation = np.asarray(contents["GTcls"].Segmentation)
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
        raise ValueError(f"cannot read SBD segmentation (GTcls.Segmentation) from {path}: {error}") from error
    if segmentation.ndim != 2 or segmentation.min() < 0 or segmentation.max() > DEFAULT_IGNORE_INDEX:
        raise ValueError(f"{path}: GTcls.Segmentation must be a 2-D map of labels in 0..255")
    return segmentation.astype(np.uint8)


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: str, label_path: str) -> None:
    """ValueError naming both files when an image (H, W, 3) and its label map (H', W') differ in size."""
    if image.shape[:2] != label.shape:
        raise ValueError(
            f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its label map {label_path} "
            f"is {label.shape[1]}x{label.shape[0]}"
        )
