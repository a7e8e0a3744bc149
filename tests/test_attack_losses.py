"""Attack losses against NumPy formulas, their reduction, ignore handling and the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxseg.attacks import losses

K = 5


def _inputs(seed, shape=(2, 3, 4), scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.normal(size=shape + (K,))).astype(np.float32)
    labels = rng.integers(0, K, size=shape).astype(np.int32)
    return logits, labels


def _softmax(u):
    e = np.exp(u - u.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _numpy_loss(name, u, y, lam=0.0, weights=None):
    u = u.astype(np.float64)
    p = _softmax(u)
    onehot = np.eye(K)[y]
    ce = -np.log((p * onehot).sum(-1))
    correct = (u.argmax(-1) == y).astype(np.float64)
    u_y = (u * onehot).sum(-1)
    norm = np.linalg.norm(u, axis=-1)
    if name == "ce":
        return ce
    if name == "mask-ce":
        return correct * ce
    if name == "mask-ce-bal":
        return weights[y] * correct * ce
    if name == "js":
        m = (p + onehot) / 2
        kl_p = np.sum(p * np.log(p / m), -1)
        kl_q = np.sum(np.where(onehot > 0, np.log(1 / np.where(m > 0, m, 1)), 0), -1)
        return 0.5 * kl_p + 0.5 * kl_q
    if name == "mask-sph":
        return -correct * u_y / norm
    if name == "segpgd":
        return ((1 - lam) * correct + lam * (1 - correct)) * ce
    if name == "cospgd":
        s = 1 / (1 + np.exp(-u))
        return (s * onehot).sum(-1) / np.linalg.norm(s, axis=-1) * ce
    if name == "cos":
        return 1 - u_y / norm
    if name == "dlr":
        ordered = -np.sort(-u, -1)
        other = np.where(u.argmax(-1) == y, ordered[..., 1], ordered[..., 0])
        return -(u_y - other) / (ordered[..., 0] - ordered[..., 2] + 1e-12)
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["ce", "mask-ce", "mask-ce-bal", "js", "mask-sph", "segpgd", "cospgd", "cos", "dlr"])
def test_losses_match_numpy_formulas(name):
    logits, labels = _inputs(0)
    weights = np.asarray(losses.balanced_class_weights(np.array([100.0, 10, 50, 1, 30])))
    got = losses.pixel_loss(name, logits, labels, class_weights=weights, iteration=3, iterations=10)
    expected = _numpy_loss(name, logits, labels, lam=3 / 20, weights=weights)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-5, atol=2e-6)


def test_balanced_weights_are_inverse_frequencies_summing_to_one():
    weights = np.asarray(losses.balanced_class_weights(np.array([100.0, 50.0, 0.0, 25.0])))
    np.testing.assert_allclose(weights, np.array([1, 2, 0, 4]) / 7, rtol=1e-6)


def test_segpgd_lambda_schedule():
    """λ_t = t / (2T): t = 0 weights only correct pixels, the last step almost halves."""
    iterations = 8
    np.testing.assert_allclose([float(losses.segpgd_lambda(t, iterations)) for t in range(iterations)],
                               np.arange(iterations) / (2 * iterations))
    logits, labels = _inputs(1)
    ce = np.asarray(losses.pixel_loss("ce", logits, labels))
    correct = logits.argmax(-1) == labels
    for t in (0, 4, 7):
        got = np.asarray(losses.pixel_loss("segpgd", logits, labels, iteration=t, iterations=iterations))
        lam = t / (2 * iterations)
        np.testing.assert_allclose(got, np.where(correct, 1 - lam, lam) * ce, rtol=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 60.0))
def test_js_is_bounded_by_log2(seed, scale):
    logits, labels = _inputs(seed, scale=scale)
    values = np.asarray(losses.pixel_loss("js", logits, labels))
    assert np.all(values >= 0) and np.all(values <= np.log(2) + 1e-6)
    assert np.all(np.isfinite(np.asarray(jax.grad(lambda u: losses.pixel_loss("js", u, labels).sum())(logits))))


def test_image_loss_averages_over_all_pixels_with_ignored_as_zero():
    logits, labels = _inputs(2)
    labels[0, 0, :] = 255
    per_pixel = np.asarray(losses.pixel_loss("ce", logits, labels))
    assert np.all(per_pixel[0, 0] == 0)
    np.testing.assert_allclose(np.asarray(losses.image_loss("ce", logits, labels)),
                               per_pixel.reshape(2, -1).sum(1) / 12, rtol=1e-6)


def test_masks_are_stop_gradient_and_ignored_pixels_get_no_gradient():
    logits, labels = _inputs(3)
    labels[1, 2, 3] = 255
    grad = np.asarray(jax.grad(lambda u: losses.pixel_loss("mask-ce", u, labels).sum())(logits))
    correct = logits.argmax(-1) == labels
    assert np.all(grad[~correct] == 0)  # wrong or ignored pixels: mask 0, and the mask itself has no gradient
    cos_grad = jax.grad(lambda u: losses.pixel_loss("cospgd", u, labels).sum())(logits)
    ce_grad = jax.grad(lambda u: losses.pixel_loss("ce", u, labels).sum())(logits)
    weight = np.asarray(losses.pixel_loss("cospgd", logits, labels)) / np.maximum(
        np.asarray(losses.pixel_loss("ce", logits, labels)), 1e-30)
    np.testing.assert_allclose(np.asarray(cos_grad), weight[..., None] * np.asarray(ce_grad), rtol=1e-4, atol=1e-7)


def test_targeted_variants_pull_toward_the_target():
    logits, labels = _inputs(4)
    target = (labels + 1) % K
    ce_target = _numpy_loss("ce", logits, target)
    np.testing.assert_allclose(np.asarray(losses.pixel_loss("ce", logits, labels, target=target)), -ce_target, rtol=1e-5)
    at_target = logits.argmax(-1) == target
    masked = np.asarray(losses.pixel_loss("mask-ce", logits, labels, target=target))
    np.testing.assert_allclose(masked, np.where(at_target, 0.0, -ce_target), rtol=1e-5, atol=1e-6)
    # SegPGD targeted: (1 - λ) on pixels not yet at the target, λ on those already there.
    seg = np.asarray(losses.pixel_loss("segpgd", logits, labels, target=target, iteration=2, iterations=4))
    np.testing.assert_allclose(seg, -np.where(at_target, 0.25, 0.75) * ce_target, rtol=1e-5)
    # Gradient ascent on the targeted loss raises the target's probability.
    grad = jax.grad(lambda u: losses.pixel_loss("ce", u, labels, target=target).sum())(logits)
    p_before = _softmax(logits)[np.eye(K)[target] > 0]
    p_after = _softmax(np.asarray(logits + 0.1 * grad))[np.eye(K)[target] > 0]
    assert np.all(p_after > p_before)


def test_dlr_for_classification_heads():
    logits, labels = _inputs(5, shape=(6,))
    got = losses.image_loss("dlr", logits, labels)
    np.testing.assert_allclose(np.asarray(got), _numpy_loss("dlr", logits, labels), rtol=1e-5)


def test_registry_and_unknown_names():
    assert set(losses.LOSSES) == {"ce", "mask-ce", "mask-ce-bal", "js", "mask-sph", "segpgd", "cospgd", "cos", "dlr"}
    logits, labels = _inputs(6)
    np.testing.assert_allclose(losses.get_loss("js")(logits, labels), losses.pixel_loss("js", logits, labels))
    with pytest.raises(ValueError, match="available losses: ce, mask-ce"):
        losses.get_loss("cross-entropy")
    with pytest.raises(ValueError, match="activation"):
        losses.pixel_loss("cospgd", logits, labels, activation="tanh")


def test_cospgd_softmax_activation():
    logits, labels = _inputs(7)
    p = _softmax(logits.astype(np.float64))
    onehot = np.eye(K)[labels]
    expected = (p * onehot).sum(-1) / np.linalg.norm(p, axis=-1) * _numpy_loss("ce", logits, labels)
    got = losses.pixel_loss("cospgd", jnp.asarray(logits), labels, activation="softmax")
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
