"""jaxseg.models.kernels.conv_general_dilated (the CPU kernels): same values and gradients as
jax.lax.conv_general_dilated. Its explicit-gradient path is a ``custom_jvp`` (jaxprs show ``custom_jvp_call``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import create_model, init_variables, winograd
from jaxseg.models.kernels import NHWC_HWIO, conv_general_dilated

CASES = {  # name: (kernel size, strides, padding, kernel dilation, input (B, H, W, I), output features O)
    "1x1": (1, (1, 1), [(0, 0), (0, 0)], (1, 1), (2, 9, 8, 3), 5),
    "3x3": (3, (1, 1), [(1, 1), (1, 1)], (1, 1), (2, 9, 8, 3), 5),
    "7x7": (7, (1, 1), [(3, 3), (3, 3)], (1, 1), (2, 9, 8, 3), 5),
    "3x3 asymmetric padding": (3, (1, 1), [(0, 2), (1, 0)], (1, 1), (2, 8, 9, 4), 3),
    "1x1 padding beyond the kernel": (1, (1, 1), [(1, 2), (2, 0)], (1, 1), (2, 7, 8, 3), 5),
    "3x3 SAME": (3, (1, 1), "SAME", (1, 1), (2, 9, 8, 3), 5),
    "3x3 stride 2, odd input": (3, (2, 2), [(1, 1), (1, 1)], (1, 1), (2, 9, 7, 3), 5),
    "3x3 stride 2, even input": (3, (2, 2), [(1, 1), (1, 1)], (1, 1), (2, 8, 10, 3), 5),
    "7x7 stride 2 (ResNet stem)": (7, (2, 2), [(3, 3), (3, 3)], (1, 1), (2, 11, 12, 3), 4),
    "2x2 stride 2 VALID": (2, (2, 2), "VALID", (1, 1), (2, 8, 9, 4), 6),
    "4x4 stride 4 VALID (patchify)": (4, (4, 4), "VALID", (1, 1), (2, 16, 13, 3), 5),
    "3x3 dilation 2": (3, (1, 1), [(2, 2), (2, 2)], (2, 2), (2, 9, 10, 3), 5),
    "3x3 stride (1, 2), dilation (2, 1)": (3, (1, 2), [(2, 1), (0, 1)], (2, 1), (2, 9, 10, 3), 5),
    # Wide enough for the Winograd path (winograd.MIN_CHANNEL_PAIRS); odd sizes leave an overhanging tile.
    "3x3 wide (Winograd)": (3, (1, 1), [(1, 1), (1, 1)], (1, 1), (2, 7, 6, 256), 256),
    "3x3 wide SAME, odd (Winograd)": (3, (1, 1), "SAME", (1, 1), (1, 5, 9, 320), 224),
    "3x3 wide asymmetric padding (Winograd)": (3, (1, 1), [(0, 2), (2, 0)], (1, 1), (1, 6, 5, 256), 260),
}


def random_operands(shape, kernel_size, features, dtype=jnp.float32):
    x_key, w_key = jax.random.split(jax.random.key(0))
    x = jax.random.normal(x_key, shape, dtype)
    fan_in = kernel_size * kernel_size * shape[-1]  # unit-scale outputs, as in a network (and tanh not saturated)
    w = jax.random.normal(w_key, (kernel_size, kernel_size, shape[-1], features)) / fan_in**0.5
    return x, w.astype(dtype)


def conv_with(conv, strides, padding, dilation, **options):
    """(x (B, H, W, I), w (KH, KW, I, O)) → (B, H', W', O) with ``conv`` = ours or lax's."""
    return lambda x, w: conv(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=NHWC_HWIO, **options)


def values_and_gradients(conv, x, w):
    """Output and (dx, dw) of sum(output * fixed cotangent), under jit."""

    def run(x, w):
        y, vjp = jax.vjp(conv, x, w)
        cotangent = jnp.cos(jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))
        return y, vjp(cotangent)

    return jax.jit(run)(x, w)


def assert_trees_close(actual, expected, rtol=1e-5, atol=1e-5):
    """Elementwise closeness; ``atol`` grows to 2e-6 of a leaf's largest magnitude (float32 sums over hundreds of
    channels round at that scale: lax itself is that far from a float64 reference)."""

    def check(a, b):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=max(atol, 2e-6 * float(np.abs(b).max())))

    jax.tree.map(check, actual, expected)


