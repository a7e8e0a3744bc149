"""SEA's worst case over attacks: per-image aAcc minimum and the greedy dataset-pooled mIoU search."""

import itertools

import numpy as np
import pytest

from jaxseg import metrics
from jaxseg.attacks import sea_worst_case, worst_case


def _stats(predictions, labels, num_classes):
    """Stack per-attack statistics from predictions (A, N, H, W) and labels (N, H, W)."""
    parts = [metrics.per_image_statistics(p, labels, num_classes) for p in predictions]
    return metrics.PerImageStatistics(*(np.stack([np.asarray(getattr(p, f)) for p in parts])
                                        for f in metrics.PerImageStatistics._fields))


def _pooled_miou(stats, choice):
    images = np.arange(len(choice))
    intersection = np.asarray(stats.intersection)[choice, images].sum(0).astype(np.float64)
    union = np.asarray(stats.union)[choice, images].sum(0)
    return float(np.mean(intersection[union > 0] / union[union > 0]))


def test_known_answer_where_the_miou_choice_differs_from_the_accuracy_choice():
    labels = np.zeros((2, 4, 4), np.int32)
    labels[:, 0, :2] = 1  # a rare class: 2 of 16 pixels
    flip_background = labels.copy()
    flip_background[:, 3, :3] = 1  # 3 background pixels wrong: accuracy 13/16, class 1 survives
    erase_rare = np.zeros_like(labels)  # both rare pixels wrong: accuracy 14/16, class 1 IoU 0
    clean = labels.copy()
    predictions = np.stack([
        np.stack([flip_background[0], clean[1]]),  # attack 0: hurts accuracy of image 0 most
        np.stack([erase_rare[0], erase_rare[1]]),  # attack 1: erases the rare class everywhere
    ])
    stats = _stats(predictions, labels, 2)
    result = sea_worst_case(stats)
    assert result["accuracy_choice"].tolist() == [0, 1]
    assert result["choice"].tolist() == [1, 1]
    assert result["aAcc"] == pytest.approx((13 + 14) / 32)
    assert result["mIoU"] == pytest.approx(_pooled_miou(stats, np.array([1, 1])))
    assert result["mIoU"] < _pooled_miou(stats, result["accuracy_choice"])


def test_greedy_matches_exhaustive_search_on_separable_statistics():
    # Each image has its own class, so the pooled mIoU is a sum of per-image terms: greedy is optimal.
    rng = np.random.default_rng(0)
    attacks, images, size = 3, 5, 6
    labels = np.repeat(np.arange(images)[:, None, None], size, 1).repeat(size, 2).astype(np.int32)
    predictions = np.where(rng.uniform(size=(attacks, images, size, size)) < rng.uniform(0.2, 0.8, (attacks, images, 1, 1)),
                           labels[None], images)  # wrong pixels go to an extra class
    stats = _stats(predictions, labels, images + 1)
    result = worst_case(stats)
    best = min(_pooled_miou(stats, np.array(c)) for c in itertools.product(range(attacks), repeat=images))
    assert result["mIoU"] == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_worst_case_is_never_above_any_single_attack_and_is_a_local_minimum(seed):
    rng = np.random.default_rng(seed)
    attacks, images, classes = 3, 12, 4
    labels = rng.integers(0, classes, (images, 5, 5)).astype(np.int32)
    predictions = np.where(rng.uniform(size=(attacks, images, 5, 5)) < 0.5, labels[None],
                           rng.integers(0, classes, (attacks, images, 5, 5))).astype(np.int32)
    stats = _stats(predictions, labels, classes)
    result = worst_case(stats, seed=seed)
    for attack in range(attacks):
        single = {k: float(v) for k, v in metrics.scores_from_statistics(
            metrics.PerImageStatistics(*(a[attack] for a in stats))).items()}
        assert result["mIoU"] <= single["mIoU"] + 1e-6
        assert result["aAcc"] <= single["aAcc"] + 1e-6
    assert result["mIoU"] <= _pooled_miou(stats, result["accuracy_choice"]) + 1e-12
    assert result["mIoU"] == pytest.approx(_pooled_miou(stats, result["choice"]), abs=1e-12)
    for image, attack in itertools.product(range(images), range(attacks)):
        moved = result["choice"].copy()
        moved[image] = attack
        assert _pooled_miou(stats, moved) >= result["mIoU"] - 1e-6
    assert 1 <= result["rounds"] <= 1000
    assert worst_case(stats, seed=seed)["choice"].tolist() == result["choice"].tolist()  # reproducible


def test_batches_and_lists_give_the_same_answer():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, (6, 4, 4)).astype(np.int32)
    predictions = rng.integers(0, 3, (2, 6, 4, 4)).astype(np.int32)
    whole = _stats(predictions, labels, 3)
    per_attack = [metrics.PerImageStatistics(*(a[i] for a in whole)) for i in range(2)]
    assert worst_case(per_attack)["mIoU"] == worst_case(whole)["mIoU"]
    with pytest.raises(ValueError, match="stacked"):
        worst_case(per_attack[0])
