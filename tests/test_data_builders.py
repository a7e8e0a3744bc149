"""TFDS builders on small fake archives in the official on-disk formats; bad manual directories."""

import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxseg import data
from jaxseg.data.builders.cityscapes import train_id_table
from jaxseg.data.decode import read_label_png
from jaxseg.data.fake_archives import write_fake_ade20k, write_fake_cityscapes, write_fake_voc, write_voc_palette_png

VOC_IDS = {
    "voc_train": ["2007_000032", "2007_000039", "2008_000002"],
    "voc_val": ["2007_000033", "2008_000009"],
    # 2007_000032 is in VOC train and SBD (VOC's label wins); 2007_000033 is in SBD but VOC val (excluded).
    "sbd_train": ["2007_000032", "2008_000010", "2008_000011", "2007_000033"],
    "sbd_val": ["2008_000012"],
}
TRAIN_AUG = ["2007_000032", "2007_000039", "2008_000002", "2008_000010", "2008_000011", "2008_000012"]


def _examples(name, split, data_dir):
    source = data.open_split(name, split, data_dir)
    return {bytes(source[i]["id"]).decode(): source[i] for i in range(len(source))}


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    manual_dir = tmp_path_factory.mktemp("voc_manual")
    data_dir = tmp_path_factory.mktemp("voc_data")
    labels = write_fake_voc(str(manual_dir), **VOC_IDS)
    data.prepare("voc2012_seg", data_dir=data_dir, manual_dir=manual_dir)
    return data_dir, labels


def test_voc_splits_hold_the_expected_examples(voc):
    data_dir, labels = voc
    expected = {"train": VOC_IDS["voc_train"], "validation": VOC_IDS["voc_val"], "train_aug": TRAIN_AUG}
    for split, ids in expected.items():
        examples = _examples("voc2012_seg", split, data_dir)
        assert sorted(examples) == sorted(ids), split
        for example_id, example in examples.items():
            assert example["image"].dtype == np.uint8 and example["label"].dtype == np.uint8
            assert example["image"].shape == example["label"].shape + (3,)
            np.testing.assert_array_equal(example["label"], labels[example_id])
            assert set(np.unique(example["label"])) <= set(range(21)) | {255}


def test_registered_builders_read_with_tfds_data_source(voc):
    import tensorflow_datasets as tfds

    source = tfds.data_source("voc2012_seg", split="validation", data_dir=voc[0], download=False)
    assert sorted(bytes(source[i]["id"]).decode() for i in range(len(source))) == sorted(VOC_IDS["voc_val"])


def test_voc_labels_come_from_the_right_annotation(voc):
    data_dir, _ = voc
    train_aug = _examples("voc2012_seg", "train_aug", data_dir)
    # VOC palette PNGs carry 255 boundaries, SBD .mat files never do.
    assert 255 in train_aug["2007_000032"]["label"]  # VOC train id also in SBD: VOC's PNG is used
    assert 255 not in train_aug["2008_000010"]["label"]  # SBD only: GTcls.Segmentation
    assert train_aug["2008_000010"]["label"].max() > 0


def test_voc_class_weights_exclude_boundary_pixels(voc):
    data_dir, labels = voc
    counts = np.zeros(21)
    for example_id in VOC_IDS["voc_train"]:
        counts += np.bincount(labels[example_id].ravel(), minlength=256)[:21]
    stats = data.split_statistics("voc2012_seg", "train", data_dir=data_dir)
    np.testing.assert_array_equal(stats.pixel_counts, counts)
    assert stats.ignored_pixels == sum(int((labels[i] == 255).sum()) for i in VOC_IDS["voc_train"])
    weights = data.class_weights("voc2012_seg", "train", data_dir=data_dir)
    present = counts > 0
    assert weights.shape == (21,) and weights.dtype == np.float32
    assert weights.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(weights[~present], 0.0)
    products = weights[present] * counts[present]  # w_c * N_c is the same for every present class
    np.testing.assert_allclose(products, products[0], rtol=1e-5)


def test_preparing_and_reading_need_no_tensorflow(voc):
    assert importlib.util.find_spec("tensorflow") is None
    assert "tensorflow" not in sys.modules


