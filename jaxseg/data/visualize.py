"""PNG grids of images with their coloured label maps (``jaxseg.figures.save_panel_grid``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from jaxseg.data.info import colorize
from jaxseg.figures import save_panel_grid


def save_example_grid(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    palette: np.ndarray,
    path: str,
    titles: Sequence[str] | None = None,
    columns: int = 4,
) -> str:
    """Writes a PNG with each image (uint8 (H, W, 3) or float [0, 1]) above its label map (int (H, W)) coloured
    with ``palette`` ((K, 3) uint8; ``jaxseg.data.colorize``), 2.2 x 2.2 in per panel at 100 dpi.

    Examples are laid out ``columns`` per row; ``titles`` (optional) label each example. The directory of
    ``path`` is created. Returns ``path``.
    """
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need as many labels as images (at least one), got {len(images)} and {len(labels)}")
    columns = max(1, min(columns, len(images)))
    rows = []
    for start in range(0, len(images), columns):
        chosen = range(start, min(start + columns, len(images)))
        padding = [None] * (columns - len(chosen))
        pictures = [images[i] if titles is None else (titles[i], images[i]) for i in chosen]
        rows += [(None, pictures + padding), (None, [colorize(labels[i], palette) for i in chosen] + padding)]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_panel_grid(path, rows, cell_size=(2.2, 2.2), fontsize=7)
    return path
