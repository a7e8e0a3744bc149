"""Augmentation ops, evaluation protocols, Grain pipelines: determinism, host shards, Orbax restore."""

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxseg import data
from jaxseg.data.augment import eval_preprocess, train_augment
from jaxseg.data.pipeline import training_dataset

NAME = "synthetic_shapes/32px-n40-10-4-seed0"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synthetic")
    data.prepare("synthetic_shapes", data_dir=directory, image_size=32, num_train=40, num_validation=10, num_test=4)
    return directory


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


def _assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_train_augment_pads_with_ignore_label_and_image_fill():
    rng = np.random.default_rng(0)
    image = np.full((10, 12, 3), 200, np.uint8)
    label = np.full((10, 12), 3, np.uint8)
    for _ in range(10):
        # Short side at most 2 x base = 20 < crop 40: every view needs padding at the bottom/right.
        view, view_label = train_augment(image, label, rng, crop_size=40, base_size=10, image_fill=7)
        assert view.shape == (40, 40, 3) and view.dtype == np.uint8 and view_label.shape == (40, 40)
        assert set(np.unique(view_label)) == {3, 255}
        assert view[-1, -1].tolist() == [7, 7, 7]
        height, width = (view_label == 3).any(1).sum(), (view_label == 3).any(0).sum()
        assert (view_label[:height, :width] == 3).all()  # content at the top left, padding after it
        assert (view[: height - 2, : width - 2] > 150).all()  # away from the (possibly blurred) edge


def test_train_augment_keeps_label_values_and_varies():
    rng = np.random.default_rng(1)
    image = np.random.default_rng(2).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    label = np.zeros((50, 60), np.uint8)
    label[:, 30:] = 4
    label[10:20, 5:15] = 255
    views = [train_augment(image, label, rng, crop_size=32, base_size=50) for _ in range(8)]
    for _, view_label in views:
        assert set(np.unique(view_label)) <= {0, 4, 255}  # nearest-neighbour labels: no new values
    assert len({v.tobytes() for v, _ in views}) == 8


def test_sea_protocol_resizes_short_side_center_crops_and_maps_ignore_to_background():
    image = np.zeros((30, 40, 3), np.uint8)
    label = np.zeros((30, 40), np.uint8)
    label[:, 20:] = 2
    label[0, :] = 255
    view, view_label = eval_preprocess(image, label, protocol="sea", size=20, sea_ignore_label=0)
    assert view.shape == (20, 20, 3) and view_label.shape == (20, 20)
    # Resized to 20 x 26, then columns 3..22 kept: the class boundary (column 13 of 26) is at column 10.
    assert (view_label[1:, :10] == 0).all() and (view_label[1:, 10:] == 2).all()
    assert 255 not in view_label and (view_label[0] == 0).all()
    _, kept = eval_preprocess(image, label, protocol="sea", size=20, sea_ignore_label=None)
    assert (kept[0] == 255).all()


def test_standard_protocol_pads_with_ignore_and_downscales_only_large_images():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    label = rng.integers(0, 21, (30, 40), dtype=np.uint8)
    view, view_label = eval_preprocess(image, label, protocol="standard", size=64)
    np.testing.assert_array_equal(view[:30, :40], image)
    np.testing.assert_array_equal(view_label[:30, :40], label)
    assert (view_label[30:] == 255).all() and (view_label[:, 40:] == 255).all() and (view[30:] == 0).all()
    big, big_label = eval_preprocess(
        np.zeros((100, 50, 3), np.uint8), np.ones((100, 50), np.uint8), protocol="standard", size=64
    )
    assert big.shape == (64, 64, 3)
    assert (big_label[:, :32] == 1).all() and (big_label[:, 32:] == 255).all()
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        eval_preprocess(image, label, protocol="mmseg", size=64)


