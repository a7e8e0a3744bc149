"""Small stand-ins for the official dataset archives, in their real on-disk formats (for tests and benchmarks).

Each writer creates the extracted layout that ``prepare`` expects in a manual directory and returns the
label maps it wrote (as the builder should decode them), keyed by example id. Label maps are a background
with a few rectangles; VOC's get a 255 boundary around each object, as the real annotations do.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.io
from PIL import Image

from jaxseg.data.info import label_colormap
from jaxseg.validation import DEFAULT_IGNORE_INDEX


def _random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _rectangles(
    rng: np.random.Generator,
    height: int,
    width: int,
    values,
    boundary: int | None = None,
    background: int = 0,
    count: int = 3,
) -> np.ndarray:
    """uint8 (H, W) map: ``background`` with ``count`` rectangles of values drawn from ``values``."""
    label = np.full((height, width), background, np.uint8)
    for _ in range(count):
        top, left = int(rng.integers(0, height - 4)), int(rng.integers(0, width - 4))
        bottom = int(rng.integers(top + 4, height + 1))
        right = int(rng.integers(left + 4, width + 1))
        if boundary is not None:
            label[top:bottom, left:right] = boundary
            top, left, bottom, right = top + 1, left + 1, bottom - 1, right - 1
        label[top:bottom, left:right] = int(rng.choice(values))
    return label


def _size(rng: np.random.Generator, size) -> tuple[int, int]:
    """(H, W): ``size`` itself, or a random size within [16, 48) when ``size`` is None."""
    if size is not None:
        return size
    return int(rng.integers(16, 48)), int(rng.integers(16, 48))


def write_voc_palette_png(path: str, label: np.ndarray) -> None:
    """Writes a label map as a palette ('P') PNG with the VOC colour map, like SegmentationClass."""
    image = Image.fromarray(label, mode="P")
    image.putpalette(label_colormap(256).reshape(-1).tolist())
    image.save(path)


def write_fake_voc(
    root: str,
    *,
    voc_train: list[str],
    voc_val: list[str],
    sbd_train: list[str],
    sbd_val: list[str],
    size: tuple[int, int] | None = None,
    seed: int = 0,
    with_sbd: bool = True,
) -> dict[str, np.ndarray]:
    """VOCdevkit/VOC2012 (JPEGImages, SegmentationClass palette PNGs, ImageSets/Segmentation/{train,val}.txt)
    and, with ``with_sbd``, benchmark_RELEASE/dataset (cls/ID.mat with struct GTcls.Segmentation,
    {train,val}.txt); without it the SBD ids are not written at all.

    Every id gets a JPEG. VOC ids get a palette PNG (labels 0..20 with 255 boundaries), SBD ids an SBD
    .mat (labels 0..20, no boundary). Returns {id: VOC label if the id has one, else SBD label}.
    """
    rng = np.random.default_rng(seed)
    voc, sbd = os.path.join(root, "VOCdevkit/VOC2012"), os.path.join(root, "benchmark_RELEASE/dataset")
    for directory in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(voc, directory), exist_ok=True)
    if with_sbd:
        os.makedirs(os.path.join(sbd, "cls"), exist_ok=True)
    else:
        sbd_train, sbd_val = [], []
    labels, sizes = {}, {}
    for example_id in sorted(set(voc_train + voc_val + sbd_train + sbd_val)):
        sizes[example_id] = height, width = _size(rng, size)
        Image.fromarray(_random_image(rng, height, width)).save(os.path.join(voc, "JPEGImages", f"{example_id}.jpg"))
    for example_id in sorted(set(sbd_train + sbd_val)):
        segmentation = _rectangles(rng, *sizes[example_id], values=range(1, 21))
        boundaries = np.empty((20, 1), object)
        for index in range(20):
            boundaries[index, 0] = np.zeros(sizes[example_id], np.uint8)
        struct = {"Segmentation": segmentation, "Boundaries": boundaries, "CategoriesPresent": np.unique(segmentation)}
        scipy.io.savemat(os.path.join(sbd, "cls", f"{example_id}.mat"), {"GTcls": struct})
        labels[example_id] = segmentation
    for example_id in sorted(set(voc_train + voc_val)):
        label = _rectangles(rng, *sizes[example_id], values=range(1, 21), boundary=DEFAULT_IGNORE_INDEX)
        write_voc_palette_png(os.path.join(voc, "SegmentationClass", f"{example_id}.png"), label)
        labels[example_id] = label
    lists = [(f"{voc}/ImageSets/Segmentation/train.txt", voc_train), (f"{voc}/ImageSets/Segmentation/val.txt", voc_val)]
    if with_sbd:
        lists += [(f"{sbd}/train.txt", sbd_train), (f"{sbd}/val.txt", sbd_val)]
    for path, ids in lists:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{i}\n" for i in ids))
    return labels


def write_fake_ade20k(
    root: str, *, num_train: int, num_validation: int, size: tuple[int, int] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """ADEChallengeData2016/{images,annotations}/{training,validation}: JPEGs and greyscale PNGs (0..150)."""
    rng = np.random.default_rng(seed)
    labels = {}
    for folder, prefix, count in (("training", "ADE_train", num_train), ("validation", "ADE_val", num_validation)):
        image_dir = os.path.join(root, "ADEChallengeData2016/images", folder)
        label_dir = os.path.join(root, "ADEChallengeData2016/annotations", folder)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(label_dir, exist_ok=True)
        for index in range(1, count + 1):
            example_id = f"{prefix}_{index:08d}"
            height, width = _size(rng, size)
            label = _rectangles(rng, height, width, values=range(1, 151), count=4)
            Image.fromarray(_random_image(rng, height, width)).save(os.path.join(image_dir, f"{example_id}.jpg"))
            Image.fromarray(label, mode="L").save(os.path.join(label_dir, f"{example_id}.png"))
            labels[example_id] = label
    return labels


def write_fake_cityscapes(
    root: str, *, cities: dict[str, tuple[str, ...]], per_city: int, size: tuple[int, int] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """leftImg8bit/SPLIT/CITY/*_leftImg8bit.png and gtFine/SPLIT/CITY/*_gtFine_labelIds.png (+ _color.png).

    ``cities`` maps a split folder ("train", "val") to its cities. Label maps use raw labelIds (0..33,
    including ignored ones). Returns {id: labelIds map} (raw, before the train-id mapping).
    """
    rng = np.random.default_rng(seed)
    label_ids = list(range(34))
    labels = {}
    for folder, city_names in cities.items():
        for city in city_names:
            image_dir = os.path.join(root, "leftImg8bit", folder, city)
            label_dir = os.path.join(root, "gtFine", folder, city)
            os.makedirs(image_dir, exist_ok=True)
            os.makedirs(label_dir, exist_ok=True)
            for index in range(per_city):
                stem = f"{city}_{index:06d}_000019"
                height, width = _size(rng, size)
                label = _rectangles(rng, height, width, values=label_ids, background=7, count=5)
                Image.fromarray(_random_image(rng, height, width)).save(f"{image_dir}/{stem}_leftImg8bit.png")
                Image.fromarray(label, mode="L").save(f"{label_dir}/{stem}_gtFine_labelIds.png")
                Image.fromarray(_random_image(rng, height, width)).save(f"{label_dir}/{stem}_gtFine_color.png")
                labels[stem] = label
    return labels
