"""Vision Transformer (Dosovitskiy et al. 2021) in the timm ``vit_small_patch16_224`` layout.

Patch embedding (16x16/16 conv) → prepend the class token → add the position embedding → pre-norm
transformer blocks (LayerNorm → multi-head self-attention → residual; LayerNorm → MLP 4x with exact GELU →
residual; stochastic depth on both branches) → final LayerNorm.

The attention keeps timm's fused ``qkv`` Dense (D → 3D, output ordered [q | k | v], each split into heads),
so a checkpoint maps one-to-one with a transpose and no re-packing.

The position embedding is stored for a ``pos_embed_grid`` x ``pos_embed_grid`` patch grid (14 for 224 px
ImageNet models; Segmenter checkpoints store the grid of their training crop) and is resized to the grid of
the input with bilinear interpolation (``align_corners=False``, no antialias) as Segmenter/PIR-AT do. timm
itself resamples bicubically with antialias, so off the stored grid a timm model and this one differ slightly;
on the stored grid they agree exactly.

As a backbone (``num_classes=None``) it returns ``[tokens]`` with the patch tokens after the final norm as a
(B, H/16, W/16, D) map (class token removed). With ``num_classes`` it returns (B, num_classes) logits from the
class token (``head``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxseg.models.layers import Conv, DropPath, resize_bilinear


class Attention(nn.Module):
    """Multi-head self-attention on (B, N, D) tokens with a fused ``qkv`` projection and an output ``proj``."""

    num_heads: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, tokens, dim = x.shape
        head_dim = dim // self.num_heads
        qkv = nn.Dense(3 * dim, dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, head_dim)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) * head_dim**-0.5
        weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(value.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(batch, tokens, dim)
        return nn.Dense(dim, dtype=self.dtype, name="proj")(out)


class MLP(nn.Module):
    """Dense (hidden) → exact GELU → Dense (back to the input width): ``fc1``, ``fc2``."""

    hidden: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x), approximate=False)
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(y)


class TransformerBlock(nn.Module):
    """Pre-norm block: x + DropPath(attn(norm1(x))); x + DropPath(mlp(norm2(x))). Used by ViT and Segmenter."""

    num_heads: int
    mlp_ratio: int = 4
    layer_norm_eps: float = 1e-6
    drop_path: float = 0.0
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        drop = DropPath(self.drop_path)
        y = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name="norm1")(x)
        x = x + drop(Attention(self.num_heads, self.dtype, name="attn")(y), deterministic=not train)
        y = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name="norm2")(x)
        return x + drop(MLP(self.mlp_ratio * x.shape[-1], self.dtype, name="mlp")(y), deterministic=not train)


class VisionTransformer(nn.Module):
    """ViT backbone or classifier on NHWC images whose height and width are multiples of ``patch_size``.

    Attributes:
      patch_size, dim, depth, num_heads, mlp_ratio: ViT-S/16 is 16, 384, 12, 6, 4.
      pos_embed_grid: side of the square patch grid the position embedding is stored for.
      layer_norm_eps: 1e-6 in timm, 1e-5 in Segmenter (PyTorch's default).
      drop_path_rate: stochastic depth of the last block; rates rise linearly from 0.
      num_classes: if set, a ``head`` Dense on the class token and (B, num_classes) output.
      kernels: 'cpu' | 'xla' kernels of the patch-embedding convolution (``layers.Conv``; ``create_model`` sets
        them for the platform).
    """

    patch_size: int = 16
    dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: int = 4
    pos_embed_grid: int = 14
    layer_norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    num_classes: int | None = None
    dtype: jnp.dtype | None = None
    kernels: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        height, width = x.shape[1:3]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"ViT input height and width must be multiples of the patch size {self.patch_size}; "
                f"got {height}x{width}"
            )
        x = Conv(
            self.dim, (self.patch_size, self.patch_size), (self.patch_size, self.patch_size), padding="VALID",
            dtype=self.dtype, kernels=self.kernels, name="patch_embed",
        )(x)
        batch, grid_h, grid_w, _ = x.shape
        x = x.reshape(batch, grid_h * grid_w, self.dim)
        cls_token = self.param("cls_token", nn.initializers.zeros, (1, 1, self.dim), jnp.float32)
        grid = self.pos_embed_grid
        pos_embed = self.param(
            "pos_embed", nn.initializers.normal(0.02), (1, 1 + grid * grid, self.dim), jnp.float32
        )
        patch_pos = resize_bilinear(pos_embed[:, 1:].reshape(1, grid, grid, self.dim), grid_h, grid_w)
        pos_embed = jnp.concatenate([pos_embed[:, :1], patch_pos.reshape(1, grid_h * grid_w, self.dim)], axis=1)
        x = jnp.concatenate([jnp.broadcast_to(cls_token, (batch, 1, self.dim)).astype(x.dtype), x], axis=1)
        x = x + pos_embed.astype(x.dtype)
        for index in range(self.depth):
            rate = self.drop_path_rate * index / max(self.depth - 1, 1)
            x = TransformerBlock(
                self.num_heads, self.mlp_ratio, self.layer_norm_eps, rate, self.dtype, name=f"block{index}"
            )(x, train)
        x = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name="norm")(x)
        if self.num_classes is None:
            return [x[:, 1:].reshape(batch, grid_h, grid_w, self.dim)]
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x[:, 0])
