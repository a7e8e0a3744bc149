"""ConvNeXt (Liu et al. 2022) with the patchify stem or the ConvStem of Singh et al. 2023.

Block: depthwise 7x7 → LayerNorm(eps 1e-6) → Dense 4x → GELU (exact erf) → Dense → layer scale γ →
stochastic depth → residual. Downsampling between stages: LayerNorm then a 2x2 stride-2 convolution.

As a backbone (``num_classes=None``) it returns the four stage feature maps, each (B, H/s, W/s, C_i) for
strides s = 4, 8, 16, 32, optionally passed through a per-stage LayerNorm (``output_norms``, as the UPerNet
segmentation models use). With ``num_classes`` it is an ImageNet-style classifier: global average pool →
LayerNorm → Dense, returning (B, num_classes) logits.
"""

from __future__ import annotations

import functools
from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxseg.models.layers import Conv, DepthwiseConv, DropPath

CONVNEXT_SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    # name: (depths, dims), as in timm.
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
}

LAYER_NORM_EPS = 1e-6


class ConvNeXtBlock(nn.Module):
    dim: int
    drop_path: float = 0.0
    layer_scale_init: float = 1e-6
    depthwise: str = "conv"
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        shortcut = x
        x = DepthwiseConv(7, self.depthwise, dtype=self.dtype, name="conv_dw")(x)
        x = nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, name="norm")(x)
        x = nn.Dense(4 * self.dim, dtype=self.dtype, name="fc1")(x)
        x = nn.gelu(x, approximate=False)
        x = nn.Dense(self.dim, dtype=self.dtype, name="fc2")(x)
        if self.layer_scale_init > 0:
            gamma = self.param("gamma", nn.initializers.constant(self.layer_scale_init), (self.dim,), jnp.float32)
            x = x * gamma.astype(x.dtype)
        x = DropPath(self.drop_path)(x, deterministic=not train)
        return shortcut + x


class ConvStem(nn.Module):
    """Singh et al.'s stem: conv3x3/2 (3→C/2), LN, GELU, conv3x3/2 (C/2→C), LN, GELU. Output stride 4.

    Singh, Croce & Hein, NeurIPS 2023 (arXiv 2303.01870); the PyTorch ``stem.stem.{0,1,3,4}`` keys are conv1,
    norm1, conv2, norm2 here.
    """

    dim: int
    dtype: jnp.dtype | None = None
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(Conv, padding=[(1, 1), (1, 1)], dtype=self.dtype, kernels=self.kernels)
        x = conv(self.dim // 2, (3, 3), (2, 2), name="conv1")(x)
        x = nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, name="norm1")(x)
        x = nn.gelu(x, approximate=False)
        x = conv(self.dim, (3, 3), (2, 2), name="conv2")(x)
        x = nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, name="norm2")(x)
        return nn.gelu(x, approximate=False)


class PatchifyStem(nn.Module):
    """The original ConvNeXt stem: 4x4 stride-4 convolution then LayerNorm."""

    dim: int
    dtype: jnp.dtype | None = None
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = Conv(self.dim, (4, 4), (4, 4), padding="VALID", dtype=self.dtype, kernels=self.kernels, name="conv")(x)
        return nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, name="norm")(x)


class ConvNeXt(nn.Module):
    """ConvNeXt backbone or classifier.

    Attributes:
      depths, dims: blocks and channels per stage (see ``CONVNEXT_SIZES``).
      stem: 'patchify' (4x4/4 conv + LN) or 'convstem' (two 3x3/2 convs, Singh et al.).
      drop_path_rate: stochastic depth rate of the last block; rates rise linearly from 0 over all blocks.
      output_norms: per-stage LayerNorm on the returned feature maps (segmentation backbones).
      num_classes: if set, a classifier head (global pool → LN → Dense) and (B, num_classes) output.
      depthwise: 'shift' | 'conv' implementation of the 7x7 depthwise convolution (``DepthwiseConv``).
      kernels: 'cpu' | 'xla' kernels of the dense convolutions (``layers.Conv``).

    ``create_model`` sets ``depthwise`` and ``kernels`` for the platform (``jaxseg.models.kernels``).
    """

    depths: Sequence[int] = (3, 3, 9, 3)
    dims: Sequence[int] = (96, 192, 384, 768)
    stem: Literal["patchify", "convstem"] = "patchify"
    drop_path_rate: float = 0.0
    layer_scale_init: float = 1e-6
    output_norms: bool = False
    num_classes: int | None = None
    depthwise: str = "conv"
    dtype: jnp.dtype | None = None
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        if self.stem == "patchify":
            x = PatchifyStem(self.dims[0], self.dtype, self.kernels, name="stem")(x)
        elif self.stem == "convstem":
            x = ConvStem(self.dims[0], self.dtype, self.kernels, name="stem")(x)
        else:
            raise ValueError(f"ConvNeXt stem must be 'patchify' or 'convstem'; got {self.stem!r}")
        total_blocks = sum(self.depths)
        rates = [self.drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        features = []
        block_index = 0
        for stage, (depth, dim) in enumerate(zip(self.depths, self.dims)):
            if stage > 0:
                x = nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, name=f"downsample{stage}_norm")(x)
                x = Conv(dim, (2, 2), (2, 2), padding="VALID", dtype=self.dtype, kernels=self.kernels,
                         name=f"downsample{stage}_conv")(x)
            for block in range(depth):
                x = ConvNeXtBlock(
                    dim, rates[block_index], self.layer_scale_init, self.depthwise, self.dtype,
                    name=f"stage{stage}_block{block}",
                )(x, train)
                block_index += 1
            if self.output_norms:
                features.append(nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, name=f"out_norm{stage}")(x))
            else:
                features.append(x)
        if self.num_classes is None:
            return features
        pooled = jnp.mean(x, axis=(1, 2))
        pooled = nn.LayerNorm(LAYER_NORM_EPS, dtype=self.dtype, name="head_norm")(pooled)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head_fc")(pooled)
