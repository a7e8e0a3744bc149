"""Building blocks shared by the backbones and heads.

All modules take NHWC inputs. Convolution kernels are HWIO, as Flax stores them; the PyTorch converters
transpose OIHW into this layout. Every dense (ungrouped) convolution is built with ``Conv``, and every module
that holds convolutions has a ``kernels`` attribute ('cpu' | 'xla', see ``jaxseg.models.kernels``) saying which
convolution kernels it runs; ``create_model`` sets it once for the whole model. Modules never ask JAX for the
backend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxseg.models import kernels as kernel_sets


def Conv(*args, kernels: str, **kwargs) -> nn.Conv:  # noqa: N802  (stands in for the nn.Conv class)
    """``flax.linen.Conv`` with the same arguments, parameters and names, computed by the ``kernels`` set:
    ``"xla"`` → plain ``nn.Conv`` (``lax.conv_general_dilated``), ``"cpu"`` → ``kernels.conv_general_dilated``."""
    if kernels == "cpu":
        return nn.Conv(*args, conv_general_dilated=kernel_sets.conv_general_dilated, **kwargs)
    if kernels == "xla":
        return nn.Conv(*args, **kwargs)
    raise ValueError(f"kernels must be 'cpu' or 'xla' in a module ('auto' is resolved by create_model); "
                     f"got {kernels!r}")


class DepthwiseConv(nn.Module):
    """k x k depthwise convolution, stride 1, symmetric zero padding k // 2.

    ``implementation``: ``"shift"`` (k² shifted multiply-adds, ``kernels.depthwise_shift``: fast on CPU) or
    ``"conv"`` (the grouped ``lax`` convolution). Parameters ``kernel`` (k, k, 1, C) and ``bias`` (C,) are the
    same whichever implementation runs, so a checkpoint does not depend on it.
    """

    kernel_size: int = 7
    implementation: str = "conv"
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
        if self.implementation == "conv":
            y = jax.lax.conv_general_dilated(
                x, kernel, (1, 1), [(pad, pad), (pad, pad)],
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels,
            )
        elif self.implementation == "shift":
            y = kernel_sets.depthwise_shift(x, kernel)
        else:
            raise ValueError(f"depthwise implementation must be 'shift' or 'conv' in a module ('auto' is resolved "
                             f"by create_model); got {self.implementation!r}")
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
    when ``train`` is False. ``kernels``: the convolution kernels ('cpu' | 'xla', see ``Conv``).
    """

    features: int
    kernel_size: int = 1
    dtype: jnp.dtype | None = None
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        pad = self.kernel_size // 2
        x = Conv(
            self.features, (self.kernel_size, self.kernel_size), padding=[(pad, pad), (pad, pad)],
            use_bias=False, dtype=self.dtype, kernels=self.kernels, name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name="bn")(x)
        return nn.relu(x)


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
    """Bilinear resize of NHWC ``x`` with half-pixel centres (PyTorch ``align_corners=False``), no antialias."""
    if x.shape[1:3] == (height, width):
        return x
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), "bilinear", antialias=False)
