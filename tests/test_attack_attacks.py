"""Attacks on a small trained model: invariants, strength orderings, targeted/masked variants, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from attack_models import NUM_CLASSES, make_data, train_tiny_model
from jaxseg import attacks, metrics

TOL = 1e-5
ATTACKS = {
    "pgd": lambda *a, **k: attacks.pgd(*a, iterations=3, **k),
    "segpgd": lambda *a, **k: attacks.segpgd(*a, iterations=3, **k),
    "cospgd": lambda *a, **k: attacks.cospgd(*a, iterations=3, keep="accuracy", **k),
    "apgd": lambda *a, **k: attacks.apgd(*a, iterations=4, **k),
    "apgd-red-eps": lambda *a, **k: attacks.apgd(*a, iterations=4, red_eps=True, loss="mask-ce", track_loss="ce", **k),
    "padam": lambda *a, **k: attacks.padam(*a, iterations=3, **k),
}


@pytest.fixture(scope="module")
def trained():
    model, variables = train_tiny_model()
    return attacks.logits_function(model), variables


@pytest.fixture(scope="module")
def batch():
    return make_data(seed=7, count=8)


def _accuracy(result):
    return np.asarray(result.statistics.pixel_accuracy)


def _scores(statistics):
    return {k: float(v) for k, v in metrics.scores_from_statistics(statistics).items()}


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(sorted(ATTACKS)), norm=st.sampled_from(["linf", "l2"]), masked=st.booleans(),
       eps=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_every_attack_stays_in_the_threat_set(trained, batch, name, norm, masked, eps, seed):
    logits_fn, variables = trained
    images, labels = batch[0][:2], batch[1][:2]
    eps = eps if norm == "linf" else 8 * eps
    mask = np.random.default_rng(seed).uniform(size=labels.shape) < 0.4 if masked else None
    result = ATTACKS[name](logits_fn, images, labels, jax.random.PRNGKey(seed), eps=eps, norm=norm, mask=mask,
                           variables=variables)
    adv = np.asarray(result.adversarial)
    delta = (adv - images).reshape(2, -1)
    size = np.abs(delta).max(1) if norm == "linf" else np.sqrt((delta**2).sum(1))
    assert np.all(size <= eps + TOL)
    assert adv.min() >= 0 and adv.max() <= 1
    if masked:
        np.testing.assert_array_equal(adv[~mask], images[~mask])
    # The statistics describe the returned point.
    predicted = np.asarray(logits_fn(variables, jnp.asarray(adv))).argmax(-1)
    np.testing.assert_array_equal(np.asarray(result.statistics.correct), (predicted == labels).sum((1, 2)))


def test_zero_eps_gives_clean_accuracy(trained, batch):
    logits_fn, variables = trained
    images, labels = batch
    clean = (np.asarray(logits_fn(variables, images)).argmax(-1) == labels).mean((1, 2))
    for name in ("pgd", "apgd", "padam"):
        result = ATTACKS[name](logits_fn, images, labels, jax.random.PRNGKey(0), eps=0.0, variables=variables)
        np.testing.assert_allclose(_accuracy(result), clean, err_msg=name)
        np.testing.assert_array_equal(np.asarray(result.adversarial), images)


def test_huge_eps_breaks_every_pixel(trained, batch):
    logits_fn, variables = trained
    images, labels = batch
    for attack in (attacks.pgd, attacks.apgd):
        result = attack(logits_fn, images, labels, jax.random.PRNGKey(0), eps=1.0, iterations=10, variables=variables)
        assert _accuracy(result).mean() < 0.02, attack.__name__


def test_more_iterations_are_never_weaker(trained, batch):
    logits_fn, variables = trained
    images, labels = batch
    key = jax.random.PRNGKey(3)
    common = dict(eps=4 / 255, step_size=1 / 255, keep="accuracy", variables=variables)
    short = attacks.pgd(logits_fn, images, labels, key, iterations=3, **common)
    long = attacks.pgd(logits_fn, images, labels, key, iterations=12, **common)
    assert np.all(_accuracy(long) <= _accuracy(short))
    assert _accuracy(long).mean() < _accuracy(short).mean()
    # APGD returns the best iterate: never worse than any iterate it visited.
    result = attacks.apgd(logits_fn, images, labels, key, eps=4 / 255, iterations=12, early_stop=False,
                          variables=variables)
    history = np.asarray(result.accuracy_history)
    assert history.shape == (12, 8) and not np.isnan(history).any()
    assert np.all(_accuracy(result) <= history.min(0) + 1e-7)


def test_apgd_beats_or_ties_pgd_at_equal_budget(trained, batch):
    logits_fn, variables = trained
    images, labels = batch
    key = jax.random.PRNGKey(1)
    pgd_result = attacks.pgd(logits_fn, images, labels, key, eps=4 / 255, iterations=20, keep="accuracy",
                             variables=variables)
    apgd_result = attacks.apgd(logits_fn, images, labels, key, eps=4 / 255, iterations=20, variables=variables)
    pgd_scores, apgd_scores = _scores(pgd_result.statistics), _scores(apgd_result.statistics)
    assert apgd_scores["aAcc"] <= pgd_scores["aAcc"] + 1e-3
    assert apgd_scores["aAcc"] < 0.95 * _scores(metrics.per_image_statistics(
        np.asarray(logits_fn(variables, images)).argmax(-1), labels, NUM_CLASSES))["aAcc"]


def test_sea_is_at_most_each_of_its_attacks(trained, batch):
    logits_fn, variables = trained
    images, labels = batch
    result = attacks.sea_attack(logits_fn, images, labels, jax.random.PRNGKey(0), eps=4 / 255, iterations=10,
                                variables=variables)
    assert result.names == attacks.SEA_LOSSES and result.adversarial.shape == (3,) + images.shape
    worst = attacks.worst_case(result.statistics, rule="greedy")
    for index in range(3):
        single = _scores(metrics.PerImageStatistics(*(a[index] for a in result.statistics)))
        assert worst["aAcc"] <= single["aAcc"] + 1e-9 and worst["mIoU"] <= single["mIoU"] + 1e-9
    delta = np.abs(np.asarray(result.adversarial) - images[None]).max()
    assert delta <= 4 / 255 + TOL  # red-eps ends inside the eps-ball


def test_targeted_attack_reaches_the_target(trained, batch):
    logits_fn, variables = trained
    images, labels = batch
    target = (labels + 1) % NUM_CLASSES
    for attack in (attacks.apgd, attacks.pgd):
        result = attack(logits_fn, images, labels, jax.random.PRNGKey(0), eps=0.6, iterations=15, target=target,
                        loss="ce", variables=variables)
        predicted = np.asarray(logits_fn(variables, result.adversarial)).argmax(-1)
        assert (predicted == target).mean() > 0.9, attack.__name__


def test_bf16_compute_keeps_fp32_projection(trained, batch):
    logits_fn, variables = trained
    images, labels = batch
    key = jax.random.PRNGKey(0)
    full = attacks.apgd(logits_fn, images, labels, key, eps=4 / 255, iterations=8, variables=variables)
    half = attacks.apgd(logits_fn, images, labels, key, eps=4 / 255, iterations=8, variables=variables,
                        compute_dtype="bfloat16")
    assert half.adversarial.dtype == jnp.float32
    assert np.abs(np.asarray(half.adversarial) - images).max() <= 4 / 255 + TOL
    assert abs(_accuracy(half).mean() - _accuracy(full).mean()) < 0.05


def test_attack_inside_an_outer_jit(trained, batch):
    """The training step's usage: a closure over traced variables, PGD from delta = 0, last iterate."""
    logits_fn, variables = trained
    images, labels = batch

    @jax.jit
    def attacked(variables, images, labels, key):
        result = attacks.pgd(lambda x: logits_fn(variables, x), images, labels, key, eps=4 / 255, step_size=0.01,
                             iterations=2, random_start=False, keep="last")
        return result.adversarial

    eager = attacks.pgd(logits_fn, images, labels, jax.random.PRNGKey(0), eps=4 / 255, step_size=0.01,
                        iterations=2, random_start=False, keep="last", variables=variables)
    np.testing.assert_allclose(np.asarray(attacked(variables, images, labels, jax.random.PRNGKey(0))),
                               np.asarray(eager.adversarial), atol=1e-6)


