"""Training steps: the optimiser pieces, one step sharded over 8 fake devices equals one device, the SegPGD-AT
objective and the training attack's start."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import parallel
from jaxseg.attacks import segmentation_cross_entropy
from jaxseg.config import load_config
from jaxseg.models import create_model, init_variables
from jaxseg.train.state import create_optimizer, create_train_state, learning_rate_schedule, weight_decay_mask
from jaxseg.train.steps import adversarial_batch, make_train_step


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


# --- SegPGD-AT (Gu et al., ECCV 2022, arXiv 2207.12391, Sec. 3.3) and the training attack's start -------------


class _TinyAuxNet(nn.Module):
    """Conv + BatchNorm trunk with a main and an auxiliary 1x1 head; the (logits, aux) interface of a Segmentor."""

    num_classes: int = 3

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = nn.Conv(8, (3, 3))(images)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        logits = nn.Conv(self.num_classes, (1, 1), name="main")(x)
        if not train:
            return logits
        return logits, nn.Conv(self.num_classes, (1, 1), name="aux")(x)


def _tiny_setup(recipe, overrides=()):
    config = load_config("synthetic:quick", [f"train.recipe={recipe}", "model.num_classes=3", "train.warmup_steps=0",
                                             "train.optimizer=sgd", "train.learning_rate=0.1", *overrides])
    model = _TinyAuxNet()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=True)  # creates the aux head
    rng = np.random.default_rng(0)
    images = rng.random((4, 8, 8, 3), dtype=np.float32)
    labels = rng.integers(0, 3, (4, 8, 8)).astype(np.int32)
    labels[1, :2] = 255  # ignored pixels: each half's CE is a mean over its own labelled pixels
    return config, model, variables, images, labels


def test_segpgd_at_loss_is_clean_half_plus_adversarial_half():
    # A deterministic attack (delta = 0 start, one step of size eps) so the adversarial half can be rebuilt by hand.
    config, model, variables, images, labels = _tiny_setup(
        "segpgd-at", ["attack.loss=segpgd", "attack.eps=8/255", "attack.step_size=8/255", "attack.steps=1",
                      "attack.random_start=False"])
    assert config.attack.segpgd_at_loss == "sum"
    optimizer = create_optimizer(config.train)
    step = jax.jit(make_train_step(model, optimizer, config))
    state = create_train_state(variables, optimizer)
    _, step_metrics = step(state, {"image": images, "label": labels}, jax.random.key(1))

    attacked = adversarial_batch(model, variables, jnp.asarray(images[:2]), jnp.asarray(labels[:2]),
                                 jax.random.key(2), config.attack)
    assert not np.allclose(attacked, images[:2])
    # One training-mode forward over [adversarial half; clean half] (BatchNorm on the mixed batch), then per half.
    (logits, aux), _ = model.apply(variables, jnp.concatenate([attacked, images[2:]]), train=True,
                                   mutable=["batch_stats"])
    weight = config.train.auxiliary_weight

    def half_loss(part):
        return (segmentation_cross_entropy(logits[part], labels[part])
                + weight * segmentation_cross_entropy(aux[part], labels[part]))

    adversarial_loss, clean_loss = float(half_loss(slice(0, 2))), float(half_loss(slice(2, 4)))
    np.testing.assert_allclose(float(step_metrics["loss"]), clean_loss + adversarial_loss, rtol=1e-5)
    # Not the mean over the concatenated batch, (L_clean + L_adv) / 2 up to the halves' pixel counts.
    mean_loss = float(segmentation_cross_entropy(logits, labels) + weight * segmentation_cross_entropy(aux, labels))
    assert abs(float(step_metrics["loss"]) - mean_loss) > 0.4 * mean_loss

    # attack.segpgd_at_loss="mean" keeps the one-mean objective.
    config.attack.segpgd_at_loss = "mean"
    _, mean_metrics = jax.jit(make_train_step(model, optimizer, config))(
        state, {"image": images, "label": labels}, jax.random.key(1))
    np.testing.assert_allclose(float(mean_metrics["loss"]), mean_loss, rtol=1e-5)


@pytest.mark.parametrize("random_start", [True, False])
def test_training_attack_start(random_start):
    # A step of 1e-20 (zero is refused) moves no float32 pixel in [1e-6, 1] and leaves the rest within 1e-19,
    # so the one-step result is the attack's starting point.
    config, model, variables, images, labels = _tiny_setup(
        "segpgd-at", ["attack.eps=8/255", "attack.step_size=1e-20", "attack.steps=1",
                      f"attack.random_start={random_start}"])
    start = np.asarray(adversarial_batch(model, variables, jnp.asarray(images), jnp.asarray(labels),
                                         jax.random.key(3), config.attack))
    if random_start:
        delta = start - images
        assert np.all(np.abs(delta) <= 8 / 255 + 1e-6) and np.all((start >= 0) & (start <= 1))
        assert np.mean(np.abs(delta) > 1 / 255) > 0.5  # spread over the ball, not the clean image
    else:
        np.testing.assert_allclose(start, images, rtol=0, atol=1e-18)


def test_recipes_set_the_published_attack_start():
    assert load_config("segpgd_at_voc").attack.random_start  # Gu et al. 2022, Algorithm 1
    assert load_config("synthetic:segpgd-at").attack.random_start
    for name in ("pirat_voc", "pirat_ade20k", "synthetic:pgd-at"):  # PGD-AT / PIR-AT: delta = 0
        assert not load_config(name).attack.random_start
