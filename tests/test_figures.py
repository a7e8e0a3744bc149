"""``jaxseg.figures.save_panel_grid``, the one figure-grid writer: PNG size from the cell size and dpi, one
axes per non-empty panel, titles where asked, every panel kind drawn, and clear errors for a bad grid.

The figure's axes and texts are read back by drawing with a patched ``Figure.savefig`` that keeps the figure.
"""

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from jaxseg import figures
from jaxseg.data import save_example_grid
from jaxseg.pag.io import save_grid

SIZE = 8
RNG = np.random.default_rng(0)
RGB_FLOAT = RNG.uniform(size=(SIZE, SIZE, 3)).astype(np.float32)
RGB_UINT8 = (RNG.uniform(size=(SIZE, SIZE, 3)) * 255).astype(np.uint8)
LABELS = RNG.integers(0, 4, (SIZE, SIZE)).astype(np.int32)
HEAT = RNG.uniform(size=(SIZE, SIZE)).astype(np.float32)


@pytest.fixture
def drawn(monkeypatch):
    """The ``Figure`` objects the writer saved, in order (the PNGs are still written)."""
    saved = []
    original = Figure.savefig

    def keep(figure, *args, **kwargs):
        saved.append(figure)
        return original(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def texts(figure: Figure) -> dict[str, list[str]]:
    """The non-empty panel titles, row labels and figure title of ``figure``."""
    axes = figure.get_axes()
    return {"titles": [a.get_title() for a in axes if a.get_title()],
            "labels": [a.get_ylabel() for a in axes if a.get_ylabel()],
            "suptitle": [figure.get_suptitle()] if figure.get_suptitle() else []}


def test_png_size_follows_cells_dpi_and_label_width(tmp_path, drawn):
    path = figures.save_panel_grid(tmp_path / "grid.png", [("a", [RGB_FLOAT, RGB_UINT8, RGB_FLOAT]),
                                                           ("b", [RGB_UINT8, RGB_FLOAT, RGB_UINT8])],
                                   cell_size=(1.5, 1.0), label_width=0.5, dpi=80)
    assert path == tmp_path / "grid.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (80 * (3 * 1.5 + 0.5), 80 * 2 * 1.0)
    assert len(drawn[0].get_axes()) == 6
    assert texts(drawn[0])["labels"] == ["a", "b"]  # on each row's first panel only


def test_titles_column_titles_and_empty_cells(tmp_path, drawn):
    rows = [(None, [("first", RGB_FLOAT), ("second", RGB_UINT8), None]), (None, [RGB_FLOAT, None, None])]
    figures.save_panel_grid(tmp_path / "titled.png", rows, title="the grid", dpi=50)
    found = texts(drawn[0])
    assert len(drawn[0].get_axes()) == 3  # no axes for the empty cells
    assert found == {"titles": ["first", "second"], "labels": [], "suptitle": ["the grid"]}
    assert not any(axes.axison for axes in drawn[0].get_axes())  # no row labels: panels without axes
    with Image.open(tmp_path / "titled.png") as image:
        assert image.size == (50 * 3 * 2.0, 50 * 2 * 2.0)

    figures.save_panel_grid(tmp_path / "columns.png", [("row", [RGB_FLOAT, RGB_FLOAT]), ("row 2", [RGB_FLOAT, None])],
                            column_titles=("left", "right"))
    assert texts(drawn[1])["titles"] == ["left", "right"]  # above the first row only
    assert all(axes.axison for axes in drawn[1].get_axes())  # row labels keep the frames


def test_label_and_heat_maps(tmp_path, drawn):
    panels = [("image", RGB_FLOAT), ("labels", LABELS), ("ignored", np.full((SIZE, SIZE), 255, np.int32)),
              ("heat", HEAT), ("mask", HEAT > 0.5)]
    figures.save_panel_grid(tmp_path / "maps.png", [(None, panels)], num_classes=4)
    images = [axes.get_images()[0] for axes in drawn[0].get_axes()]
    assert [image.get_cmap().name for image in images[1:]] == ["tab10", "tab10", "magma", "magma"]
    assert images[1].get_clim() == (0, 3)
    assert np.array_equal(images[2].get_array(), np.full((SIZE, SIZE), -1))  # outside 0..K-1: below the range
    figures.save_panel_grid(tmp_path / "many.png", [(None, [LABELS])], num_classes=12)
    assert drawn[1].get_axes()[0].get_images()[0].get_cmap().name == "tab20"


def test_rgb_panels_are_clipped_to_their_range(tmp_path, drawn):
    figures.save_panel_grid(tmp_path / "clip.png", [(None, [RGB_FLOAT * 3 - 1, RGB_UINT8])])
    first, second = (axes.get_images()[0].get_array() for axes in drawn[0].get_axes())
    assert first.min() >= 0 and first.max() <= 1
    assert np.array_equal(second, RGB_UINT8)


@pytest.mark.parametrize("rows, options, message", [
    ([], {}, "at least one row"),
    ([(None, [])], {}, "at least one panel per row"),
    ([(None, [RGB_FLOAT, RGB_FLOAT]), (None, [RGB_FLOAT])], {}, r"same number of panels \(pad with None\); got rows "
                                                                r"of \[2, 1\]"),
    ([(None, [RGB_FLOAT, RGB_FLOAT])], {"column_titles": ["one"]}, "2 columns, 1 titles"),
    ([(None, [np.zeros((SIZE, SIZE, 4))])], {}, r"\(H, W, 3\) RGB image or an \(H, W\) label or heat map; got shape "
                                                r"\(8, 8, 4\)"),
    ([(None, [np.zeros(SIZE)])], {}, r"got shape \(8,\)"),
    ([(None, [LABELS])], {}, "label-map panel .* needs num_classes"),
])
def test_bad_grids_are_refused(tmp_path, rows, options, message):
    with pytest.raises(ValueError, match=message):
        figures.save_panel_grid(tmp_path / "bad.png", rows, **options)
    assert not (tmp_path / "bad.png").exists()


def test_the_adapters_write_through_the_grid_writer(tmp_path, drawn):
    save_grid(tmp_path / "pag.png", [("seed", RGB_FLOAT), ("target", LABELS), ("saliency", HEAT)], 4)
    with Image.open(tmp_path / "pag.png") as image:
        assert image.size == (round(100 * 3 * 2.4), 100 * 2.6)
    assert texts(drawn[0])["titles"] == ["seed", "target", "saliency"]

    palette = np.asarray([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    out = save_example_grid([RGB_UINT8] * 5, [LABELS] * 5, palette, str(tmp_path / "new" / "examples.png"),
                            titles=[f"#{i}" for i in range(5)], columns=3)
    assert out == str(tmp_path / "new" / "examples.png")
    with Image.open(out) as image:  # 2 rows of 3 examples, each an image above its label map, 2.2 in each
        assert image.size == (round(100 * 3 * 2.2), round(100 * 4 * 2.2))
    assert len(drawn[1].get_axes()) == 10 and texts(drawn[1])["titles"] == [f"#{i}" for i in range(5)]
    coloured = drawn[1].get_axes()[3].get_images()[0].get_array()  # the first label map, in palette colours
    assert np.array_equal(coloured, palette[LABELS])
