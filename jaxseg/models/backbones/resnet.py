"""ResNet-50 (He et al. 2016) in the torchvision layout (v1.5: the stride sits on the 3x3 convolution).

Stem: 7x7/2 conv (no bias) → BatchNorm → ReLU → 3x3/2 max pool (padding 1). Four stages of Bottleneck
blocks (1x1 → 3x3 → 1x1 with expansion 4, BatchNorm after each conv, a 1x1 conv + BN projection on the first
block of each stage). Parameter names follow torchvision: ``conv1``, ``bn1``, ``layer{s}_block{b}/{conv1, bn1,
conv2, bn2, conv3, bn3, downsample_conv, downsample_bn}``, ``fc``.

``dilated=True`` is the segmentation variant of PSPNet/DeepLab: layer3 and layer4 keep stride 1 and use
dilation 2 and 4 in their 3x3 convolutions (output stride 8 instead of 32).

As a backbone (``num_classes=None``) it returns the four stage outputs (B, H/s, W/s, C) with C = 256, 512,
1024, 2048 and s = 4, 8, 16, 32 (4, 8, 8, 8 when dilated). With ``num_classes`` it returns (B, num_classes)
logits after global average pooling and ``fc``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxseg.models.layers import Conv

RESNET50_DEPTHS = (3, 4, 6, 3)
BATCH_NORM = dict(momentum=0.9, epsilon=1e-5)  # PyTorch's BatchNorm2d defaults (momentum 0.1).


class Bottleneck(nn.Module):
    """1x1 (width) → 3x3 (width, stride, dilation) → 1x1 (4·width), BN after each, residual, ReLU."""

    width: int
    stride: int = 1
    dilation: int = 1
    project: bool = False
    dtype: jnp.dtype | None = None
    kernels: str = "xla"  # convolution kernels, see layers.Conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        def batch_norm(name):
            return nn.BatchNorm(use_running_average=not train, dtype=self.dtype, name=name, **BATCH_NORM)

        conv = functools.partial(Conv, use_bias=False, dtype=self.dtype, kernels=self.kernels)
        shortcut = x
        y = conv(self.width, (1, 1), name="conv1")(x)
        y = nn.relu(batch_norm("bn1")(y))
        pad = self.dilation
        y = conv(
            self.width, (3, 3), (self.stride, self.stride), padding=[(pad, pad), (pad, pad)],
            kernel_dilation=(self.dilation, self.dilation), name="conv2",
        )(y)
        y = nn.relu(batch_norm("bn2")(y))
        y = conv(4 * self.width, (1, 1), name="conv3")(y)
        y = batch_norm("bn3")(y)
        if self.project:
            shortcut = conv(
                4 * self.width, (1, 1), (self.stride, self.stride), padding="VALID", name="downsample_conv",
            )(x)
            shortcut = batch_norm("downsample_bn")(shortcut)
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """ResNet with Bottleneck blocks; backbone (list of 4 feature maps) or classifier ((B, K) logits).

    Attributes:
      depths: blocks per stage ((3, 4, 6, 3) is ResNet-50).
      dilated: stride 1 with dilation 2 and 4 in layer3 and layer4 (output stride 8).
      num_classes: if set, global average pool → ``fc`` and (B, num_classes) output.
      kernels: 'cpu' | 'xla' convolution kernels (``layers.Conv``; ``create_model`` sets them for the platform).
    """

    depths: Sequence[int] = RESNET50_DEPTHS
    dilated: bool = False
    num_classes: int | None = None
    dtype: jnp.dtype | None = None
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        x = Conv(64, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False, dtype=self.dtype,
                 kernels=self.kernels, name="conv1")(x)
        x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype, name="bn1", **BATCH_NORM)(x)
        x = nn.max_pool(nn.relu(x), (3, 3), (2, 2), padding=[(1, 1), (1, 1)])
        strides = (1, 2, 1, 1) if self.dilated else (1, 2, 2, 2)
        dilations = (1, 1, 2, 4) if self.dilated else (1, 1, 1, 1)
        features = []
        for stage, depth in enumerate(self.depths):
            for block in range(depth):
                x = Bottleneck(
                    64 * 2**stage,
                    stride=strides[stage] if block == 0 else 1,
                    dilation=dilations[stage],
                    project=block == 0,
                    dtype=self.dtype,
                    kernels=self.kernels,
                    name=f"layer{stage + 1}_block{block}",
                )(x, train)
            features.append(x)
        if self.num_classes is None:
            return features
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(jnp.mean(x, axis=(1, 2)))
