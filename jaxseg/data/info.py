"""What each dataset is: class names, number of classes, ignore label, palette, default splits.

Dataset names are the TFDS builder names (``voc2012_seg``, ``ade20k``, ``cityscapes``, ``synthetic_shapes``),
optionally followed by ``/config`` (``synthetic_shapes/96px``); the config never changes the classes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxseg.validation import DEFAULT_IGNORE_INDEX

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

# ADE20K SceneParsing (ADEChallengeData2016): label 0 is "other" (unlabelled), 1..150 the benchmark classes.
ADE20K_CLASSES = ("other",) + (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)  # fmt: skip

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

SYNTHETIC_SHAPES_CLASSES = ("background", "disc", "square", "triangle", "ring", "bar")

# The colour that `colorize` gives labels outside the palette (the ignore label): VOC's boundary colour.
IGNORE_COLOR = (224, 224, 192)


def label_colormap(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved class index), deterministic for any class count.

    Returns uint8 (num_classes, 3). Its first 21 rows are the VOC palette of the SegmentationClass PNGs
    and row 255 is VOC's boundary colour (224, 224, 192).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    palette = np.zeros((num_classes, 3), np.uint8)
    for index in range(num_classes):
        code, red, green, blue = index, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= (code & 1) << shift
            green |= ((code >> 1) & 1) << shift
            blue |= ((code >> 2) & 1) << shift
            code >>= 3
        palette[index] = (red, green, blue)
    return palette


def colorize(label_map: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Colours a label map: int (..., H, W) → uint8 (..., H, W, 3).

    Labels in [0, len(palette)) take their palette row; anything else (the ignore label 255, negative
    values) takes ``IGNORE_COLOR``.
    """
    label_map = np.asarray(label_map)
    palette = np.asarray(palette, np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must have shape (K, 3), got {palette.shape}")
    table = np.concatenate([palette, np.asarray([IGNORE_COLOR], np.uint8)])
    indices = np.where((label_map >= 0) & (label_map < len(palette)), label_map, len(palette))
    return table[indices]


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetInfo:
    """Static description of a dataset.

    Attributes:
      name: base dataset name (no ``/config``).
      num_classes: K, the number of output classes of a model for this dataset.
      class_names: K names; label k is ``class_names[k]``.
      ignore_index: label of pixels that count in no loss or metric (255).
      palette: uint8 (K, 3) colours for label maps.
      train_split, eval_split: the default TFDS split names for training and evaluation.
      sea_ignore_label: what ignore pixels become under the SEA evaluation protocol (VOC: 0, background);
        None keeps them ignored.
      sea_image_size: side of the SEA paper's evaluation crop for this dataset (VOC 473, ADE20K 512), None
        where the paper publishes no protocol.
      eval_image_size: default evaluation size under the ``standard`` protocol (None: the prepared image size).
      needs_manual_dir: whether ``prepare`` reads the official archives from a manual directory.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: np.ndarray
    train_split: str
    eval_split: str
    ignore_index: int = DEFAULT_IGNORE_INDEX
    sea_ignore_label: int | None = None
    sea_image_size: int | None = None
    eval_image_size: int | None = None
    needs_manual_dir: bool = True


def _build_infos() -> dict[str, DatasetInfo]:
    infos = [
        DatasetInfo(
            "voc2012_seg",
            len(VOC_CLASSES),
            VOC_CLASSES,
            label_colormap(len(VOC_CLASSES)),
            train_split="train_aug",
            eval_split="validation",
            sea_ignore_label=0,
            sea_image_size=473,
            eval_image_size=512,
        ),
        DatasetInfo(
            "ade20k",
            len(ADE20K_CLASSES),
            ADE20K_CLASSES,
            label_colormap(len(ADE20K_CLASSES)),
            train_split="train",
            eval_split="validation",
            sea_image_size=512,
            eval_image_size=512,
        ),
        DatasetInfo(
            "cityscapes",
            len(CITYSCAPES_CLASSES),
            CITYSCAPES_CLASSES,
            np.asarray(CITYSCAPES_COLORS, np.uint8),
            train_split="train",
            eval_split="validation",
            eval_image_size=1024,
        ),
        DatasetInfo(
            "synthetic_shapes",
            len(SYNTHETIC_SHAPES_CLASSES),
            SYNTHETIC_SHAPES_CLASSES,
            label_colormap(len(SYNTHETIC_SHAPES_CLASSES)),
            train_split="train",
            eval_split="validation",
            needs_manual_dir=False,
        ),
    ]
    return {info.name: info for info in infos}


_INFOS = _build_infos()


def dataset_names() -> tuple[str, ...]:
    """The known dataset names."""
    return tuple(_INFOS)


def base_name(name: str) -> str:
    """``synthetic_shapes/96px`` → ``synthetic_shapes``; raises ValueError for unknown datasets."""
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {type(name).__name__}")
    base = name.split("/", 1)[0].split(":", 1)[0]
    if base not in _INFOS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(_INFOS)}")
    return base


def dataset_info(name: str) -> DatasetInfo:
    """The DatasetInfo of ``name`` (a config suffix such as ``/96px`` is allowed and ignored)."""
    return _INFOS[base_name(name)]
