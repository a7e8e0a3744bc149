"""The segmentation model: optional normalisation → backbone → decode head → upsampling to the input size."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxseg.models.layers import resize_bilinear
from jaxseg.validation import validate_images

# The RGB statistics ``normalize=True`` models apply to [0, 1] inputs (convert accepts checkpoints with these or none).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Segmentor(nn.Module):
    """Encoder-decoder segmentation model.

    ``apply(variables, images, train=False)`` maps images (B, H, W, 3) in [0, 1] to float32 logits (B, H, W, K).
    With ``train=True`` it returns ``(logits, auxiliary_logits)`` (the latter ``None`` without an auxiliary head);
    BatchNorm then uses batch statistics (pass ``mutable=['batch_stats']``) and dropout needs a ``dropout`` RNG.

    Attributes:
      backbone: module mapping (B, H, W, 3) to a list of feature maps.
      decode_head: module mapping the feature list to logits at some stride.
      auxiliary_head: optional module applied to ``features[auxiliary_index]`` in training only.
      mean, std: per-channel normalisation applied inside the model (None = raw [0, 1] input, as PIR-AT).
    """

    backbone: nn.Module
    decode_head: nn.Module
    auxiliary_head: nn.Module | None = None
    auxiliary_index: int = 2
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False):
        validate_images(images, check_range=False)
        height, width = images.shape[1:3]
        x = images
        if self.mean is not None:
            x = (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)
        features = self.backbone(x, train=train)
        logits = resize_bilinear(self.decode_head(features, train=train), height, width).astype(jnp.float32)
        if not train:
            return logits
        auxiliary = None
        if self.auxiliary_head is not None:
            auxiliary = self.auxiliary_head(features[self.auxiliary_index], train=train)
            auxiliary = resize_bilinear(auxiliary, height, width).astype(jnp.float32)
        return logits, auxiliary


class Classifier(nn.Module):
    """Image classifier around a backbone that returns (B, num_classes) logits (e.g. ``ConvNeXt(num_classes=...)``).

    Its parameters live under ``backbone`` exactly as in ``Segmentor``, so a classifier pre-trained here (the
    PIR-AT recipe) initialises a segmentor's backbone by copying that subtree.
    """

    backbone: nn.Module
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        validate_images(images, check_range=False)
        x = images
        if self.mean is not None:
            x = (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)
        return self.backbone(x, train=train).astype(jnp.float32)