@pytest.mark.parametrize("case", CASES)
def test_values_and_both_gradients_equal_lax(case):
    kernel_size, strides, padding, dilation, shape, features = CASES[case]
    x, w = random_operands(shape, kernel_size, features)
    ours = values_and_gradients(conv_with(conv_general_dilated, strides, padding, dilation), x, w)
    reference = values_and_gradients(conv_with(jax.lax.conv_general_dilated, strides, padding, dilation), x, w)
    assert ours[0].shape == reference[0].shape
    assert_trees_close(ours, reference)


@pytest.mark.parametrize("case", ["3x3", "3x3 stride 2, odd input", "4x4 stride 4 VALID (patchify)",
                                  "3x3 wide (Winograd)"])
def test_gradients_inside_fori_loop_equal_lax(case):
    """Gradient descent on the input and the kernel in a loop, where XLA:CPU would use its slow path."""
    kernel_size, strides, padding, dilation, shape, features = CASES[case]

    def descend(conv):
        loss = lambda x, w: jnp.sum(jnp.tanh(conv(x, w)))
        step = lambda i, xw: jax.tree.map(lambda v, g: v - 1e-2 * g, xw, jax.grad(loss, (0, 1))(*xw))
        return jax.jit(lambda x, w: jax.lax.fori_loop(0, 3, step, (x, w)))

    x, w = random_operands(shape, kernel_size, features)
    ours = descend(conv_with(conv_general_dilated, strides, padding, dilation))(x, w)
    reference = descend(conv_with(jax.lax.conv_general_dilated, strides, padding, dilation))(x, w)
    assert_trees_close(ours, reference, rtol=1e-4, atol=1e-5)


def test_per_example_gradients_under_vmap_equal_lax():
    x, w = random_operands((3, 8, 8, 2), 3, 4)
    padding = [(1, 1), (1, 1)]

    def per_example(conv):
        loss = lambda xi, w: jnp.sum(jnp.sin(conv(xi[None], w)))
        return jax.jit(jax.vmap(jax.grad(loss, (0, 1)), in_axes=(0, None)))(x, w)

    ours = per_example(conv_with(conv_general_dilated, (1, 1), padding, (1, 1)))
    reference = per_example(conv_with(jax.lax.conv_general_dilated, (1, 1), padding, (1, 1)))
    assert_trees_close(ours, reference)


@pytest.mark.parametrize(
    "options",
    [
        dict(feature_group_count=2),
        dict(lhs_dilation=(2, 1)),
        dict(dimension_numbers=("NCHW", "OIHW", "NCHW")),
    ],
    ids=["groups", "input dilation", "NCHW"],
)
def test_other_convolutions_are_passed_to_lax(options):
    x, w = random_operands((2, 6, 7, 4), 3, 4)
    if options.get("feature_group_count"):
        w = w[:, :, :2]
    if options.get("dimension_numbers"):
        x, w = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
    options = dict(dict(dimension_numbers=NHWC_HWIO), **options)
    conv = lambda f: lambda x, w: f(x, w, (1, 1), [(1, 1), (1, 1)], **options)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(conv(conv_general_dilated)(x, w)), (0, 1)))(x, w))
    assert "custom_jvp" not in jaxpr
    assert_trees_close(values_and_gradients(conv(conv_general_dilated), x, w),
                       values_and_gradients(conv(jax.lax.conv_general_dilated), x, w))


def test_fast_path_is_taken_for_nhwc():
    x, w = random_operands((1, 5, 5, 2), 3, 2)
    conv = conv_with(conv_general_dilated, (1, 1), [(1, 1), (1, 1)], (1, 1))
    assert "custom_jvp" in str(jax.make_jaxpr(conv)(x, w))


@pytest.mark.parametrize("features, dtype, path", [(128, jnp.float32, "custom_jvp"), (256, jnp.float32, "winograd"),
                                                    (256, jnp.bfloat16, "custom_jvp")])
