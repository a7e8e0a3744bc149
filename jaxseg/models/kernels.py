"""Convolution kernels, and the one place that picks them: ``resolve_kernels``.

A model runs one of two kernel sets, chosen once by ``create_model(..., kernels=...)`` and stored in the modules'
``kernels`` attribute (and ``ConvNeXt.depthwise``), never looked up at trace time:

- ``"xla"``: plain ``jax.lax`` convolutions (``flax.linen.Conv``, grouped convolution for depthwise). What GPU and
  TPU compilers handle natively.
- ``"cpu"``: the kernels of this module, written for XLA:CPU. Dense 2-D NHWC/HWIO convolutions go through
  ``conv_general_dilated`` (same signature and values as lax's), whose gradients are convolutions that stay fast
  inside ``lax`` loops, and wide float32 3x3 stride-1 ones through Winograd F(2x2, 3x3) (``winograd.conv3x3``);
  depthwise convolutions are shifted multiply-adds (``depthwise_shift``).

Both sets have the same parameters and agree to float32 rounding, so checkpoints do not depend on the choice (it
is not recorded in checkpoint metadata) and every differentiation mode works with both: ``grad``/``vjp``,
``jvp``/``jacfwd``, ``vmap`` of either, and higher orders.

``resolve_kernels("auto")`` is ``"cpu"`` when the model will run on CPU devices (``jax.default_backend()``, or
the devices given) and ``"xla"`` otherwise; a depthwise choice of ``"auto"`` follows it (``resolve_depthwise``).
"""

from __future__ import annotations

import functools
from typing import Iterable, Literal, Sequence

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jaxseg.models import winograd
from jaxseg.models.winograd import Pads

KernelChoice = Literal["auto", "cpu", "xla"]
KERNELS = ("cpu", "xla")  # what "auto" resolves to, and what modules store
DepthwiseImplementation = Literal["auto", "shift", "conv"]
DEPTHWISE_IMPLEMENTATIONS = ("shift", "conv")

NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


def resolve_kernels(kernels: str = "auto", devices: Iterable[jax.Device] | None = None) -> str:
    """``"cpu"`` or ``"xla"``: ``kernels`` itself, or for ``"auto"`` the set for the platform the model will run
    on — that of ``devices`` when given (all must share one platform), else ``jax.default_backend()``.

    The only place in ``jaxseg.models`` that asks JAX for the platform; ``create_model`` calls it once per model.
    """
    if kernels in KERNELS:
        return kernels
    if kernels != "auto":
        raise ValueError(f"kernels must be 'auto', 'cpu' or 'xla'; got {kernels!r}")
    if devices is None:
        platform = jax.default_backend()
    else:
        platforms = {device.platform for device in devices}
        if len(platforms) != 1:
            raise ValueError(f"kernels='auto' needs devices of one platform; got {sorted(platforms) or 'none'}")
        platform = platforms.pop()
    return "cpu" if platform == "cpu" else "xla"


def resolve_depthwise(implementation: str, kernels: str) -> str:
    """``"shift"`` or ``"conv"``: ``implementation`` itself, or for ``"auto"`` the one of the resolved ``kernels``
    set (``"cpu"`` → shifted multiply-adds: XLA:CPU's grouped convolution is ~10x slower; ``"xla"`` → the library
    grouped convolution)."""
    if kernels not in KERNELS:
        raise ValueError(f"resolve kernels first ('cpu' or 'xla'); got {kernels!r}")
    if implementation == "auto":
        return "shift" if kernels == "cpu" else "conv"
    if implementation not in DEPTHWISE_IMPLEMENTATIONS:
        raise ValueError(f"depthwise implementation must be 'auto', 'shift' or 'conv'; got {implementation!r}")
    return implementation


def depthwise_shift(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x (B, H, W, C) * kernel (k, k, 1, C), stride 1, zero padding k // 2 (k odd) → (B, H, W, C), as k² shifted
    multiply-adds (the grouped ``lax`` convolution gives the same values)."""
    k = kernel.shape[0]
    pad = k // 2
    height, width = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return sum(padded[:, i : i + height, j : j + width, :] * kernel[i, j, 0] for i in range(k) for j in range(k))


def conv_general_dilated(
    lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding, lhs_dilation=None, rhs_dilation=None,
    dimension_numbers=None, feature_group_count: int = 1, batch_group_count: int = 1, precision=None,
    preferred_element_type=None, out_sharding=None,
) -> jax.Array:
    """``jax.lax.conv_general_dilated`` (same signature and values) with gradients that are fast in XLA:CPU loops.

    JAX differentiates a convolution into convolutions with permuted dimension numbers (input gradient: the
    kernel's I/O roles swapped; kernel gradient: the batch axis contracted). At the top level of a program
    XLA:CPU turns them into its fast convolution, but inside a ``lax.while_loop``/``fori_loop`` body it runs a
    generic path: the input gradient 3-6x and the kernel gradient 10-40x slower (benchmarks/RESULTS.md,
    "Attacks"). Every attack, and PGD inside adversarial training, is such a loop. The 2-D NHWC/HWIO
    convolutions without groups or input dilation (all of this package's dense convolutions, any stride, padding
    and kernel dilation) therefore run as ``_conv_nhwc``, whose gradients are NHWC/HWIO convolutions of
    transposed operands, except wide float32 3x3 stride-1 convolutions, which run as Winograd F(2x2, 3x3)
    (``jaxseg.models.winograd``: 2.25x fewer multiplications, no convolution at all); anything else is passed
    to lax unchanged. Every differentiation mode works (forward and reverse, ``vmap``, higher orders).

    Meant for CPU: GPU/TPU compilers handle JAX's own rules natively, and a kernel gradient written as a
    convolution with an (H', W') "kernel" may be slow there (``create_model`` uses it only for ``kernels='cpu'``).
    """
    if _is_nhwc_2d(lhs, rhs, lhs_dilation, dimension_numbers, feature_group_count, batch_group_count,
                   out_sharding):
        strides = tuple(window_strides)
        dilation = tuple(rhs_dilation or (1, 1))
        pads = _explicit_padding(padding, lhs, rhs, strides, dilation)
        if winograd.worthwhile(lhs, rhs, strides, dilation):
            return winograd.conv3x3(lhs, rhs, pads, precision, preferred_element_type)
        return _conv_nhwc(lhs, rhs, strides, pads, dilation, precision, preferred_element_type)
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
        batch_group_count, precision, preferred_element_type, out_sharding=out_sharding,
    )


def _is_nhwc_2d(lhs, rhs, lhs_dilation, dimension_numbers, feature_group_count, batch_group_count,
                out_sharding) -> bool:
    """Whether the convolution is 2-D NHWC/HWIO, ungrouped, without input dilation or output sharding."""
    if lhs.ndim != 4 or feature_group_count != 1 or batch_group_count != 1 or out_sharding is not None:
        return False
    if lhs_dilation is not None and tuple(lhs_dilation) != (1, 1):
        return False
    spec = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    return spec == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC_HWIO)


def _explicit_padding(padding, lhs: jax.Array, rhs: jax.Array, strides: tuple[int, int],
                      dilation: tuple[int, int]) -> Pads:
    """``padding`` ('SAME', 'VALID', ... or (low, high) pairs) as ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        window = [d * (k - 1) + 1 for k, d in zip(rhs.shape[:2], dilation)]
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], window, strides, padding)
    return tuple((int(low), int(high)) for low, high in padding)


