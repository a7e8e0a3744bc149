"""Registered models: shapes, dtypes, parameter counts, training outputs, compile-once, bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import count_parameters, create_model, init_variables, list_models
from jaxseg.models.heads.upernet import adaptive_average_pool
from jaxseg.models.layers import DepthwiseConv


def abstract_variables(name, num_classes, shape=(1, 64, 64, 3), **options):
    model = create_model(name, num_classes, **options)
    return model, jax.eval_shape(lambda: init_variables(model, jax.random.key(0), shape))


def test_required_names_are_registered():
    names = set(list_models())
    assert {"upernet_convnext_atto", "upernet_convnext_t", "upernet_convnext_t_cvst", "upernet_convnext_s_cvst"} <= names


@pytest.mark.parametrize("name", [n for n in list_models()])
def test_every_registered_model_maps_images_to_logits(name):
    """Abstract evaluation (no compute): (B, H, W, 3) float32 → (B, H, W, K) float32, or (B, K) for classifiers."""
    model, variables = abstract_variables(name, 7)
    images = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    expected = (2, 7) if not name.startswith(("upernet", "pspnet", "segmenter")) else (2, 64, 64, 7)
    assert out.shape == expected and out.dtype == jnp.float32


def test_upernet_convnext_t_has_the_papers_parameter_count():
    _, variables = abstract_variables("upernet_convnext_t", 150)
    # The reference implementation reports 60.18 M for UPerNet + ConvNeXt-T (ADE20K, 150 classes).
    assert count_parameters(variables["params"]) == pytest.approx(60.18e6, rel=0.005)


def test_convnext_t_classifier_has_timms_parameter_count():
    _, variables = abstract_variables("convnext_t", 1000, shape=(1, 224, 224, 3))
    assert count_parameters(variables["params"]) == pytest.approx(28.589e6, rel=1e-3)


def test_convstem_variant_differs_only_in_the_stem():
    _, patchify = abstract_variables("upernet_convnext_t", 21)
    _, convstem = abstract_variables("upernet_convnext_t_cvst", 21)
    assert set(patchify["params"]["backbone"]["stem"]) == {"conv", "norm"}
    assert set(convstem["params"]["backbone"]["stem"]) == {"conv1", "norm1", "conv2", "norm2"}
    assert convstem["params"]["backbone"]["stem"]["conv2"]["kernel"].shape == (3, 3, 48, 96)


@pytest.fixture(scope="module")
def atto():
    model = create_model("upernet_convnext_atto", 5)
    variables = init_variables(model, jax.random.key(0), (1, 32, 32, 3))
    return model, variables


def test_forward_and_training_outputs(atto):
    model, variables = atto
    images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    logits = model.apply(variables, images)
    assert logits.shape == (2, 32, 32, 5) and bool(jnp.isfinite(logits).all())
    (train_logits, auxiliary), updates = model.apply(
        variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)}
    )
    assert train_logits.shape == auxiliary.shape == (2, 32, 32, 5)
    # Training mode updates BatchNorm statistics; eval mode is deterministic.
    changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), variables["batch_stats"], updates["batch_stats"])
    assert any(jax.tree_util.tree_leaves(changed))
    np.testing.assert_array_equal(logits, model.apply(variables, images))


def test_bfloat16_compute_keeps_float32_parameters_and_close_logits(atto):
    model, variables = atto
    bf16 = create_model("upernet_convnext_atto", 5, dtype="bfloat16")
    images = jax.random.uniform(jax.random.key(3), (2, 32, 32, 3))
    low = bf16.apply(variables, images)
    high = model.apply(variables, images)
    assert low.dtype == jnp.float32
    assert float(jnp.abs(low - high).max()) < 0.05 * float(jnp.abs(high).max()) + 0.05


def test_normalisation_is_a_model_option(atto):
    model, variables = atto
    normalised = create_model("upernet_convnext_atto", 5, normalize=True)
    images = jax.random.uniform(jax.random.key(4), (1, 32, 32, 3))
    assert not np.allclose(model.apply(variables, images), normalised.apply(variables, images))


def test_jitted_forward_compiles_once_for_repeated_shapes(atto):
    model, variables = atto

    @jax.jit
    @chex.assert_max_traces(n=1)
    def forward(variables, images):
        return model.apply(variables, images)

    for seed in range(3):
        forward(variables, jax.random.uniform(jax.random.key(seed), (2, 32, 32, 3))).block_until_ready()


def test_depthwise_implementations_agree():
    x = jax.random.normal(jax.random.key(0), (2, 9, 11, 4))
    shift = DepthwiseConv(7, "shift")
    conv = DepthwiseConv(7, "conv")
    variables = shift.init(jax.random.key(1), x)
    np.testing.assert_allclose(shift.apply(variables, x), conv.apply(variables, x), atol=1e-5)


def test_adaptive_average_pool_matches_pytorch_bins():
    x = np.arange(2 * 7 * 5 * 1, dtype=np.float32).reshape(2, 7, 5, 1)
    pooled = np.asarray(adaptive_average_pool(jnp.asarray(x), 3))
    # PyTorch bins for length 7 → 3: [0,3), [2,5), [4,7); for 5 → 3: [0,2), [1,4), [3,5).
    rows, cols = [(0, 3), (2, 5), (4, 7)], [(0, 2), (1, 4), (3, 5)]
    expected = np.array([[[x[b, r0:r1, c0:c1, 0].mean() for c0, c1 in cols] for r0, r1 in rows] for b in range(2)])
    np.testing.assert_allclose(pooled[..., 0], expected, rtol=1e-6)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((32, 32, 3), np.float32), "shape"),
        (np.zeros((1, 32, 32, 1), np.float32), "shape"),
        (np.zeros((1, 32, 32, 3), np.uint8), "floating"),
    ],
)
def test_bad_images_are_rejected(atto, images, message):
    model, variables = atto
    with pytest.raises(ValueError, match=message):
        model.apply(variables, images)


def test_unknown_names_and_options_are_rejected():
    with pytest.raises(ValueError, match="unknown model 'upernet_resnet9'.*upernet_convnext_atto"):
        create_model("upernet_resnet9", 5)
    with pytest.raises(ValueError, match="does not take option"):
        create_model("upernet_convnext_atto", 5, depth=3)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("upernet_convnext_atto", 0)
