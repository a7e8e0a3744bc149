"""Training steps: the optimiser pieces, and one step sharded over 8 fake devices equals one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import parallel
from jaxseg.config import load_config
from jaxseg.models import create_model, init_variables
from jaxseg.train.state import create_optimizer, create_train_state, learning_rate_schedule, weight_decay_mask
from jaxseg.train.steps import make_train_step, segmentation_cross_entropy


def test_schedule_warms_up_linearly_then_decays_to_zero():
    schedule = learning_rate_schedule(1e-3, total_steps=100, warmup_steps=10, power=1.0)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(5e-4)
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(55)) == pytest.approx(5e-4)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-12)


def test_weight_decay_skips_biases_norms_and_layer_scales():
    params = {"conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones(4)}, "block": {"gamma": jnp.ones(4)}}
    assert weight_decay_mask(params) == {"conv": {"kernel": True, "bias": False}, "block": {"gamma": False}}


def test_encoder_learns_at_the_configured_ratio():
    config = load_config("synthetic", ["train.encoder_lr_ratio=0.1", "train.warmup_steps=0", "train.optimizer=sgd",
                                       "train.momentum=0.0", "train.weight_decay=0.0"])
    optimizer = create_optimizer(config.train)
    params = {"backbone": {"w": jnp.ones((2, 2))}, "decode_head": {"w": jnp.ones((2, 2))}}
    updates, _ = optimizer.update(jax.tree_util.tree_map(jnp.ones_like, params), optimizer.init(params), params)
    ratio = updates["backbone"]["w"] / updates["decode_head"]["w"]
    np.testing.assert_allclose(ratio, 0.1, rtol=1e-6)


def test_cross_entropy_ignores_the_ignore_label():
    logits = jnp.zeros((1, 1, 2, 3)).at[0, 0, 0, 1].set(5.0)
    labels = jnp.array([[[1, 255]]])
    expected = -jax.nn.log_softmax(logits[0, 0, 0])[1]
    assert float(segmentation_cross_entropy(logits, labels)) == pytest.approx(float(expected), rel=1e-4)


@pytest.mark.parametrize("recipe", ["clean", "pgd-at"])
def test_one_step_on_eight_devices_equals_one_device(recipe):
    config = load_config("synthetic:quick", [f"train.recipe={recipe}", "model.num_classes=4", "train.warmup_steps=0",
                                                 "train.optimizer=sgd", "train.learning_rate=0.1"])
    model = create_model("upernet_convnext_atto", 4)
    variables = init_variables(model, jax.random.key(0), (1, 32, 32, 3))
    optimizer = create_optimizer(config.train)
    step = jax.jit(make_train_step(model, optimizer, config))
    rng = np.random.default_rng(0)
    batch = {"image": rng.random((8, 32, 32, 3), dtype=np.float32), "label": rng.integers(0, 4, (8, 32, 32)).astype(np.int32)}
    key = jax.random.key(1)

    single_state, single_metrics = step(create_train_state(variables, optimizer), batch, key)

    mesh = parallel.make_mesh()
    sharded_state, sharded_metrics = step(
        parallel.replicate(create_train_state(variables, optimizer), mesh), parallel.shard_batch(batch, mesh), key
    )
    np.testing.assert_allclose(sharded_metrics["loss"], single_metrics["loss"], rtol=1e-5)
    assert int(sharded_state.step) == 1
    # SGD, not Adam: Adam's first step is ~lr * sign(g), which turns summation-order noise in near-zero
    # gradients into lr-sized differences; SGD keeps the comparison about the gradients themselves.
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), sharded_state.params, single_state.params
    )
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), sharded_state.batch_stats, single_state.batch_stats
    )
    # The step changed the parameters.
    assert not np.allclose(single_state.params["decode_head"]["classifier"]["kernel"],
                           variables["params"]["decode_head"]["classifier"]["kernel"])