def _lax_conv(lhs: jax.Array, rhs: jax.Array, strides, pads, dilation, precision, preferred_element_type,
              dimension_numbers=NHWC_HWIO) -> jax.Array:
    """lax convolution with explicit padding and kernel dilation, no input dilation."""
    return jax.lax.conv_general_dilated(
        lhs, rhs, strides, pads, None, dilation, dimension_numbers, precision=precision,
        preferred_element_type=preferred_element_type,
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def _conv_nhwc(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads, dilation: tuple[int, int],
               precision, preferred_element_type) -> jax.Array:
    """x (B, H, W, I) * kernel (KH, KW, I, O) → (B, H', W', O): the lax convolution, whose JVP (``_conv_nhwc_jvp``)
    is written so that JAX's transposes of it — the gradients — are NHWC/HWIO convolutions."""
    return _lax_conv(x, kernel, strides, pads, dilation, precision, preferred_element_type)


@functools.partial(_conv_nhwc.defjvp, symbolic_zeros=True)
def _conv_nhwc_jvp(strides, pads, dilation, precision, preferred_element_type, primals, tangents):
    """The convolution's tangent, linear in (dx, dkernel), as two lax convolutions whose operands are transposed
    *physically* so that lax's transpose rules (reverse mode) yield canonical NHWC/HWIO convolutions:

    - ``_input_tangent`` convolves dx with the kernel stored (KH, KW, O, I) and read as "HWOI": its transpose,
      the input gradient, reads the spatially flipped (KH, KW, O, I) array as "HWIO" and convolves the
      stride-dilated cotangent with it.
    - ``_kernel_tangent`` convolves x stored (I, H, W, B), read as "CHWN", with dkernel stored (I, KH, KW, O),
      read as "IHWO", into (H', W', B, O), read as "HWNC": its transpose, the kernel gradient, convolves x as
      NHWC (N = I, C = B) with the cotangent as HWIO ((H', W', B, O)) into (I, KH, KW, O) as NHWC, i.e. sums
      over the batch with window stride = kernel dilation and kernel dilation = stride.

    The kernel's plain transposes would permute dimension numbers instead, which XLA:CPU runs 3-40x slower inside
    loops. Forward mode evaluates these two convolutions as written (correct, not tuned for speed). Tangents
    JAX knows to be zero (``SymbolicZero``: e.g. the parameters' when differentiating w.r.t. the images) cost
    nothing.
    """
    x, kernel = primals
    dx, dkernel = tangents
    options = (strides, pads, dilation, precision, preferred_element_type)
    y = _conv_nhwc(x, kernel, *options)
    terms = []
    if not isinstance(dx, SymbolicZero):
        terms.append(_input_tangent(dx, kernel, *options))
    if not isinstance(dkernel, SymbolicZero):
        terms.append(_kernel_tangent(x, dkernel, *options))
    return y, functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)


def _input_tangent(dx, kernel, strides, pads, dilation, precision, preferred_element_type):
    """conv(dx, kernel) with the kernel stored (KH, KW, O, I); see ``_conv_nhwc_jvp``."""
    return _lax_conv(dx, kernel.swapaxes(2, 3), strides, pads, dilation, precision, preferred_element_type,
                     ("NHWC", "HWOI", "NHWC"))


def _kernel_tangent(x, dkernel, strides, pads, dilation, precision, preferred_element_type):
    """conv(x, dkernel) with x stored (I, H, W, B) and dkernel (I, KH, KW, O); see ``_conv_nhwc_jvp``."""
    y = _lax_conv(x.transpose(3, 1, 2, 0), dkernel.transpose(2, 0, 1, 3), strides, pads, dilation, precision,
                  preferred_element_type, ("CHWN", "IHWO", "HWNC"))
    return y.transpose(2, 0, 1, 3)