def test_wide_3x3_float32_convolutions_run_as_winograd(features, dtype, path):
    """Wide float32 3x3 stride-1 convolutions (and their gradients) contain no convolution at all; narrow ones,
    bfloat16 ones (whose transforms would round at bfloat16 resolution) and strided or dilated ones keep the
    explicit-gradient convolution."""
    x, w = random_operands((1, 6, 6, features), 3, features, dtype)
    conv = conv_with(conv_general_dilated, (1, 1), [(1, 1), (1, 1)], (1, 1))
    gradient_jaxpr = str(jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(conv(x, w)), (0, 1)))(x, w))
    assert ("conv_general_dilated" not in gradient_jaxpr) == (path == "winograd")
    assert ("custom_jvp" in str(jax.make_jaxpr(conv)(x, w))) == (path == "custom_jvp")
    assert winograd.worthwhile(x, w, (1, 1), (1, 1)) == (path == "winograd")
    assert not winograd.worthwhile(x, w, (2, 2), (1, 1)) and not winograd.worthwhile(x, w, (1, 1), (2, 2))


def test_winograd_rejects_other_kernel_sizes():
    x, w = random_operands((1, 6, 6, 4), 5, 4)
    with pytest.raises(ValueError, match="3x3 kernel"):
        winograd.conv3x3(x, w, ((2, 2), (2, 2)))


def test_other_backends_use_lax(monkeypatch):
    """A model created for another backend (kernels='auto' resolved there) runs no CPU kernel, although it is
    traced on the CPU; one created for the CPU does."""
    images = jnp.zeros((1, 32, 32, 3))

    def jaxpr(model):
        variables = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), images.shape))
        return str(jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, images))

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    gpu_model = create_model("upernet_convnext_atto", 3)
    monkeypatch.undo()
    assert "name=_conv_nhwc" not in jaxpr(gpu_model)
    assert "name=_conv_nhwc" in jaxpr(create_model("upernet_convnext_atto", 3))


def test_bfloat16_keeps_dtypes_and_is_close_to_lax():
    x, w = random_operands((2, 8, 8, 8), 3, 8, jnp.bfloat16)
    padding = [(1, 1), (1, 1)]
    ours = values_and_gradients(conv_with(conv_general_dilated, (1, 1), padding, (1, 1)), x, w)
    reference = values_and_gradients(conv_with(jax.lax.conv_general_dilated, (1, 1), padding, (1, 1)), x, w)
    assert [a.dtype for a in jax.tree.leaves(ours)] == [jnp.bfloat16] * 3
    # Accumulation order differs; compare in float32 at bf16 resolution relative to each array's scale.
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        np.testing.assert_allclose(a, b, atol=0.02 * np.abs(b).max())


def test_preferred_element_type_float32_from_bfloat16():
    x, w = random_operands((2, 6, 6, 4), 3, 4, jnp.bfloat16)
    conv = conv_with(conv_general_dilated, (1, 1), [(1, 1), (1, 1)], (1, 1), preferred_element_type=jnp.float32)
    reference = conv_with(jax.lax.conv_general_dilated, (1, 1), [(1, 1), (1, 1)], (1, 1),
                          preferred_element_type=jnp.float32)
    (y, (dx, dw)), (y_ref, (dx_ref, dw_ref)) = values_and_gradients(conv, x, w), values_and_gradients(reference, x, w)
    assert (y.dtype, dx.dtype, dw.dtype) == (jnp.float32, jnp.bfloat16, jnp.bfloat16)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in ((dx, dx_ref), (dw, dw_ref)):
        b = np.asarray(b, np.float32)
        np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.02 * np.abs(b).max())


def test_upernet_convnext_atto_matches_plain_lax_convolutions():
    """Same parameter tree, logits and input gradient as the model built on jax.lax.conv_general_dilated."""
    images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))

    def logits_and_input_gradient(kernels):
        model = create_model("upernet_convnext_atto", 4, kernels=kernels)
        variables = init_variables(model, jax.random.key(0), images.shape)
        logits_fn = lambda x: model.apply(variables, x, train=False)
        gradient = jax.grad(lambda x: jnp.sum(jnp.sin(logits_fn(x))))
        return jax.tree.map(jnp.shape, variables), jax.jit(logits_fn)(images), jax.jit(gradient)(images)

    shapes, logits, gradient = logits_and_input_gradient("cpu")
    reference_shapes, reference_logits, reference_gradient = logits_and_input_gradient("xla")
    assert shapes == reference_shapes
    np.testing.assert_allclose(logits, reference_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gradient, reference_gradient, rtol=1e-4, atol=1e-6 * np.abs(reference_gradient).max())
