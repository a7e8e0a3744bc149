"""SEA as published around the attacks: class weights by dataset, protocols by dataset, what results record."""

import json

import numpy as np
import pytest

from jaxseg import data
from jaxseg.cli import main
from jaxseg.data.fake_archives import write_fake_voc
from jaxseg.data.loss_weights import CLASS_WEIGHTS_FILE

VOC_TABLE_BACKGROUND, VOC_TABLE_PERSON = 0.0007, 0.0089


def test_published_tables_are_the_defaults_for_voc_and_ade20k():
    voc = data.dataset_class_weights("voc2012_seg")
    ade = data.dataset_class_weights("ade20k")
    assert voc.values.shape == (21,) and ade.values.shape == (151,)
    assert voc.values[0] == pytest.approx(VOC_TABLE_BACKGROUND) and voc.values[15] == pytest.approx(VOC_TABLE_PERSON)
    assert voc.values.sum() == pytest.approx(1.0, abs=1e-6) and ade.values.sum() == pytest.approx(1.0, abs=1e-5)
    assert "reference table" in voc.source and voc.mode == "dataset"
    assert data.dataset_info("ade20k").class_names[0] == "other"  # the reference's 151-class labelling
    assert data.default_eval_view("voc2012_seg", "sea") == ("sea", 473)
    assert data.default_eval_view("ade20k", "sea") == ("sea", 512)
    assert data.default_eval_view("voc2012_seg", "apgd") == ("standard", 512)
    assert data.default_eval_view("synthetic_shapes/32px", "sea") == ("standard", 32)
    assert data.default_eval_view("voc2012_seg", "sea", "standard", 300) == ("standard", 300)


def test_training_split_weights_are_computed_once_and_stored(tmp_path, capsys):
    directory = tmp_path / "data"
    options = dict(image_size=16, num_train=12, num_validation=4, num_test=2)
    data.prepare("synthetic_shapes", data_dir=directory, **options)
    name = data.resolve_name("synthetic_shapes", **options)
    assert data.default_eval_view(name, "sea") == ("standard", 16)
    weights = data.dataset_class_weights(name, directory)
    counts = data.split_statistics(name, "train", data_dir=directory).pixel_counts
    present = counts > 0
    np.testing.assert_allclose(weights.values[present] * counts[present], (weights.values[present] * counts[present])[0],
                               rtol=1e-5)  # w_c ∝ 1 / n_c
    assert weights.values.sum() == pytest.approx(1.0, abs=1e-6) and np.all(weights.values[~present] == 0)
    stored = data.storage.prepared_directory(name, directory) / CLASS_WEIGHTS_FILE
    record = json.loads(stored.read_text())
    assert record["split"] == "train" and record["pixel_counts"] == counts.tolist()
    # Later uses read the stored file rather than counting again.
    record["class_weights"] = [1.0] + [0.0] * 5
    stored.write_text(json.dumps(record))
    assert data.dataset_class_weights(name, directory).values.tolist() == [1.0] + [0.0] * 5
    assert main(["data", "stats", name, "--data-dir", str(directory)]) == 0
    out = capsys.readouterr().out
    assert CLASS_WEIGHTS_FILE in out and "background" in out


@pytest.mark.parametrize("content, message", [
    ([0.5, 0.5], "must be a list of 21 numbers"),
    ([-0.1] + [0.055] * 20, "must be >= 0"),
    ("not json", "not valid JSON"),
    ([0.0] * 21, "sum to 0"),
])
def test_bad_weights_files_are_refused_naming_the_file(tmp_path, capsys, content, message):
    path = tmp_path / "weights.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    code = main(["evaluate", "--model", "upernet_convnext_atto", "--random-init", "--dataset", "voc2012_seg",
                 "--data-dir", str(tmp_path / "unprepared"), "--class-weights", str(path), "--out", str(tmp_path / "o")])
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and str(path) in error


@pytest.mark.slow
def test_cli_sea_on_voc_uses_the_published_weights_and_protocol(tmp_path):
    manual = tmp_path / "manual"
    write_fake_voc(str(manual), voc_train=["2007_000032"], voc_val=["2007_000033", "2008_000009"], sbd_train=[],
                   sbd_val=[], size=(40, 60), with_sbd=False)
    data.prepare("voc2012_seg", data_dir=tmp_path / "data", manual_dir=manual)
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", "upernet_convnext_atto", "--random-init", "--dataset", "voc2012_seg",
                 "--data-dir", str(tmp_path / "data"), "--eps", "4/255", "--iterations", "3", "--batch-size", "2",
                 "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"] == {"dataset": "voc2012_seg", "split": "validation", "protocol": "sea", "image_size": 473}
    weights = results["class_weights"]
    assert weights["mode"] == "dataset" and "reference table" in weights["source"]
    assert weights["values"][0] == pytest.approx(VOC_TABLE_BACKGROUND)
    row = results["robust"][0]
    for key in ("aAcc", "aAcc_per_image", "mIoU", "mIoU_greedy", "mAcc"):
        assert 0 <= row[key] <= 1, key
    # Under the SEA protocol every pixel is labelled (VOC's 255 counts as background), so both aAcc forms agree.
    assert row["aAcc_per_image"] == pytest.approx(row["aAcc"], abs=1e-9)
    assert results["num_examples"] == 2
    table = (out / "results.md").read_text()
    assert "protocol sea" in table and "image_size 473" in table and "mIoU greedy" in table
