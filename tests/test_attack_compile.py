"""Compilation and parallelism: one trace per batch shape, and sharded batches match one device."""

import importlib

import chex
import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from attack_models import make_data, train_tiny_model
from jaxseg import attacks

apgd_module = importlib.import_module("jaxseg.attacks.apgd")
pgd_module = importlib.import_module("jaxseg.attacks.pgd")


def test_repeated_batches_of_one_shape_never_retrace():
    model, variables = train_tiny_model()
    traces = []

    def model_fn(variables, images):
        traces.append(images.shape)
        return model.apply(variables, images)

    first_images, first_labels = make_data(seed=11, count=4)
    attacks.apgd(model_fn, first_images, first_labels, jax.random.PRNGKey(0), eps=4 / 255, iterations=5,
                 variables=variables)
    per_compilation = len(traces)  # the model is traced a fixed number of times inside one compilation
    counted = chex.assert_max_traces(model_fn, n=per_compilation)
    for seed in range(3):  # new data, keys and radii: the same compiled program
        images, labels = make_data(seed=20 + seed, count=4)
        attacks.apgd(counted, images, labels, jax.random.PRNGKey(seed), eps=(seed + 1) / 255, iterations=5,
                     variables=variables)

    # Rebuilding the hashable model function for the same model reuses the cached compilation too.
    before = pgd_module._pgd_jit._cache_size()
    for seed in range(2):
        attacks.pgd(attacks.logits_function(model), first_images, first_labels, jax.random.PRNGKey(seed),
                    eps=2 / 255, iterations=2, variables=variables)
    assert pgd_module._pgd_jit._cache_size() == before + 1


def test_sharded_batch_matches_one_device():
    model, variables = train_tiny_model()
    logits_fn = attacks.logits_function(model)
    images, labels = make_data(seed=5, count=8)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    assert mesh.size == 8
    batch_sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    key = jax.random.PRNGKey(0)
    options = dict(eps=4 / 255, iterations=6, early_stop=False)
    single = attacks.apgd(logits_fn, images, labels, key, variables=variables, **options)
    sharded = attacks.apgd(
        logits_fn, jax.device_put(images, batch_sharding), jax.device_put(labels, batch_sharding), key,
        variables=jax.device_put(variables, replicated), **options,
    )
    assert sharded.adversarial.sharding.is_equivalent_to(batch_sharding, 4)
    difference = np.abs(np.asarray(sharded.adversarial) - np.asarray(single.adversarial))
    assert difference.max() <= 2 * 4 / 255 + 1e-6 and difference.mean() < 1e-4
    np.testing.assert_allclose(np.asarray(sharded.loss_history), np.asarray(single.loss_history), rtol=1e-3, atol=1e-5)
    correct_single, correct_sharded = np.asarray(single.statistics.correct), np.asarray(sharded.statistics.correct)
    assert np.abs(correct_sharded - correct_single).sum() <= 0.01 * labels.size


def test_sea_components_share_one_compiled_program_with_identical_results():
    model, variables = train_tiny_model()
    images, labels = make_data(seed=5, count=4)
    logits_fn = attacks.logits_function(model)
    settings = dict(eps=8 / 255, iterations=6, variables=variables)
    before = apgd_module._apgd_jit._cache_size()
    shared = attacks.sea_attack(logits_fn, images, labels, jax.random.PRNGKey(3), **settings)
    assert apgd_module._apgd_jit._cache_size() == before + 1  # three losses, one program
    attacks.sea_attack(logits_fn, images, labels, jax.random.PRNGKey(4), **{**settings, "eps": 4 / 255})
    assert apgd_module._apgd_jit._cache_size() == before + 1  # another radius and key: the same program
    separate = attacks.sea_attack(logits_fn, images, labels, jax.random.PRNGKey(3), shared_program=False, **settings)
    assert apgd_module._apgd_jit._cache_size() == before + 1 + len(attacks.SEA_LOSSES)
    np.testing.assert_array_equal(np.asarray(shared.adversarial), np.asarray(separate.adversarial))
    for a, b in zip(shared.statistics, separate.statistics):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(shared.loss_history), np.asarray(separate.loss_history))
    # One loss of the tuple through apgd equals the single-loss program.
    one = attacks.apgd(logits_fn, images, labels, jax.random.PRNGKey(9), loss=attacks.SEA_LOSSES, loss_index=2,
                       track_loss="ce", **settings)
    alone = attacks.apgd(logits_fn, images, labels, jax.random.PRNGKey(9), loss=attacks.SEA_LOSSES[2],
                         track_loss="ce", **settings)
    np.testing.assert_array_equal(np.asarray(one.adversarial), np.asarray(alone.adversarial))
    with pytest.raises(ValueError, match="loss_index 3 does not pick one of the 3 losses"):
        attacks.apgd(logits_fn, images, labels, jax.random.PRNGKey(9), loss=attacks.SEA_LOSSES, loss_index=3,
                     **settings)


def test_red_eps_stages_trace_the_model_as_often_as_one_stage():
    """The three red-eps stages run one traced loop body: the program holds one copy of the model's gradient."""
    model, variables = train_tiny_model()
    images, labels = make_data(seed=6, count=2)
    counts = {}
    for red_eps in (False, True):
        traces = []

        def model_fn(variables, images, traces=traces):  # a new function: a new compilation
            traces.append(images.shape)
            return model.apply(variables, images)

        attacks.apgd(model_fn, images, labels, jax.random.PRNGKey(0), eps=4 / 255, iterations=10, red_eps=red_eps,
                     variables=variables)
        counts[red_eps] = len(traces)
    assert counts[True] == counts[False] > 0
