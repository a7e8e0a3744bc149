"""synthetic_shapes: deterministic scenes, every class present, balanced, not solvable by colour alone."""

import numpy as np
import pytest

from jaxseg import data
from jaxseg.data.shapes import render_scene
from jaxseg.data.storage import _make_builder


def _scenes(count, size, seed=0):
    return [render_scene(np.random.default_rng([seed, i]), size) for i in range(count)]


def test_scenes_are_deterministic_for_a_seed():
    first, again, other = _scenes(3, 48), _scenes(3, 48), _scenes(3, 48, seed=1)
    for (image, label), (image2, label2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(image, image2)
        np.testing.assert_array_equal(label, label2)
    assert not np.array_equal(first[0][0], other[0][0])
    image, label = first[0]
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert label.shape == (48, 48) and label.dtype == np.uint8


def test_classes_are_all_present_and_reasonably_balanced():
    counts = sum(np.bincount(label.ravel(), minlength=6) for _, label in _scenes(200, 64))
    frequencies = counts / counts.sum()
    assert frequencies.shape == (6,) and (frequencies > 0).all()
    assert 0.55 < frequencies[0] < 0.85  # background dominates, as in real data, but not overwhelmingly
    objects = frequencies[1:]
    assert objects.max() < 2 * objects.min()  # 200 scenes: sampling noise of ~700 objects


def test_colour_alone_does_not_solve_the_task():
    scenes = _scenes(120, 32)
    pixels = np.concatenate([image.reshape(-1, 3) for image, _ in scenes]).astype(np.float32) / 255
    labels = np.concatenate([label.ravel() for _, label in scenes])
    half = len(labels) // 2
    means = np.stack([pixels[:half][labels[:half] == k].mean(0) for k in range(6)])
    predicted = np.argmin(((pixels[half:, None] - means[None]) ** 2).sum(-1), axis=1)
    truth = labels[half:]
    ious = [((predicted == k) & (truth == k)).sum() / ((predicted == k) | (truth == k)).sum() for k in range(6)]
    assert np.mean(ious) < 0.4  # nearest class-mean colour: mIoU ~0.2


def test_prepared_splits_are_deterministic_and_sized_by_the_config(tmp_path):
    options = dict(image_size=24, num_train=12, num_validation=5, num_test=3, seed=4)
    name = data.resolve_name("synthetic_shapes", **options)
    assert name == "synthetic_shapes/24px-n12-5-3-seed4"
    contents = []
    for directory in (tmp_path / "a", tmp_path / "b"):
        data.prepare("synthetic_shapes", data_dir=directory, **options)
        splits = {}
        for split, count in (("train", 12), ("validation", 5), ("test", 3)):
            source = data.open_split(name, split, directory)
            assert len(source) == count
            splits[split] = {bytes(source[i]["id"]).decode(): source[i] for i in range(count)}
        contents.append(splits)
    for split in ("train", "validation", "test"):
        assert contents[0][split].keys() == contents[1][split].keys()
        for example_id, example in contents[0][split].items():
            np.testing.assert_array_equal(example["image"], contents[1][split][example_id]["image"])
            assert example["image"].shape == (24, 24, 3)
    assert not set(contents[0]["train"]) & set(contents[0]["validation"])


def test_synthetic_info_and_bad_options():
    info = data.dataset_info("synthetic_shapes/96px")
    assert info.num_classes == 6 and info.class_names[0] == "background" and not info.needs_manual_dir
    assert info.palette.shape == (6, 3) and info.palette.dtype == np.uint8
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        data.resolve_name("synthetic_shapes", image_size=4)
    with pytest.raises(ValueError, match="unknown option"):
        data.resolve_name("synthetic_shapes", size=32)
    with pytest.raises(ValueError, match="no config '77px'"):
        data.prepare("synthetic_shapes/77px")
    # Options that name a predefined config select it (TFDS refuses a custom config under that name).
    assert _make_builder("synthetic_shapes", "/nonexistent", image_size=96).builder_config.name == "96px"
    assert _make_builder("synthetic_shapes/32px", "/nonexistent").builder_config.image_size == 32


def test_built_in_data_is_generated_on_first_use_without_a_download_message(tmp_path, capsys):
    source = data.open_split("synthetic_shapes/32px", "validation", tmp_path)
    assert len(source) == 256 and source[0]["image"].shape == (32, 32, 3)
    assert "Downloading" not in capsys.readouterr().out
    from jaxseg.config import load_config

    assert load_config("synthetic:quick").data.name == "synthetic_shapes/32px"
