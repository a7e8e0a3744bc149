"""SEA's worst case over attacks: per-image aAcc minimum, the reference code's mIoU search and jaxseg's greedy one."""

import itertools
import random
import statistics

import numpy as np
import pytest

from jaxseg import metrics
from jaxseg.attacks import worst_case


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
    result = worst_case(stats, rule="greedy")
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
    result = worst_case(stats, rule="greedy")
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
    result = worst_case(stats, rule="greedy", seed=seed)
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
    assert worst_case(stats, rule="greedy", seed=seed)["choice"].tolist() == result["choice"].tolist()  # reproducible


def test_batches_and_lists_give_the_same_answer():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, (6, 4, 4)).astype(np.int32)
    predictions = rng.integers(0, 3, (2, 6, 4, 4)).astype(np.int32)
    whole = _stats(predictions, labels, 3)
    per_attack = [metrics.PerImageStatistics(*(a[i] for a in whole)) for i in range(2)]
    assert worst_case(per_attack)["mIoU"] == worst_case(whole)["mIoU"]
    with pytest.raises(ValueError, match="stacked"):
        worst_case(per_attack[0])


def _raw_stats(intersection, union, correct=None, labelled=None):
    """Statistics (A, N, ...) from per-attack, per-image intersections and unions (A, N, K)."""
    intersection, union = np.asarray(intersection, np.int64), np.asarray(union, np.int64)
    correct = intersection.sum(-1) if correct is None else np.asarray(correct, np.int64)
    labelled = np.broadcast_to(union.max(0).sum(-1), correct.shape) if labelled is None else np.asarray(labelled)
    return metrics.PerImageStatistics(correct, labelled, intersection, union, np.broadcast_to(union.max(0), union.shape))


def test_reference_rule_keeps_the_last_improving_attack_where_greedy_takes_the_best():
    # One image, one class: IoU 0.5 / 0.1 / 0.3 under attacks 0 / 1 / 2. The reference search compares each
    # candidate with the mIoU before the image (0.5): attack 1 (0.1) is accepted, then attack 2 (0.3 < 0.5)
    # replaces it; in round 2 attack 2 is re-accepted after 1 (0.3 (1 - 1e-8/10) < 0.3), so it stays at 0.3.
    stats = _raw_stats([[[5]], [[1]], [[3]]], [[[10]], [[10]], [[10]]])
    reference = worst_case(stats)
    greedy = worst_case(stats, rule="greedy")
    assert reference["rule"] == "reference" and reference["choice"].tolist() == [2]
    assert reference["mIoU"] == pytest.approx(0.3, abs=1e-15)
    assert reference["rounds"] == 2
    assert greedy["choice"].tolist() == [1] and greedy["mIoU"] == pytest.approx(0.1, abs=1e-15)


def test_reference_rule_on_two_images_by_hand():
    # Two images, two classes (rows: attack, image, class).
    intersection = [[[6, 2], [6, 2]], [[2, 2], [6, 0]]]
    union = [[[10, 4], [10, 4]], [[10, 4], [10, 4]]]
    stats = _raw_stats(intersection, union)
    result = worst_case(stats)
    # Start (both on attack 0): class IoUs 12/20, 4/8 → 0.55. Switching image 0 to attack 1 gives
    # (8/20 + 4/8)/2 = 0.45; switching image 1 gives (12/20 + 2/8)/2 = 0.425; both switches give
    # (8/20 + 2/8)/2 = 0.325. Each switch lowers the mIoU whichever image comes first, so both images end on
    # attack 1 in round 1; round 2 only re-accepts the current choices and the search stops.
    assert result["choice"].tolist() == [1, 1]
    assert result["mIoU"] == pytest.approx((8 / 20 + 2 / 8) / 2, abs=1e-15)
    assert result["rounds"] == 2


def test_per_image_and_pooled_aacc_differ_when_images_have_different_label_counts():
    # Image 0: 90 of 100 labelled pixels correct; image 1: 1 of 10 correct (one attack).
    stats = _raw_stats([[[90], [1]]], [[[100], [10]]], correct=[[90, 1]], labelled=[[100, 10]])
    result = worst_case(stats)
    assert result["aAcc"] == pytest.approx(91 / 110)
    assert result["aAcc_per_image"] == pytest.approx((0.9 + 0.1) / 2)