def test_palette_and_rgb_label_pngs_decode_to_class_indices(tmp_path):
    label = np.array([[0, 1, 15, 255], [20, 0, 255, 7]], np.uint8)
    write_voc_palette_png(str(tmp_path / "palette.png"), label)
    with Image.open(tmp_path / "palette.png") as image:
        assert image.mode == "P"
    np.testing.assert_array_equal(read_label_png(str(tmp_path / "palette.png")), label)
    Image.fromarray(data.colorize(label, data.label_colormap(21))).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_label_png(str(tmp_path / "rgb.png")), label)
    Image.fromarray(np.full((2, 2, 3), 17, np.uint8)).save(tmp_path / "foreign.png")
    with pytest.raises(ValueError, match="foreign.png"):
        read_label_png(str(tmp_path / "foreign.png"))


def test_voc_colormap_and_colorize():
    palette = data.label_colormap(256)
    assert palette[1].tolist() == [128, 0, 0] and palette[15].tolist() == [192, 128, 128]
    assert palette[255].tolist() == [224, 224, 192]
    np.testing.assert_array_equal(data.dataset_info("voc2012_seg").palette, palette[:21])
    colored = data.colorize(np.array([[1, 255]]), data.dataset_info("voc2012_seg").palette)
    assert colored.shape == (1, 2, 3) and colored[0, 0].tolist() == [128, 0, 0]
    assert colored[0, 1].tolist() == [224, 224, 192]


