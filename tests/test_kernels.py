"""Kernel choice (jaxseg.models.kernels): made once by create_model, stored in module attributes, never looked up
at trace time, not recorded in checkpoints; every differentiation mode works with every choice."""

import ast
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import checkpoint
from jaxseg.models import create_model, init_variables, kernels, list_models
from jaxseg.models.kernels import conv_general_dilated, resolve_depthwise, resolve_kernels
from jaxseg.models.layers import Conv, DepthwiseConv

from test_fast_conv import CASES, assert_trees_close, conv_with, random_operands

MODELS_DIR = pathlib.Path(kernels.__file__).parent
FAMILIES = ["upernet_convnext_atto", "convnext_atto_cvst", "resnet50", "pspnet_resnet50", "vit_s16", "segmenter_vit_s"]


def submodules_with_kernels(model):
    """The modules given to ``model`` at construction (backbone, heads) that have a ``kernels`` attribute."""
    parts = [getattr(model, name, None) for name in ("backbone", "decode_head", "auxiliary_head")]
    return [part for part in parts if part is not None and hasattr(part, "kernels")]


def model_jaxpr(model, size=32):
    images = jnp.zeros((1, size, size, 3))
    variables = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), images.shape))
    return str(jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, images))


# --- the option ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("choice", kernels.KERNELS)
def test_kernels_option_is_stored_in_the_modules_and_honoured(name, choice):
    model = create_model(name, 3, kernels=choice)
    parts = submodules_with_kernels(model)
    assert parts and all(part.kernels == choice for part in parts)
    # The explicit-gradient convolution appears in the traced model exactly when the CPU kernels were chosen.
    assert ("name=_conv_nhwc" in model_jaxpr(model)) == (choice == "cpu")


def test_every_registered_model_takes_the_kernels_option():
    for name in list_models():
        for choice in kernels.KERNELS:
            assert all(part.kernels == choice for part in submodules_with_kernels(create_model(name, 2, kernels=choice)))


@pytest.mark.parametrize("choice, depthwise, expected", [
    ("cpu", "auto", "shift"), ("xla", "auto", "conv"), ("cpu", "conv", "conv"), ("xla", "shift", "shift"),
])
def test_depthwise_auto_follows_the_kernels(choice, depthwise, expected):
    model = create_model("upernet_convnext_atto", 3, kernels=choice, depthwise=depthwise)
    assert (model.backbone.kernels, model.backbone.depthwise) == (choice, expected)
    assert resolve_depthwise(depthwise, choice) == expected


@pytest.mark.parametrize("backend, expected", [("cpu", "cpu"), ("gpu", "xla"), ("tpu", "xla"), ("cuda", "xla")])
def test_auto_resolves_by_platform_once_at_creation(monkeypatch, backend, expected):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert resolve_kernels("auto") == resolve_kernels() == expected
    model = create_model("upernet_convnext_atto", 3)
    assert model.backbone.kernels == model.decode_head.kernels == expected
    assert model.backbone.depthwise == ("shift" if expected == "cpu" else "conv")
    # Nothing looks at the backend after creation: tracing works with the lookup broken.
    monkeypatch.setattr(jax, "default_backend", lambda: pytest.fail("default_backend called after create_model"))
    model_jaxpr(model)


