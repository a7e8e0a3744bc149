"""The one writer of PNG figure grids: rows of image panels, optionally titled per column, per panel and per row.

``save_panel_grid`` draws every image grid of the package (the quickstart's adversarial-example, generation and
inpainting figures, the PAG commands' grids, ``jaxseg data show``). It uses matplotlib's object API (a ``Figure``
on its own Agg canvas), so it changes no global matplotlib backend. It imports only NumPy and matplotlib: it
sits at the bottom of the import graph, and callers colour their label maps with a palette
(``jaxseg.data.colorize``) before they pass them, or pass class indices with ``num_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def save_panel_grid(path, rows: Sequence[tuple[str | None, Sequence]], *, title: str | None = None,
                    column_titles: Sequence[str] | None = None, num_classes: int | None = None,
                    cell_size: tuple[float, float] = (2.0, 2.0), label_width: float = 0.0, fontsize: float = 8,
                    dpi: int = 100) -> Path:
    """Write a grid of image panels as a PNG at ``path`` (its directory must exist) and return ``Path(path)``.

    Args:
      rows: ``(row label or None, panels)`` per grid row, every row with the same number of panels. A panel is
        an array, a ``(title, array)`` pair (the title above that panel) or None (an empty cell). Arrays:
        (H, W, 3) RGB, uint8 in [0, 255] or float in [0, 1] (clipped to the range); (H, W) int a label map of
        class indices, drawn in the ``tab10`` (``tab20`` above 10 classes) colours of 0..num_classes-1 (other
        values, e.g. the ignore label 255, in the colour of class 0); (H, W) float or bool a heat map
        (``magma``).
      title: the figure's title, above the grid (font ``fontsize`` + 1).
      column_titles: one title per column, above the first row's panels.
      num_classes: classes of the label-map panels (required when there is one).
      cell_size: (width, height) of one grid cell in inches.
      label_width: extra figure width in inches, room for the row labels.
      fontsize: size in points of the column, panel and row titles.
      dpi: pixels per inch of the PNG, which is ``dpi * (columns * width + label_width)`` by
        ``dpi * rows * height`` pixels (rounded). The layout is made at 100 dpi and the PNG is that figure
        scaled, so fonts and margins keep their share of the figure at any ``dpi``.

    A row label is written to the left of the row's first panel; when any row has one, every panel keeps its
    frame (without ticks), otherwise panels are drawn without axes. ``ValueError`` for an empty grid, rows of
    different lengths, a ``column_titles`` of the wrong length, an array of another shape, or a label map
    without ``num_classes``.
    """
    columns = _check_grid(rows, column_titles)
    framed = any(label is not None for label, _ in rows)
    width, height = cell_size
    figure = Figure(figsize=(width * columns + label_width, height * len(rows)), dpi=100)
    FigureCanvasAgg(figure)
    for row, (label, panels) in enumerate(rows):
        for column, panel in enumerate(panels):
            if panel is None:
                continue
            panel_title, array = panel if isinstance(panel, tuple) else (None, panel)
            if row == 0 and column_titles is not None:
                panel_title = column_titles[column]
            axes = figure.add_subplot(len(rows), columns, row * columns + column + 1)
            _draw(axes, np.asarray(array), num_classes)
            if framed:
                axes.set_xticks([]), axes.set_yticks([])
            else:
                axes.set_axis_off()
            if panel_title is not None:
                axes.set_title(panel_title, fontsize=fontsize)
            if column == 0 and label is not None:
                axes.set_ylabel(label, fontsize=fontsize)
    if title is not None:
        figure.suptitle(title, fontsize=fontsize + 1)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=dpi)
    return Path(path)


def _check_grid(rows, column_titles) -> int:
    """The number of columns of ``rows``; ``ValueError`` naming what is wrong with the grid."""
    if len(rows) == 0:
        raise ValueError("a figure grid needs at least one row of panels; got no rows")
    lengths = [len(panels) for _, panels in rows]
    if lengths[0] == 0:
        raise ValueError("a figure grid needs at least one panel per row; the first row has none")
    if len(set(lengths)) > 1:
        raise ValueError(f"every row of a figure grid needs the same number of panels (pad with None); got "
                         f"rows of {lengths} panels")
    if column_titles is not None and len(column_titles) != lengths[0]:
        raise ValueError(f"need one column title per column: {lengths[0]} columns, {len(column_titles)} titles")
    return lengths[0]


def _draw(axes, panel: np.ndarray, num_classes: int | None) -> None:
    """Show one panel (an RGB image, a label map or a heat map; see ``save_panel_grid``) on ``axes``."""
    if panel.ndim == 3 and panel.shape[-1] == 3:
        axes.imshow(np.clip(panel, 0, 255 if panel.dtype == np.uint8 else 1), interpolation="nearest")
    elif panel.ndim != 2:
        raise ValueError(f"a panel must be an (H, W, 3) RGB image or an (H, W) label or heat map; got shape "
                         f"{panel.shape}")
    elif np.issubdtype(panel.dtype, np.integer):
        if num_classes is None:
            raise ValueError("a label-map panel (an (H, W) int array) needs num_classes")
        axes.imshow(np.where(panel < num_classes, panel, -1), cmap="tab10" if num_classes <= 10 else "tab20",
                    vmin=0, vmax=max(num_classes - 1, 1), interpolation="nearest")
    else:
        axes.imshow(panel.astype(np.float32), cmap="magma", interpolation="nearest")