def _released_search(intersection, union, seed=225):
    """The SEA reference's worst-case mIoU search written out with its own data types (torch float32 running
    tensors rebuilt from Python floats, Python-float sums, ``statistics.mean``): the oracle for ``rule="reference"``."""
    import torch

    inter, uni = torch.tensor(intersection, dtype=torch.float32), torch.tensor(union, dtype=torch.float32)
    attacks, count, classes = inter.shape
    running_i, running_u = [0] * classes, [0] * classes
    for n in range(count):
        for k in range(classes):
            running_i[k] += inter[0, n, k]
            running_u[k] += uni[0, n, k]

    def miou(values_i, values_u):
        ti = torch.tensor([float(v) for v in values_i])
        tu = torch.tensor([float(v) for v in values_u])
        return statistics.mean(a.item() / b.item() for a, b in zip(ti, tu) if b != 0)

    generator = random.Random(seed)
    selected = [0] * count
    current, previous = miou(running_i, running_u), 10
    for _ in range(1000):
        order = list(range(count))
        generator.shuffle(order)
        for idx in order:
            for attack in range(attacks):
                ti = torch.tensor([float(v) for v in running_i])
                tu = torch.tensor([float(v) for v in running_u])
                di = inter[attack, idx] - inter[selected[idx], idx]
                du = uni[attack, idx] - uni[selected[idx], idx]
                new_i, new_u, ratios = [], [], []
                for a, b, c, d in zip(ti, tu, di, du):
                    if b == 0:
                        continue
                    new_i.append(a.item() + c.item())
                    new_u.append(b.item() + d.item())
                    ratios.append(new_i[-1] / (new_u[-1] + 1e-8))
                if statistics.mean(ratios) < current:
                    selected[idx], running_i, running_u = attack, new_i, new_u
            current = miou(running_i, running_u)
        if previous - current <= 1e-6:
            break
        previous = current
    return selected, current


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(4))
def test_reference_rule_equals_the_released_procedure(seed):
    rng = np.random.default_rng(seed)
    attacks, images, classes = 3, 40, 5
    # Counts up to ~10^6 per image, so pooled unions pass 2^24 where float32 running sums round.
    union = rng.integers(1, 1_000_000, (images, classes))[None].repeat(attacks, 0)
    union = union + rng.integers(0, 200_000, (attacks, images, classes))
    intersection = (union * rng.uniform(0.0, 1.0, (attacks, images, classes))).astype(np.int64)
    choice, value = _released_search(intersection, union)
    result = worst_case(_raw_stats(intersection, union))
    assert result["choice"].tolist() == choice
    assert result["mIoU"] == value
    greedy = worst_case(_raw_stats(intersection, union), rule="greedy")
    assert greedy["mIoU"] <= result["mIoU"] + 1e-9


def test_unknown_rule_and_empty_statistics_are_refused():
    stats = _raw_stats([[[1]]], [[[2]]])
    with pytest.raises(ValueError, match="worst-case rule"):
        worst_case(stats, rule="best")
    with pytest.raises(ValueError, match="at least one image"):
        worst_case(_raw_stats(np.zeros((2, 0, 3)), np.zeros((2, 0, 3))))


def test_mismatched_statistics_and_empty_loss_lists_are_refused():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (4, 4, 4)).astype(np.int32)
    four = metrics.per_image_statistics(labels, labels, 3)
    three = metrics.per_image_statistics(labels[:3], labels[:3], 3)
    with pytest.raises(ValueError, match="same images and classes"):
        worst_case([four, three])
    with pytest.raises(ValueError, match="at least one attack"):
        worst_case([])
    bad = metrics.PerImageStatistics(*(np.stack([a, a]) for a in four))._replace(union=np.zeros((2, 4, 5), np.int32))
    with pytest.raises(ValueError, match="union"):
        worst_case(bad)
    from jaxseg.attacks import sea_attack

    with pytest.raises(ValueError, match="non-empty list of loss names"):
        sea_attack(lambda x: x, np.zeros((1, 4, 4, 3), np.float32), labels[:1], None, eps=0.1, losses=[])