def test_train_iterator_batches_are_deterministic_given_the_seed(data_dir):
    kwargs = dict(data_dir=data_dir, batch_size=4, crop_size=24, base_size=32)
    first = _take(data.train_iterator(NAME, "train", seed=5, **kwargs), 3)
    again = _take(data.train_iterator(NAME, "train", seed=5, **kwargs), 3)
    other = _take(data.train_iterator(NAME, "train", seed=6, **kwargs), 3)
    _assert_batches_equal(first, again)
    assert not np.array_equal(first[0]["image"], other[0]["image"])
    batch = first[0]
    assert batch["image"].shape == (4, 24, 24, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (4, 24, 24) and batch["label"].dtype == np.int32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert set(np.unique(np.concatenate([b["label"] for b in first]))) <= set(range(6)) | {255}


def _identity_source(count):
    """Examples whose label value is their index (augment=False keeps it): batches reveal which were read."""
    return [{"image": np.zeros((8, 8, 3), np.uint8), "label": np.full((8, 8), i, np.uint8)} for i in range(count)]


def test_training_host_shards_are_disjoint_equal_and_reshuffled_each_epoch():
    source = _identity_source(31)
    epochs = {}
    for host in range(3):
        dataset = training_dataset(
            source,
            batch_size=2,
            crop_size=8,
            base_size=8,
            seed=0,
            num_epochs=2,
            process_index=host,
            process_count=3,
            augment=False,
        )
        seen = [int(i) for batch in dataset for i in batch["label"][:, 0, 0]]
        assert len(seen) == 20  # 31 // 3 = 10 per host, 2 epochs
        epochs[host] = (seen[:10], seen[10:])
        assert sorted(seen[:10]) == sorted(seen[10:]) and seen[:10] != seen[10:]
    shards = [set(epochs[h][0]) for h in range(3)]
    assert all(not (shards[a] & shards[b]) for a in range(3) for b in range(a + 1, 3))
    assert len(set.union(*shards)) == 30


def test_eval_batches_cover_the_split_once_across_hosts_with_flagged_pads(data_dir):
    source = data.open_split(NAME, "validation", data_dir)
    seen, batch_counts = [], []
    for host in range(3):
        batches = list(
            data.eval_batches(
                NAME,
                "validation",
                data_dir=data_dir,
                batch_size=3,
                protocol="sea",
                image_size=32,
                process_index=host,
                process_count=3,
            )
        )
        batch_counts.append(len(batches))
        for batch in batches:
            assert batch["image"].shape == (3, 32, 32, 3) and batch["index"].dtype == np.int32
            pads = ~batch["valid"]
            assert (batch["label"][pads] == 255).all() and (batch["index"][pads] == -1).all()
            for position in np.flatnonzero(batch["valid"]):
                index = int(batch["index"][position])
                seen.append(index)
                _, expected = eval_preprocess(source[index]["image"], source[index]["label"], protocol="sea", size=32)
                np.testing.assert_array_equal(batch["label"][position], expected)
    assert batch_counts == [2, 2, 2]  # ceil(ceil(10 / 3) / 3) on every host
    assert sorted(seen) == list(range(10))


def test_load_split_arrays_matches_eval_batches(data_dir):
    images, labels = data.load_split_arrays(
        NAME, "validation", data_dir=data_dir, protocol="standard", image_size=40, num_examples=7
    )
    assert images.shape == (7, 40, 40, 3) and images.dtype == np.float32
    assert labels.shape == (7, 40, 40) and labels.dtype == np.int32
    assert (labels[:, 32:] == 255).all() and (labels[:, :32, :32] != 255).all()
    first = next(
        data.eval_batches(NAME, "validation", data_dir=data_dir, batch_size=7, protocol="standard", image_size=40)
    )
    np.testing.assert_array_equal(images, first["image"])


def test_restored_iterator_resumes_at_the_same_batch(data_dir, tmp_path):
    kwargs = dict(data_dir=data_dir, batch_size=4, crop_size=24, base_size=32, seed=3)
    iterator = data.train_iterator(NAME, "train", **kwargs)
    _take(iterator, 8)
    manager = ocp.CheckpointManager(tmp_path / "ckpt")
    manager.save(8, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
    expected = _take(iterator, 4)  # 10 batches per epoch: these cross into the second epoch

    restored = data.train_iterator(NAME, "train", **kwargs)
    manager.restore(8, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
    _assert_batches_equal(expected, _take(restored, 4))
    manager.close()


def test_worker_processes_give_the_same_batches(data_dir):
    kwargs = dict(data_dir=data_dir, batch_size=4, crop_size=24, base_size=32, seed=9)
    in_process = _take(data.train_iterator(NAME, "train", worker_count=0, **kwargs), 3)
    with_workers = _take(data.train_iterator(NAME, "train", worker_count=2, **kwargs), 3)
    _assert_batches_equal(in_process, with_workers)


def test_bad_pipeline_arguments_are_rejected(data_dir):
    with pytest.raises(ValueError, match="fewer than one batch"):
        data.train_iterator(NAME, "validation", data_dir=data_dir, batch_size=16, crop_size=8, base_size=8, seed=0)
    with pytest.raises(ValueError, match="process_index"):
        data.eval_batches(
            NAME,
            "validation",
            data_dir=data_dir,
            batch_size=2,
            protocol="sea",
            image_size=8,
            process_index=2,
            process_count=2,
        )
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        data.eval_batches(NAME, "validation", data_dir=data_dir, batch_size=2, protocol="x", image_size=8)
    with pytest.raises(FileNotFoundError, match="not prepared"):
        data.eval_batches("ade20k", "validation", data_dir=data_dir, batch_size=2, protocol="sea", image_size=8)


def test_inverse_frequency_weights_give_empty_classes_zero():
    from jaxseg.data.stats import inverse_frequency_weights

    np.testing.assert_allclose(inverse_frequency_weights(np.array([10, 0, 30])), [0.75, 0.0, 0.25])
    with pytest.raises(ValueError, match="no labelled pixels"):
        inverse_frequency_weights(np.zeros(3))
