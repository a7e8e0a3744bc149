"""Building blocks shared by the backbones and heads.

All modules take NHWC inputs. Convolution kernels are HWIO, as Flax stores them; the PyTorch converters
transpose OIHW into this layout. Every dense (ungrouped) convolution is built with ``Conv``, whose gradients
stay fast inside XLA:CPU loops (see ``conv_general_dilated``).
"""

from __future__ import annotations

import functools
from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxseg.models import winograd
from jaxseg.models.winograd import Pads

DepthwiseImplementation = Literal["auto", "shift", "conv"]

NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


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
    "Attacks"). Every attack, and PGD inside adversarial training, is such a loop. On CPU, the 2-D NHWC/HWIO
    convolutions without groups or input dilation (all of this package's dense convolutions, any stride,
    padding and kernel dilation) get a ``custom_vjp`` whose two gradients are explicit NHWC/HWIO convolutions
    of transposed operands (``_input_gradient``, ``_kernel_gradient``), except wide float32 3x3 stride-1
    convolutions, which run as Winograd F(2x2, 3x3) (``jaxseg.models.winograd``: 2.25x fewer multiplications,
    no convolution at all); anything else is passed to lax unchanged. Reverse mode only: the explicit-gradient
    path has no forward-mode (``jvp``) rule.
    """
    if _has_fast_gradient(lhs, rhs, lhs_dilation, dimension_numbers, feature_group_count, batch_group_count,
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


def Conv(*args, **kwargs) -> nn.Conv:  # noqa: N802  (stands in for the nn.Conv class)
    """``flax.linen.Conv`` with the same arguments, parameters and names, computed by ``conv_general_dilated``."""
    return nn.Conv(*args, conv_general_dilated=conv_general_dilated, **kwargs)


def _has_fast_gradient(lhs, rhs, lhs_dilation, dimension_numbers, feature_group_count, batch_group_count,
                       out_sharding) -> bool:
    """Whether the backend is the CPU (GPU/TPU compilers handle JAX's rules natively, and a kernel gradient
    written as a convolution with an (H', W') "kernel" may be slow there) and the convolution is 2-D
    NHWC/HWIO, ungrouped, without input dilation or output sharding."""
    if jax.default_backend() != "cpu":
        return False
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
              lhs_dilation=(1, 1)) -> jax.Array:
    """NHWC x HWIO → NHWC convolution."""
    return jax.lax.conv_general_dilated(
        lhs, rhs, strides, pads, lhs_dilation, dilation, NHWC_HWIO, precision=precision,
        preferred_element_type=preferred_element_type,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _conv_nhwc(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads, dilation: tuple[int, int],
               precision, preferred_element_type) -> jax.Array:
    """x (B, H, W, I) * kernel (KH, KW, I, O) → (B, H', W', O), with ``_input_gradient``/``_kernel_gradient``."""
    return _lax_conv(x, kernel, strides, pads, dilation, precision, preferred_element_type)


def _conv_nhwc_forward(x, kernel, strides, pads, dilation, precision, preferred_element_type):
    return _lax_conv(x, kernel, strides, pads, dilation, precision, preferred_element_type), (x, kernel)


def _conv_nhwc_backward(strides, pads, dilation, precision, preferred_element_type, residuals, g):
    del preferred_element_type  # the gradients are computed in g's dtype, then cast to the operands' dtypes
    x, kernel = residuals
    return (
        _input_gradient(g, x.shape, kernel, strides, pads, dilation, precision).astype(x.dtype),
        _kernel_gradient(g, x, kernel.shape, strides, pads, dilation, precision).astype(kernel.dtype),
    )


_conv_nhwc.defvjp(_conv_nhwc_forward, _conv_nhwc_backward)


def _input_gradient(g: jax.Array, x_shape, kernel: jax.Array, strides, pads: Pads, dilation, precision) -> jax.Array:
    """d(loss)/dx (B, H, W, I) from g (B, H', W', O): the transposed convolution, written as a forward one.

    g, zero-dilated by the stride (``lhs_dilation``), convolved with the kernel flipped in space and with its
    I/O axes swapped: (KH, KW, O, I). Edge padding d(k-1) - low on the low side and d(k-1) - high + r on the
    high side, r = the input rows/columns the strided forward convolution never reached (may be negative).
    """
    flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3).astype(g.dtype)
    edges = []
    for size, k, stride, d, (low, high) in zip(x_shape[1:3], kernel.shape[:2], strides, dilation, pads):
        span = d * (k - 1)
        unreached = (size + low + high - span - 1) % stride
        edges.append((span - low, span - high + unreached))
    return _lax_conv(g, flipped, (1, 1), edges, dilation, precision, None, lhs_dilation=strides)


def _kernel_gradient(g: jax.Array, x: jax.Array, kernel_shape, strides, pads: Pads, dilation,
                     precision) -> jax.Array:
    """d(loss)/dkernel (KH, KW, I, O): x as (I, H, W, B) convolved with g as (H', W', B, O), summing over the
    batch; window stride = kernel dilation, kernel dilation = stride. Output (I, >=KH, >=KW, O), cropped."""
    lhs = x.transpose(3, 1, 2, 0).astype(g.dtype)
    rhs = g.transpose(1, 2, 0, 3)
    out = _lax_conv(lhs, rhs, dilation, pads, strides, precision, None)
    return out[:, : kernel_shape[0], : kernel_shape[1]].transpose(1, 2, 0, 3)


def resolve_depthwise(implementation: DepthwiseImplementation) -> str:
    """'auto' picks the shifted multiply-add form on CPU (XLA:CPU's grouped convolution is ~10x slower,
    see PERFORMANCE.md) and the library convolution on GPU/TPU."""
    if implementation == "auto":
        return "shift" if jax.default_backend() == "cpu" else "conv"
    if implementation not in ("shift", "conv"):
        raise ValueError(f"depthwise implementation must be 'auto', 'shift' or 'conv'; got {implementation!r}")
    return implementation


class DepthwiseConv(nn.Module):
    """k x k depthwise convolution, stride 1, symmetric zero padding k // 2.

    Parameters ``kernel`` (k, k, 1, C) and ``bias`` (C,) are the same whichever implementation runs,
    so a checkpoint does not depend on the backend.
    """

    kernel_size: int = 7
    implementation: DepthwiseImplementation = "auto"
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, channels), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        dtype = self.dtype or x.dtype
        x, kernel, bias = x.astype(dtype), kernel.astype(dtype), bias.astype(dtype)
        pad = k // 2
        if resolve_depthwise(self.implementation) == "conv":
            y = jax.lax.conv_general_dilated(
                x, kernel, (1, 1), [(pad, pad), (pad, pad)],
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels,
            )
        else:
            height, width = x.shape[1:3]
            padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            y = sum(
                padded[:, i : i + height, j : j + width, :] * kernel[i, j, 0]
                for i in range(k)
                for j in range(k)
            )
        return y + bias


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``rate`` in training.

    Uses the ``dropout`` RNG stream; surviving samples are scaled by 1 / (1 - rate).
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, 0.0).astype(x.dtype)


class ConvNormAct(nn.Module):
    """Convolution (no bias) + BatchNorm + ReLU: mmsegmentation's ``ConvModule`` with BN.

    BatchNorm uses PyTorch's defaults (momentum 0.1 → Flax 0.9, eps 1e-5) and running statistics
    when ``train`` is False.
    """

    features: int
    kernel_size: int = 1
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        pad = self.kernel_size // 2
        x = Conv(
            self.features, (self.kernel_size, self.kernel_size), padding=[(pad, pad), (pad, pad)],
            use_bias=False, dtype=self.dtype, name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name="bn")(x)
        return nn.relu(x)


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
    """Bilinear resize of NHWC ``x`` with half-pixel centres (PyTorch ``align_corners=False``), no antialias."""
    if x.shape[1:3] == (height, width):
        return x
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), "bilinear", antialias=False)