def test_bad_input_raises_clear_errors(trained, batch):
    logits_fn, variables = trained
    images, labels = batch
    key = jax.random.PRNGKey(0)
    cases = [
        (dict(eps=-0.1), ">= 0"),
        (dict(eps=0.1, loss="hinge"), "unknown attack loss"),
        (dict(eps=0.1, norm="l3"), "norm"),
    ]
    for attack in (attacks.pgd, attacks.apgd, attacks.padam):
        for options, message in cases:
            with pytest.raises(ValueError, match=message):
                attack(logits_fn, images, labels, key, variables=variables, **options)
        with pytest.raises(ValueError, match="labels must have shape"):
            attack(logits_fn, images, labels[:, :-1], key, eps=0.1, variables=variables)
        bad = labels.copy()
        bad[0, 0, 0] = NUM_CLASSES  # neither a class nor the ignore index
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
            attack(logits_fn, images, bad, key, eps=0.1, variables=variables)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            attack(logits_fn, images * 2, labels, key, eps=0.1, variables=variables)
    with pytest.raises(ValueError, match="mask must have shape"):
        attacks.pgd(logits_fn, images, labels, key, eps=0.1, mask=np.ones((8, 4, 4), bool), variables=variables)
    with pytest.raises(ValueError, match="keep"):
        attacks.pgd(logits_fn, images, labels, key, eps=0.1, keep="best", variables=variables)


def test_ignored_pixels_do_not_count(trained, batch):
    logits_fn, variables = trained
    images, labels = batch
    ignored = labels.copy()
    ignored[:, :8] = 255
    result = attacks.apgd(logits_fn, images, ignored, jax.random.PRNGKey(0), eps=4 / 255, iterations=4,
                          variables=variables)
    assert np.all(np.asarray(result.statistics.labelled) == 8 * 16)
