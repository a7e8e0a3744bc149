"""Segmenter mask-transformer decoder (Strudel et al. 2021), as in the PIR-AT Segmenter models.

Input: ``features[-1]``, the ViT patch tokens as a (B, h, w, D_enc) map. ``proj_dec`` maps them to the decoder
width, K learned class embeddings ``cls_emb`` (1, K, D) are appended, the sequence runs through transformer
blocks and ``decoder_norm``; patch and class features are projected (``proj_patch``, ``proj_classes``, (D, D),
no bias) and L2-normalised; masks = patches @ classes^T, (B, h·w, K), pass through ``mask_norm`` (LayerNorm
over the K classes). Output: logits (B, h, w, K) at the patch stride; the segmentor upsamples them.
All LayerNorms use PyTorch's default eps 1e-5, as the reference code does.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxseg.models.backbones.vit import TransformerBlock

SEGMENTER_LAYER_NORM_EPS = 1e-5


class MaskTransformer(nn.Module):
    """Attributes: num_classes K; dim, depth, num_heads (384, 2, 6 for Segmenter ViT-S); drop_path_rate."""

    num_classes: int
    dim: int = 384
    depth: int = 2
    num_heads: int = 6
    mlp_ratio: int = 4
    drop_path_rate: float = 0.0
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, features: Sequence[jax.Array], train: bool) -> jax.Array:
        tokens = features[-1]
        batch, height, width, channels = tokens.shape
        x = nn.Dense(self.dim, dtype=self.dtype, name="proj_dec")(tokens.reshape(batch, height * width, channels))
        classes = self.param("cls_emb", nn.initializers.normal(0.02), (1, self.num_classes, self.dim), jnp.float32)
        x = jnp.concatenate([x, jnp.broadcast_to(classes, (batch,) + classes.shape[1:]).astype(x.dtype)], axis=1)
        for index in range(self.depth):
            rate = self.drop_path_rate * index / max(self.depth - 1, 1)
            x = TransformerBlock(
                self.num_heads, self.mlp_ratio, SEGMENTER_LAYER_NORM_EPS, rate, self.dtype, name=f"block{index}"
            )(x, train)
        x = nn.LayerNorm(SEGMENTER_LAYER_NORM_EPS, dtype=self.dtype, name="decoder_norm")(x)
        scale = self.dim**-0.5
        proj_patch = self.param("proj_patch", nn.initializers.normal(scale), (self.dim, self.dim), jnp.float32)
        proj_classes = self.param("proj_classes", nn.initializers.normal(scale), (self.dim, self.dim), jnp.float32)
        patches = x[:, : -self.num_classes] @ proj_patch.astype(x.dtype)
        class_features = x[:, -self.num_classes :] @ proj_classes.astype(x.dtype)
        patches = patches / jnp.linalg.norm(patches, axis=-1, keepdims=True)
        class_features = class_features / jnp.linalg.norm(class_features, axis=-1, keepdims=True)
        masks = jnp.einsum("bnd,bkd->bnk", patches, class_features)
        masks = nn.LayerNorm(SEGMENTER_LAYER_NORM_EPS, dtype=self.dtype, name="mask_norm")(masks)
        return masks.reshape(batch, height, width, self.num_classes)
