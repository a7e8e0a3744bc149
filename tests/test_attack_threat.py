"""Threat models (start, step, projection) and APGD's step-size rules on constructed loss sequences."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxseg.attacks import apgd_checkpoints, threat

# The package exports the attack functions under the module names; reach the module itself.
apgd_module = importlib.import_module("jaxseg.attacks.apgd")

TOL = 1e-5


def _norms(adv, images):
    delta = (np.asarray(adv) - np.asarray(images)).reshape(len(images), -1)
    return np.abs(delta).max(1), np.sqrt((delta**2).sum(1))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), eps=st.floats(0.0, 2.0), norm=st.sampled_from(threat.NORMS),
       masked=st.booleans(), spread=st.floats(0.01, 5.0))
def test_projection_start_and_step_stay_in_the_threat_set(seed, eps, norm, masked, spread):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (2, 6, 5, 3)).astype(np.float32)
    mask = rng.uniform(size=(2, 6, 5)) < 0.5 if masked else None
    key = jax.random.PRNGKey(seed)
    far = images + spread * rng.normal(size=images.shape).astype(np.float32)
    for adv in (threat.random_start(key, images, eps, norm, mask),
                threat.project(far, images, eps, norm, mask),
                threat.project(threat.step(images, far - images, eps, norm, mask), images, eps, norm, mask)):
        adv = np.asarray(adv)
        linf, l2 = _norms(adv, images)
        assert np.all((linf if norm == "linf" else l2) <= eps + TOL)
        assert adv.min() >= 0 and adv.max() <= 1
        if masked:
            np.testing.assert_array_equal(adv[~mask], images[~mask])


def test_projection_is_identity_inside_and_l2_rescales_outside():
    images = np.full((1, 4, 4, 3), 0.5, np.float32)
    inside = images + 0.01
    np.testing.assert_allclose(np.asarray(threat.project(inside, images, 0.02, "linf")), inside, atol=1e-7)
    outside = images + 0.1  # L2 norm 0.1 * sqrt(48)
    projected = np.asarray(threat.project(outside, images, 0.2, "l2"))
    np.testing.assert_allclose(_norms(projected, images)[1], [0.2], rtol=1e-5)
    np.testing.assert_allclose(projected - images, np.full_like(images, 0.2 / np.sqrt(48)), rtol=1e-5)


def test_steps_are_sign_for_linf_and_normalised_for_l2():
    adv = np.full((2, 2, 2, 3), 0.5, np.float32)
    grad = np.random.default_rng(0).normal(size=adv.shape).astype(np.float32)
    np.testing.assert_allclose(np.asarray(threat.step(adv, grad, 0.1, "linf")), adv + 0.1 * np.sign(grad))
    moved = np.asarray(threat.step(adv, grad, jnp.array([0.1, 0.3]), "l2")) - adv
    np.testing.assert_allclose(np.sqrt((moved.reshape(2, -1) ** 2).sum(1)), [0.1, 0.3], rtol=1e-5)


def test_bad_threat_arguments():
    images = np.zeros((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="norm"):
        threat.validate_threat(images, 0.1, "l1")
    with pytest.raises(ValueError, match=">= 0"):
        threat.validate_threat(images, -0.1, "linf")
    with pytest.raises(ValueError, match="norm"):
        threat.project(images, images, 0.1, "linfinity")


def test_apgd_checkpoints_follow_autoattack():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(300) == [66, 123, 171, 210, 240, 261, 279, 297]
    assert apgd_checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert apgd_checkpoints(1) == [1]


def _simulate(sequences, eps=0.1):
    losses = jnp.asarray(np.stack(sequences, axis=1), jnp.float32)  # (N, B)
    step_sizes, halved = apgd_module.simulate_step_sizes(losses, losses[0] * 0 - 1.0, eps)
    return np.asarray(step_sizes), np.asarray(halved)


def test_halving_rules_on_constructed_loss_sequences():
    n = 100
    points = np.array(apgd_checkpoints(n)) - 1  # 0-based iteration of each checkpoint
    increasing = np.arange(1, n + 1, dtype=float)
    constant = np.ones(n)
    alternating = np.arange(n) * 0.01 + np.where(np.arange(n) % 2, 1.0, 0.0)  # best improves, 50% increases
    # Window 1 rises (no halving); afterwards each window restarts low and climbs below the best:
    # > 75% increases (no oscillation) but no improvement → condition 2, which then may not fire twice in a row.
    stalled = np.empty(n)
    stalled[: points[0] + 1] = np.linspace(0.1, 10.0, points[0] + 1)
    for start, end in zip(points[:-1] + 1, np.append(points[1:], n - 1) + 1):
        stalled[start:end] = np.linspace(0.0, 5.0, end - start)
    step_sizes, halved = _simulate([increasing, constant, alternating, stalled])

    assert not halved[:, 0].any() and np.all(step_sizes[:, 0] == pytest.approx(0.2))
    # Constant loss: only the first step "increases" (from AutoAttack's zero entry): oscillation at every checkpoint.
    assert list(np.flatnonzero(halved[:, 1])) == list(points)
    np.testing.assert_allclose(step_sizes[-1, 1], 0.2 / 2 ** len(points))
    assert list(np.flatnonzero(halved[:, 2])) == list(points)
    # Stalled: halved at checkpoints 2, 4, 6, 8 (condition 2 alternates), never at the first.
    assert list(np.flatnonzero(halved[:, 3])) == list(points[1::2])


def test_condition_functions():
    assert np.asarray(apgd_module.oscillation(jnp.array([16, 17]), 22)).tolist() == [True, False]
    reduced = jnp.array([False, True, False])
    last, best = jnp.array([1.0, 1.0, 1.0]), jnp.array([1.0, 1.0, 1.5])
    assert np.asarray(apgd_module.no_improvement(reduced, last, best)).tolist() == [True, False, False]


def test_red_eps_stages():
    assert apgd_module.red_eps_stages(300, True) == [(2.0, 90), (1.5, 90), (1.0, 120)]
    assert apgd_module.red_eps_stages(10, False) == [(1.0, 10)]
    assert apgd_module.red_eps_stages(3, True) == [(1.0, 3)]


def test_non_finite_images_bad_step_sizes_and_huge_eps_are_caught():
    import warnings

    from jaxseg import attacks

    images = np.full((1, 8, 8, 3), 0.5, np.float32)
    labels = np.zeros((1, 8, 8), np.int32)

    def logits_fn(x):
        return jnp.stack([x.mean(-1), 1 - x.mean(-1)], -1)

    key = jax.random.PRNGKey(0)
    for bad_value in (np.nan, np.inf):
        broken = images.copy()
        broken[0, 3, 3, 1] = bad_value
        with pytest.raises(ValueError, match="finite numbers in \\[0, 1\\]; found 1 NaN or infinite"):
            attacks.pgd(logits_fn, broken, labels, key, eps=4 / 255)
    for bad_step in (-0.01, 0.0, np.nan):
        with pytest.raises(ValueError, match="step_size must be finite and > 0"):
            attacks.pgd(logits_fn, images, labels, key, eps=4 / 255, step_size=bad_step)
    with pytest.raises(ValueError, match="learning_rate must be finite and > 0"):
        attacks.padam(logits_fn, images, labels, key, eps=4 / 255, learning_rate=-1.0)
    with pytest.warns(UserWarning, match="Linf eps 4 is above 1"):
        attacks.pgd(logits_fn, images, labels, key, eps=4.0, iterations=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attacks.pgd(logits_fn, images, labels, key, eps=4 / 255, iterations=1)  # no warning at a sane radius
        attacks.pgd(logits_fn, images, labels, key, eps=3.0, norm="l2", iterations=1)  # L2 radii may exceed 1


def test_empty_batches_and_wrong_logits_layouts_are_refused():
    from jaxseg import attacks

    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="at least one image"):
        attacks.pgd(lambda x: x, np.zeros((0, 8, 8, 3), np.float32), np.zeros((0, 8, 8), np.int32), key, eps=0.1)
    images, labels = np.full((2, 8, 8, 3), 0.5, np.float32), np.zeros((2, 8, 8), np.int32)
    channels_first = lambda x: jnp.transpose(jnp.concatenate([x, 1 - x], -1), (0, 3, 1, 2))  # noqa: E731
    half_resolution = lambda x: jnp.concatenate([x, 1 - x], -1)[:, ::2, ::2]  # noqa: E731
    for logits_fn in (channels_first, half_resolution):
        with pytest.raises(ValueError, match="logits_fn must return logits \\(B, H, W, K\\)"):
            attacks.apgd(logits_fn, images, labels, key, eps=4 / 255, iterations=2)
