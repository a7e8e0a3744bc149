"""Building blocks shared by the backbones and heads.

All modules take NHWC inputs. Convolution kernels are HWIO, as Flax stores them; the PyTorch converters
transpose OIHW into this layout.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import flax.linen as nn

DepthwiseImplementation = Literal["auto", "shift", "conv"]


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
        x = nn.Conv(
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
