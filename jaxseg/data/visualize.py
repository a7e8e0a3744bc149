"""PNG grids of images with their coloured label maps (matplotlib's Agg canvas; no global backend change)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxseg.data.info import colorize


def save_example_grid(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    palette: np.ndarray,
    path: str,
    titles: Sequence[str] | None = None,
    columns: int = 4,
) -> str:
    """Writes a PNG with each image (uint8 (H, W, 3) or float [0, 1]) above its coloured label map.

    Examples are laid out ``columns`` per row; ``titles`` (optional) label each example. Returns ``path``.
    """
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need as many labels as images (at least one), got {len(images)} and {len(labels)}")
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    figure = Figure(figsize=(2.2 * columns, 4.4 * rows), dpi=100)
    FigureCanvasAgg(figure)
    for position, (image, label) in enumerate(zip(images, labels, strict=True)):
        row, column = divmod(position, columns)
        for offset, picture in enumerate((image, colorize(label, palette))):
            axes = figure.add_subplot(2 * rows, columns, (2 * row + offset) * columns + column + 1)
            axes.imshow(picture, interpolation="nearest")
            axes.set_axis_off()
            if offset == 0 and titles is not None:
                axes.set_title(titles[position], fontsize=7)
    figure.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, format="png")
    return path
