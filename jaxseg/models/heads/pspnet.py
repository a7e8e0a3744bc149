"""PSPNet decode head (Zhao et al. 2017) for a dilated ResNet-50.

Input: the backbone feature maps; the head uses the last one, (B, H/8, W/8, 2048). Pyramid pooling (bins
1, 2, 3, 6; one 1x1 ConvNormAct of ``2048 / 4 = 512`` channels per bin, bilinear upsampling with
``align_corners=False``) is concatenated with the input (4096 channels), then a 3x3 ConvNormAct to 512
channels, channel dropout 0.1 and a 1x1 classifier. Output: logits (B, H/8, W/8, K).

Parameter names: ``psp_modules/scale{i}/{conv,bn}``, ``bottleneck/{conv,bn}``, ``classifier`` (the
converter maps the published ``ppm.features.{i}.{1,2}`` and ``cls.{0,1,4}`` keys onto them).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxseg.models.heads.upernet import PyramidPoolingModule
from jaxseg.models.layers import Conv, ConvNormAct


class PSPHead(nn.Module):
    """Pyramid pooling on ``features[-1]`` → 3x3 ConvNormAct → Dropout2d → 1x1 classifier.

    Attributes:
      num_classes: K.
      channels: width of the fused 3x3 bottleneck (512).
      pool_scales: pyramid bins; each branch has ``C_in // len(pool_scales)`` channels (512 for 2048 input).
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
        branch_channels = last.shape[-1] // len(self.pool_scales)
        pyramid = PyramidPoolingModule(self.pool_scales, branch_channels, self.dtype, self.kernels,
                                       name="psp_modules")(last, train)
        x = ConvNormAct(self.channels, 3, self.dtype, self.kernels, name="bottleneck")(
            jnp.concatenate([last] + pyramid, -1), train
        )
        x = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2), deterministic=not train)(x)
        return Conv(self.num_classes, (1, 1), dtype=self.dtype, kernels=self.kernels, name="classifier")(x)
