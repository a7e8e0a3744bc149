"""`jaxseg data prepare / stats / show`, run in-process."""

import json

from PIL import Image

from jaxseg.cli import main


def test_data_prepare_stats_and_show(tmp_path, capsys):
    data_dir = str(tmp_path / "tfds")
    assert main(["data", "prepare", "synthetic_shapes", "--data-dir", data_dir]) == 0
    assert "prepared synthetic_shapes in" in capsys.readouterr().out

    assert (
        main(
            [
                "data",
                "stats",
                "synthetic_shapes",
                "--data-dir",
                data_dir,
                "--split",
                "validation",
                "--json",
                str(tmp_path / "stats.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "synthetic_shapes validation: 256 examples" in out and "triangle" in out
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["num_examples"] == 256 and len(stats["frequencies"]) == 6
    assert abs(sum(stats["class_weights"].values()) - 1) < 1e-5 and stats["ignored_pixels"] == 0

    out_png = tmp_path / "grid.png"
    assert main(["data", "show", "synthetic_shapes", "--data-dir", data_dir, "--out", str(out_png), "--num", "6"]) == 0
    with Image.open(out_png) as image:
        assert image.format == "PNG" and image.width >= 300 and image.height >= 300


def test_data_errors_exit_with_code_2(tmp_path, capsys):
    assert main(["data", "show", "ade20k", "--data-dir", str(tmp_path)]) == 2
    assert "not prepared" in capsys.readouterr().err
    assert main(["data", "prepare", "voc2012_seg", "--data-dir", str(tmp_path)]) == 2
    assert "VOCdevkit/VOC2012/JPEGImages" in capsys.readouterr().err
    assert main(["data", "prepare", "cityscapes", "--data-dir", str(tmp_path), "--manual-dir", str(tmp_path)]) == 2
    assert "leftImg8bit/train" in capsys.readouterr().err
