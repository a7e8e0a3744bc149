"""`jaxseg generate / inpaint / saliency` in-process on tiny PNGs with a randomly initialised model."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxseg import cli

SIZE = 32
MODEL = ["--random-init", "--model", "upernet_convnext_atto", "--num-classes", "3"]


@pytest.fixture()
def pngs(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.uniform(size=(SIZE, SIZE, 3)) * 255).astype(np.uint8)).save(tmp_path / "image.png")
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[8:20, 10:24] = 2
    label[22:30, 2:12] = 1
    Image.fromarray(label).save(tmp_path / "label.png")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[10:18, 12:20] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(mask[:16, :16]).save(tmp_path / "small_mask.png")
    return tmp_path


def test_generate_inpaint_and_saliency_write_grids_and_numbers(pngs, capsys):
    out = pngs / "out"
    assert cli.main(["generate", "--target", str(pngs / "label.png"), "--steps", "4", "--out", str(out / "g"), *MODEL]) == 0
    generated = json.loads((out / "g" / "generate.json").read_text())
    assert 0.0 <= generated["target_accuracy"] <= 1.0
    assert np.isfinite(generated["loss"]) and generated["loss"] <= generated["initial_loss"]
    assert Image.open(out / "g" / "generated.png").size == (SIZE, SIZE)

    assert cli.main(["inpaint", "--image", str(pngs / "image.png"), "--mask", str(pngs / "mask.png"), "--label",
                     str(pngs / "label.png"), "--mode", "hard", "--steps", "4", "--out", str(out / "i"), *MODEL]) == 0
    inpainted = json.loads((out / "i" / "inpaint.json").read_text())
    assert inpainted["max_visible_change"] <= 1 / 255 / 2  # only PNG rounding of the input
    assert inpainted["mask_fraction"] == pytest.approx(64 / SIZE**2)
    assert inpainted["region_psnr_db"] > 0 and 0.0 <= inpainted["label_accuracy"] <= 1.0

    assert cli.main(["saliency", "--image", str(pngs / "image.png"), "--class", "2", "--label", str(pngs / "label.png"),
                     "--out", str(out / "s"), *MODEL]) == 0
    explained = json.loads((out / "s" / "saliency.json").read_text())
    y0, x0, y1, x1 = explained["box"]
    assert 0 <= y0 < y1 <= SIZE and 0 <= x0 < x1 <= SIZE
    assert explained["object_box"] == [8, 10, 20, 24]
    assert 0.0 <= explained["box_iou"] <= 1.0 and isinstance(explained["pointing_hit"], bool)
    for name in ("g/generate.png", "i/inpaint.png", "s/saliency.png"):
        assert (out / name).stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out


def test_bad_inputs_are_reported(pngs, capsys):
    code = cli.main(["inpaint", "--image", str(pngs / "image.png"), "--mask", str(pngs / "small_mask.png"),
                     "--label", str(pngs / "label.png"), "--out", str(pngs / "o"), *MODEL])
    assert code == 2 and "mask is 16x16 but the image is 32x32" in capsys.readouterr().err
    code = cli.main(["saliency", "--image", str(pngs / "image.png"), "--out", str(pngs / "o"), *MODEL])
    assert code == 2 and "--class" in capsys.readouterr().err
    code = cli.main(["generate", "--target", str(pngs / "label.png"), "--random-init", "--out", str(pngs / "o")])
    assert code == 2 and "--model NAME" in capsys.readouterr().err
    code = cli.main(["generate", "--target", str(pngs / "missing.png"), "--out", str(pngs / "o"), *MODEL])
    assert code == 2 and "no such file" in capsys.readouterr().err
