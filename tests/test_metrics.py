"""Metrics against a plain NumPy reference, with ignored pixels and absent classes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxseg import metrics

K = 5


def numpy_reference(pred, labels, num_classes, ignore_index=255):
    valid = labels != ignore_index
    p, y = pred[valid], labels[valid]
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for t, q in zip(y, p):
        matrix[t, q] += 1
    inter = np.diag(matrix).astype(float)
    union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
    present = union > 0
    return {
        "matrix": matrix,
        "aAcc": inter.sum() / max(valid.sum(), 1),
        "mIoU": (inter[present] / union[present]).mean(),
        "mAcc": np.mean([inter[c] / matrix[c].sum() for c in range(num_classes) if matrix[c].sum() > 0]),
    }


def random_case(seed, batch=3, size=6, absent=(3,), ignore_fraction=0.2):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, (batch, size, size))
    labels[np.isin(labels, absent)] = 0  # class 3 never appears in the labels
    labels[rng.random(labels.shape) < ignore_fraction] = 255
    pred = rng.integers(0, K - 1, (batch, size, size))  # class 4 is never predicted
    return pred, labels


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_scores_match_numpy(seed):
    pred, labels = random_case(seed)
    reference = numpy_reference(pred, labels, K)
    matrix = metrics.confusion_matrix(jnp.asarray(pred), jnp.asarray(labels), K)
    np.testing.assert_array_equal(matrix, reference["matrix"])
    scores = metrics.scores_from_confusion(matrix)
    for name in ("aAcc", "mIoU", "mAcc"):
        assert float(scores[name]) == pytest.approx(reference[name], rel=1e-5)
    # Per-image statistics pool to the same dataset scores.
    stats = metrics.per_image_statistics(jnp.asarray(pred), jnp.asarray(labels), K)
    pooled = metrics.scores_from_statistics(stats)
    assert float(pooled["aAcc"]) == pytest.approx(reference["aAcc"], rel=1e-5)
    assert float(pooled["mIoU"]) == pytest.approx(reference["mIoU"], rel=1e-5)


def test_per_image_statistics_by_hand():
    labels = np.array([[[0, 1], [255, 1]]])
    pred = np.array([[[0, 0], [1, 1]]])
    stats = metrics.per_image_statistics(jnp.asarray(pred), jnp.asarray(labels), 3)
    assert stats.correct.tolist() == [2] and stats.labelled.tolist() == [3]
    assert stats.intersection.tolist() == [[1, 1, 0]] and stats.union.tolist() == [[2, 2, 0]]
    assert float(stats.pixel_accuracy[0]) == pytest.approx(2 / 3)
    scores = metrics.scores_from_statistics(stats)
    assert float(scores["mIoU"]) == pytest.approx(0.5)  # class 2 (union 0) does not count


def test_absent_classes_are_nan_and_excluded():
    labels = np.zeros((1, 2, 2), np.int64)
    scores = metrics.scores_from_confusion(metrics.confusion_matrix(jnp.zeros((1, 2, 2), jnp.int32), jnp.asarray(labels), 3))
    assert float(scores["mIoU"]) == 1.0
    assert np.isnan(np.asarray(scores["IoU"])[1:]).all()


def test_accumulation_over_batches_equals_one_pass():
    pred, labels = random_case(7, batch=8)
    whole = metrics.confusion_matrix(jnp.asarray(pred), jnp.asarray(labels), K)
    parts = sum(metrics.confusion_matrix(jnp.asarray(pred[i : i + 3]), jnp.asarray(labels[i : i + 3]), K) for i in range(0, 8, 3))
    np.testing.assert_array_equal(whole, parts)
    stats = metrics.concatenate_statistics(
        [metrics.per_image_statistics(jnp.asarray(pred[i : i + 3]), jnp.asarray(labels[i : i + 3]), K) for i in range(0, 8, 3)]
    )
    assert stats.correct.shape == (8,)
    np.testing.assert_array_equal(stats.intersection.sum(0), np.diag(np.asarray(whole)))


def test_metrics_are_jittable():
    pred, labels = random_case(3)
    jitted = jax.jit(metrics.confusion_matrix, static_argnums=(2, 3))
    np.testing.assert_array_equal(jitted(pred, labels, K, 255), metrics.confusion_matrix(pred, labels, K))
