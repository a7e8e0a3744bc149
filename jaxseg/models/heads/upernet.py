"""UPerNet decode head (Xiao et al. 2018) as mmsegmentation's ``UPerHead``, plus the auxiliary FCN head.

Input: the four backbone feature maps (B, H/s, W/s, C_i), s = 4, 8, 16, 32. Output: logits at stride 4,
(B, H/4, W/4, K). The segmentor upsamples them to the input size.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxseg.models.layers import Conv, ConvNormAct, resize_bilinear


def adaptive_average_pool(x: jax.Array, output_size: int) -> jax.Array:
    """PyTorch ``AdaptiveAvgPool2d(output_size)`` on NHWC ``x``: bin i covers [floor(i*H/s), ceil((i+1)*H/s)).

    Written as two small averaging matrices so that it is exact for any H, W and differentiable.
    """

    def pooling_matrix(length: int) -> jnp.ndarray:
        rows = []
        for i in range(output_size):
            start = (i * length) // output_size
            end = -((-(i + 1) * length) // output_size)
            rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(length)])
        return jnp.asarray(rows, dtype=x.dtype)

    height, width = x.shape[1:3]
    return jnp.einsum("ih,jw,bhwc->bijc", pooling_matrix(height), pooling_matrix(width), x)


class PyramidPoolingModule(nn.Module):
    """PPM: for each scale, adaptive average pool → 1x1 ConvNormAct → bilinear upsampling to the input size."""

    pool_scales: Sequence[int] = (1, 2, 3, 6)
    channels: int = 512
    dtype: jnp.dtype | None = None
    kernels: str = "xla"  # convolution kernels, see layers.Conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
        height, width = x.shape[1:3]
        outputs = []
        for index, scale in enumerate(self.pool_scales):
            pooled = adaptive_average_pool(x, scale)
            pooled = ConvNormAct(self.channels, 1, self.dtype, self.kernels, name=f"scale{index}")(pooled, train)
            outputs.append(resize_bilinear(pooled, height, width))
        return outputs


class UPerHead(nn.Module):
    """PPM on the last stage, FPN over all stages, fused 3x3 bottleneck, dropout 0.1, 1x1 classifier.

    Submodule names follow the PIR-AT checkpoint layout: ``psp_modules``, ``bottleneck``,
    ``lateral_convs{i}``, ``fpn_convs{i}``, ``fpn_bottleneck``, ``classifier``.
    """

    num_classes: int
    channels: int = 512
    pool_scales: Sequence[int] = (1, 2, 3, 6)
    dropout_rate: float = 0.1
    dtype: jnp.dtype | None = None
    kernels: str = "xla"  # convolution kernels, see layers.Conv

    @nn.compact
    def __call__(self, features: Sequence[jax.Array], train: bool) -> jax.Array:
        last = features[-1]
        pyramid = PyramidPoolingModule(self.pool_scales, self.channels, self.dtype, self.kernels,
                                       name="psp_modules")(last, train)
        top = ConvNormAct(self.channels, 3, self.dtype, self.kernels, name="bottleneck")(
            jnp.concatenate([last] + pyramid, axis=-1), train
        )
        laterals = [
            ConvNormAct(self.channels, 1, self.dtype, self.kernels, name=f"lateral_convs{i}")(feature, train)
            for i, feature in enumerate(features[:-1])
        ] + [top]
        for i in range(len(laterals) - 1, 0, -1):
            height, width = laterals[i - 1].shape[1:3]
            laterals[i - 1] = laterals[i - 1] + resize_bilinear(laterals[i], height, width)
        outputs = [
            ConvNormAct(self.channels, 3, self.dtype, self.kernels, name=f"fpn_convs{i}")(laterals[i], train)
            for i in range(len(laterals) - 1)
        ] + [laterals[-1]]
        height, width = outputs[0].shape[1:3]
        fused = jnp.concatenate([resize_bilinear(o, height, width) for o in outputs], axis=-1)
        fused = ConvNormAct(self.channels, 3, self.dtype, self.kernels, name="fpn_bottleneck")(fused, train)
        # Dropout2d: whole channels are dropped.
        fused = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(fused)
        return Conv(self.num_classes, (1, 1), dtype=self.dtype, kernels=self.kernels, name="classifier")(fused)


class FCNHead(nn.Module):
    """Auxiliary head: one 3x3 ConvNormAct to ``channels``, dropout 0.1, 1x1 classifier (training only)."""

    num_classes: int
    channels: int = 256
    dropout_rate: float = 0.1
    dtype: jnp.dtype | None = None
    kernels: str = "xla"  # convolution kernels, see layers.Conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = ConvNormAct(self.channels, 3, self.dtype, self.kernels, name="convs0")(x, train)
        x = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(x)
        return Conv(self.num_classes, (1, 1), dtype=self.dtype, kernels=self.kernels, name="classifier")(x)