def test_ade20k_labels_are_stored_raw(tmp_path):
    labels = write_fake_ade20k(str(tmp_path / "manual"), num_train=3, num_validation=2)
    data.prepare("ade20k", data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    assert data.dataset_info("ade20k").num_classes == 151
    for split, count in (("train", 3), ("validation", 2)):
        examples = _examples("ade20k", split, tmp_path / "data")
        assert len(examples) == count
        for example_id, example in examples.items():
            np.testing.assert_array_equal(example["label"], labels[example_id])
            assert example["label"].max() <= 150


def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    manual = tmp_path / "manual"
    labels = write_fake_cityscapes(
        str(manual), cities={"train": ("aachen", "bochum"), "val": ("frankfurt",)}, per_city=2
    )
    # One hand-made map with the ids the mapping must get right.
    stem = "aachen_000000_000019"
    height, width = labels[stem].shape
    crafted = np.resize(np.array([7, 26, 0, 33, 24, 5, 255, 1], np.uint8), (height, width))
    Image.fromarray(crafted).save(manual / "gtFine/train/aachen" / f"{stem}_gtFine_labelIds.png")
    data.prepare("cityscapes", data_dir=tmp_path / "data", manual_dir=manual)
    train = _examples("cityscapes", "train", tmp_path / "data")
    assert sorted(train) == sorted(k for k in labels if not k.startswith("frankfurt"))
    assert len(_examples("cityscapes", "validation", tmp_path / "data")) == 2
    mapped = train[stem]["label"]
    for label_id, train_id in ((7, 0), (26, 13), (0, 255), (33, 18), (24, 11), (5, 255), (255, 255), (1, 255)):
        assert set(np.unique(mapped[crafted == label_id])) == {train_id}, label_id
    for example_id, example in train.items():
        if example_id != stem:
            np.testing.assert_array_equal(example["label"], train_id_table()[labels[example_id]])
            assert set(np.unique(example["label"])) <= set(range(19)) | {255}


def test_voc_without_sbd_prepares_train_and_validation(tmp_path):
    manual = tmp_path / "manual"
    labels = write_fake_voc(str(manual), **VOC_IDS, with_sbd=False)
    data.prepare("voc2012_seg", data_dir=tmp_path / "data", manual_dir=manual)
    for split, ids in (("train", VOC_IDS["voc_train"]), ("validation", VOC_IDS["voc_val"])):
        examples = _examples("voc2012_seg", split, tmp_path / "data")
        assert sorted(examples) == sorted(ids)
        for example_id, example in examples.items():
            np.testing.assert_array_equal(example["label"], labels[example_id])
    with pytest.raises(ValueError, match="no split 'train_aug'"):
        data.open_split("voc2012_seg", "train_aug", tmp_path / "data")


def test_missing_manual_dir_lists_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        data.prepare("voc2012_seg", data_dir=tmp_path / "data", manual_dir=tmp_path / "absent")
    for path in (
        "VOCdevkit/VOC2012/JPEGImages",
        "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt",
        "VOCdevkit/VOC2012/SegmentationClass",
    ):
        assert path in str(error.value)
    with pytest.raises(ValueError, match="manual_dir"):
        data.prepare("ade20k", data_dir=tmp_path / "data")


def test_incomplete_manual_dir_names_what_is_missing(tmp_path):
    manual = tmp_path / "manual"
    write_fake_voc(str(manual), **VOC_IDS)
    os.remove(manual / "benchmark_RELEASE/dataset/val.txt")
    with pytest.raises(FileNotFoundError, match="missing:\n  benchmark_RELEASE/dataset/val.txt\nexpected"):  # partial SBD
        data.prepare("voc2012_seg", data_dir=tmp_path / "data", manual_dir=manual)
    shutil.rmtree(manual / "benchmark_RELEASE")
    write_fake_voc(str(manual), **VOC_IDS)
    os.remove(manual / "VOCdevkit/VOC2012/SegmentationClass/2008_000009.png")
    with pytest.raises(FileNotFoundError, match="SegmentationClass/2008_000009.png"):
        data.prepare("voc2012_seg", data_dir=tmp_path / "data", manual_dir=manual)


def test_failed_prepare_leaves_nothing_trusted_and_a_retry_succeeds(tmp_path):
    manual, data_dir = tmp_path / "manual", tmp_path / "data"
    write_fake_ade20k(str(manual), num_train=4, num_validation=2)
    corrupt = manual / "ADEChallengeData2016/images/validation/ADE_val_00000002.jpg"
    good_bytes = corrupt.read_bytes()
    corrupt.write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(ValueError, match="ADE_val_00000002.jpg"):
        data.prepare("ade20k", data_dir=data_dir, manual_dir=manual)
    with pytest.raises(FileNotFoundError, match="not prepared"):
        data.open_split("ade20k", "train", data_dir)
    corrupt.write_bytes(good_bytes)
    data.prepare("ade20k", data_dir=data_dir, manual_dir=manual)
    assert len(data.open_split("ade20k", "train", data_dir)) == 4
    assert len(data.open_split("ade20k", "validation", data_dir)) == 2


def test_image_and_label_of_different_sizes_name_both_files(tmp_path):
    manual = tmp_path / "manual"
    write_fake_ade20k(str(manual), num_train=1, num_validation=1, size=(20, 30))
    label_path = manual / "ADEChallengeData2016/annotations/training/ADE_train_00000001.png"
    Image.fromarray(np.zeros((21, 30), np.uint8)).save(label_path)
    with pytest.raises(ValueError, match="ADE_train_00000001.jpg.*ADE_train_00000001.png"):
        data.prepare("ade20k", data_dir=tmp_path / "data", manual_dir=manual)


def test_unknown_names_options_and_splits_are_rejected(tmp_path, voc):
    with pytest.raises(ValueError, match="known datasets: voc2012_seg, ade20k, cityscapes, synthetic_shapes"):
        data.dataset_info("pascal")
    with pytest.raises(ValueError, match="takes no builder options"):
        data.prepare("ade20k", data_dir=tmp_path, manual_dir=tmp_path, image_size=32)
    with pytest.raises(ValueError, match="has no split 'test'"):
        data.open_split("voc2012_seg", "test", voc[0])


def test_import_survives_tfds_own_cityscapes_builder_being_loaded_first(tmp_path):
    # TFDS registers its own `cityscapes` lazily; jaxseg must still import and read after it was loaded.
    script = (
        "import tensorflow_datasets as tfds\n"
        f"tfds.builder('cityscapes', data_dir={str(tmp_path)!r})\n"
        "import jaxseg.data\n"
        "print(jaxseg.data.dataset_info('cityscapes').num_classes)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "19"