def test_auto_resolves_from_the_devices_given(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_kernels("auto", jax.devices("cpu")) == "cpu"
    assert create_model("resnet50", 3, devices=jax.devices("cpu")).backbone.kernels == "cpu"
    gpus = [types.SimpleNamespace(platform="gpu")] * 2
    assert resolve_kernels("auto", gpus) == "xla"
    with pytest.raises(ValueError, match="one platform"):
        resolve_kernels("auto", gpus + jax.devices("cpu"))
    with pytest.raises(ValueError, match="one platform"):
        resolve_kernels("auto", [])
    assert resolve_kernels("xla", jax.devices("cpu")) == "xla"  # an explicit choice wins


def test_bad_choices_are_rejected():
    with pytest.raises(ValueError, match="kernels must be 'auto', 'cpu' or 'xla'"):
        create_model("upernet_convnext_atto", 3, kernels="gpu")
    with pytest.raises(ValueError, match="depthwise implementation"):
        create_model("upernet_convnext_atto", 3, depthwise="grouped")
    with pytest.raises(ValueError, match="resolve kernels first"):
        resolve_depthwise("auto", "auto")
    # Modules never resolve 'auto' themselves.
    with pytest.raises(ValueError, match="resolved by create_model"):
        Conv(4, (1, 1), kernels="auto")
    with pytest.raises(ValueError, match="resolved by create_model"):
        DepthwiseConv(3, "auto").init(jax.random.key(0), jnp.zeros((1, 5, 5, 2)))


def test_no_backend_lookup_outside_the_resolution_function():
    """``default_backend`` is used (as code, not in docstrings) only inside ``kernels.resolve_kernels``."""
    uses = []
    for path in sorted(MODELS_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in ast.walk(tree):
            name = getattr(node, "attr", None) or getattr(node, "id", None)
            if name == "default_backend" or (isinstance(node, ast.alias) and "default_backend" in node.name):
                enclosing = [f.name for f in functions if f.lineno <= node.lineno <= f.end_lineno]
                uses.append((path.relative_to(MODELS_DIR).as_posix(), enclosing[-1] if enclosing else None))
    assert uses == [("kernels.py", "resolve_kernels")]


# --- checkpoints ---------------------------------------------------------------------------------------------


def test_checkpoint_saved_with_cpu_kernels_loads_with_the_loading_platforms_default(tmp_path, monkeypatch):
    """The kernel choice is not a model property: metadata never record it and loading resolves 'auto' anew."""
    model = create_model("convnext_atto", 4)
    assert model.backbone.kernels == "cpu"
    images = jax.random.uniform(jax.random.key(2), (1, 32, 32, 3))
    variables = init_variables(model, jax.random.key(0), images.shape)
    options = {"drop_path_rate": 0.0, "normalize": False, "dtype": "float32", "depthwise": "auto"}  # as training
    checkpoint.save_variables(tmp_path / "ckpt", variables, {"model": "convnext_atto", "num_classes": 4,
                                                             "options": options})
    assert "kernels" not in str(checkpoint.read_metadata(tmp_path / "ckpt"))
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    module, loaded, _ = checkpoint.load_model(tmp_path / "ckpt")
    monkeypatch.undo()
    assert (module.backbone.kernels, module.backbone.depthwise) == ("xla", "conv")
    np.testing.assert_allclose(module.apply(loaded, images), model.apply(variables, images), rtol=1e-4, atol=1e-5)
    module, _, _ = checkpoint.load_model(tmp_path / "ckpt")
    assert (module.backbone.kernels, module.backbone.depthwise) == ("cpu", "shift")
    module, _, _ = checkpoint.load_model(tmp_path / "ckpt", model_options={"kernels": "xla"})
    assert module.backbone.kernels == "xla"


# --- differentiation modes -----------------------------------------------------------------------------------


def tangents_like(*arrays, seed=7):
    keys = jax.random.split(jax.random.key(seed), len(arrays))
    return tuple(jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, arrays))


@pytest.mark.parametrize("case", CASES)
def test_convolution_jvp_equals_lax(case):
    kernel_size, strides, padding, dilation, shape, features = CASES[case]
    x, w = random_operands(shape, kernel_size, features)
    dx, dw = tangents_like(x, w)

    def jvp(conv):
        return jax.jit(lambda *a: jax.jvp(conv_with(conv, strides, padding, dilation), a[:2], a[2:]))(x, w, dx, dw)

    assert_trees_close(jvp(conv_general_dilated), jvp(jax.lax.conv_general_dilated))


def test_convolution_jvp_of_one_operand_and_jacfwd_equal_lax():
    x, w = random_operands((2, 7, 6, 3), 3, 4)
    dx, dw = tangents_like(x, w)
    conv = conv_with(conv_general_dilated, (2, 2), "SAME", (1, 1))
    reference = conv_with(jax.lax.conv_general_dilated, (2, 2), "SAME", (1, 1))
    assert_trees_close(jax.jvp(lambda x: conv(x, w), (x,), (dx,)), jax.jvp(lambda x: reference(x, w), (x,), (dx,)))
    assert_trees_close(jax.jvp(lambda w: conv(x, w), (w,), (dw,)), jax.jvp(lambda w: reference(x, w), (w,), (dw,)))
    small = x[:1, :3, :3]
    assert_trees_close(jax.jacfwd(conv, (0, 1))(small, w), jax.jacfwd(reference, (0, 1))(small, w))


@pytest.mark.parametrize("case", ["3x3 stride 2, odd input", "3x3 stride (1, 2), dilation (2, 1)",
                                  "3x3 wide SAME, odd (Winograd)"])
def test_higher_order_and_batched_derivatives_equal_lax(case):
    """Forward-over-reverse (Hessian-vector products), reverse-over-reverse, vmap of jvp."""
    kernel_size, strides, padding, dilation, shape, features = CASES[case]
    x, w = random_operands(shape, kernel_size, features)
    dx, dw = tangents_like(x, w)

    def derivatives(conv, x, w, dx, dw):
        conv = conv_with(conv, strides, padding, dilation)
        loss = lambda x, w: jnp.sum(jnp.sin(conv(x, w)))
        gradient = jax.grad(loss, (0, 1))
        hvp = jax.jvp(gradient, (x, w), (dx, dw))[1]
        grad_of_grad = jax.grad(lambda x, w: sum(jnp.sum(g**2) for g in gradient(x, w)), (0, 1))(x, w)
        batched = jax.vmap(lambda t: jax.jvp(lambda x: conv(x, w), (x,), (t,))[1])(jnp.stack([dx, -2 * dx]))
        return hvp, grad_of_grad, batched

    ours = jax.jit(lambda *a: derivatives(conv_general_dilated, *a))(x, w, dx, dw)
    reference = jax.jit(lambda *a: derivatives(jax.lax.conv_general_dilated, *a))(x, w, dx, dw)
    assert_trees_close(ours, reference, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def atto_models():
    """upernet_convnext_atto with each kernel set (plain lax = 'xla'), sharing one set of variables, on images
    whose head convolutions take every CPU path: explicit-gradient convolutions, Winograd, shifted depthwise."""
    models = {choice: create_model("upernet_convnext_atto", 4, kernels=choice) for choice in kernels.KERNELS}
    images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    variables = init_variables(models["xla"], jax.random.key(0), images.shape)
    return models, variables, images


@pytest.mark.parametrize("choice", kernels.KERNELS)
def test_model_jvp_and_jacfwd_match_plain_lax(atto_models, choice):
    models, variables, images = atto_models
    (tangent,) = tangents_like(images)

    def forward_mode(model, variables, images, tangent):
        logits = lambda x: model.apply(variables, x)
        jvp = jax.jvp(logits, (images,), (tangent,))
        # d logits / d (per-image brightness): jacfwd pushes one tangent per image through the model under vmap.
        jacobian = jax.jacfwd(lambda s: logits(images * s[:, None, None, None]))(jnp.ones(2))
        return jvp, jacobian

    ours = jax.jit(lambda *a: forward_mode(models[choice], *a))(variables, images, tangent)
    reference = jax.jit(lambda *a: forward_mode(models["xla"], *a))(variables, images, tangent)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))


@pytest.mark.parametrize("choice", kernels.KERNELS)
def test_model_gradients_match_plain_lax(atto_models, choice):
    models, variables, images = atto_models

    def gradients(model):
        return jax.jit(jax.grad(lambda v, x: jnp.sum(jnp.sin(model.apply(v, x))), (0, 1)))(variables, images)

    ours, reference = gradients(models[choice]), gradients(models["xla"])
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))
