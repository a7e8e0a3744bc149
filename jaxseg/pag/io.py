"""Files and models for the ``generate`` / ``inpaint`` / ``saliency`` commands: PNG inputs, the model from a
checkpoint (or randomly initialised for smoke runs), PNG figure grids and JSON results. Nothing here prints.

Only NumPy and Pillow are imported at module level; JAX, the models and matplotlib are imported where used.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

def _open(path, what: str) -> Image.Image:
    """The decoded image at ``path``; ``FileNotFoundError`` or ``UnreadableFileError`` (a ``ValueError``) naming
    the file and ``what`` it should have been otherwise."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not {what}")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path} (expected {what})")
    try:
        image = Image.open(path)
        image.load()  # Image.open reads only the header; a truncated file fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        if isinstance(error, PermissionError):
            raise
        from jaxseg.checkpoint import UnreadableFileError, short_error

        size = path.stat().st_size
        problem = "the file is empty" if size == 0 else f"not a readable image ({short_error(error)})"
        raise UnreadableFileError(path, f"{problem}; expected {what}") from error
    if image.width < 1 or image.height < 1:
        raise ValueError(f"{path}: the image has no pixels ({image.width}x{image.height})")
    return image


def read_image_png(path) -> np.ndarray:
    """An RGB image file → float32 (1, H, W, 3) in [0, 1]."""
    return (np.asarray(_open(path, "an RGB image (PNG)").convert("RGB"), np.float32) / 255.0)[None]


def read_label_png(path) -> np.ndarray:
    """A label-map PNG of class indices (mode L or P; pixel value = class, 255 = ignore) → int32 (1, H, W)."""
    image = _open(path, "a label-map PNG of class indices")
    if image.mode not in ("L", "P", "I", "I;16"):
        raise ValueError(f"{path}: a label map must be a single-channel PNG of class indices (mode L or P); "
                         f"got mode {image.mode}")
    return np.asarray(image, np.int64).astype(np.int32)[None]


def read_mask_png(path) -> np.ndarray:
    """A mask image (any mode; non-zero = inside) → bool (1, H, W)."""
    return (np.asarray(_open(path, "a mask image (PNG, non-zero = inside)").convert("L")) > 0)[None]


def check_label_values(labels: np.ndarray, num_classes: int, source) -> None:
    """``ValueError`` naming ``source`` unless every label is in [0, num_classes) or 255 (free/ignored pixel)."""
    labels = np.asarray(labels)
    from jaxseg.validation import DEFAULT_IGNORE_INDEX, valid_mask

    bad = np.unique(labels[~valid_mask(labels, num_classes) & (labels != DEFAULT_IGNORE_INDEX)])
    if bad.size:
        raise ValueError(f"{source}: label values must be class indices in [0, {num_classes}) or 255 (ignored) for "
                         f"this {num_classes}-class model; found {bad[:10].tolist()}")


def write_image_png(path, image: np.ndarray) -> None:
    """Write (H, W, 3) float in [0, 1] as an 8-bit RGB PNG."""
    Image.fromarray(np.round(np.clip(np.asarray(image), 0, 1) * 255).astype(np.uint8)).save(path)


def load_model(*, checkpoint=None, model: str | None = None, num_classes: int | None = None,
               random_init: bool = False, image_size: tuple[int, int] = (32, 32), seed: int = 0):
    """``(logits_fn, variables, description)`` for the PAG commands: ``--checkpoint DIR`` or ``--random-init``
    with ``--model NAME --num-classes K`` (random weights initialised for ``image_size`` (H, W)), opened with
    ``jaxseg.checkpoint.load_model`` / ``open_model`` (parameter names and shapes checked; image classifiers
    refused).
    ``logits_fn`` is a hashable ``(variables, images) -> logits``."""
    from jaxseg.attacks import ModelLogits
    from jaxseg.checkpoint import load_model as load_checkpoint_model, open_model

    if (checkpoint is None) == (not random_init):
        raise ValueError("give either --checkpoint DIR or --random-init with --model NAME --num-classes K")
    if checkpoint is not None:
        network, variables, metadata = load_checkpoint_model(checkpoint, segmentation=True)
        return ModelLogits(network), variables, {"model": metadata["model"], "num_classes": int(metadata["num_classes"]),
                                                 "checkpoint": str(checkpoint)}
    if model is None or num_classes is None:
        raise ValueError("--random-init needs --model NAME and --num-classes K")
    network, variables, metadata = open_model(model, random_init=True, num_classes=num_classes, seed=seed,
                                              image_size=tuple(int(s) for s in image_size))
    return ModelLogits(network), variables, {"model": model, "num_classes": int(num_classes), "random_init": True}


def save_grid(path, panels: Sequence[tuple[str, np.ndarray]], num_classes: int) -> None:
    """A row of titled panels as a PNG (``jaxseg.figures.save_panel_grid``, 2.4 x 2.6 in per panel, 100 dpi):
    (H, W, 3) arrays are shown as RGB in [0, 1], (H, W) int arrays as label maps (class colours 0..K-1),
    (H, W) float or bool arrays as heat maps."""
    from jaxseg.figures import save_panel_grid

    save_panel_grid(path, [(None, list(panels))], num_classes=num_classes, cell_size=(2.4, 2.6), fontsize=9)


def write_json(path, values: dict) -> None:
    """Write ``values`` as indented JSON; NumPy/JAX scalars and arrays become numbers and lists, non-finite
    floats become null."""

    def plain(value):
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if hasattr(value, "tolist") and not isinstance(value, str):
            return plain(np.asarray(value).tolist())
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    Path(path).write_text(json.dumps(plain(values), indent=2) + "\n", encoding="utf-8")
