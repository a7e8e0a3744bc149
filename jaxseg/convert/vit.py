"""timm ViT-S/16 classifiers (``vit_small_patch16_224`` layout) → ``vit_s16``.

Source keys: ``patch_embed.proj`` (conv 16x16/16), ``cls_token`` (1, 1, D), ``pos_embed`` (1, 1 + g·g, D),
``blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``, ``head``. The fused ``qkv``
(3D, D) weight is kept fused (one Dense D → 3D, output order [q | k | v]), so it only needs the Linear
transpose. The stored grid side g becomes the ``pos_embed_grid`` option. Robust ViT-S checkpoints with
wrapper prefixes and ``normalize`` buffers (revisiting-at) use this family too.
"""

from __future__ import annotations

import math

from jaxseg.convert.common import Family, ModelSpec, Rule, conv_rules, dense_rules, layer_norm_rules, require

NAME = "timm_vit"


def transformer_block_rules(source: str, target: str) -> list[Rule]:
    """norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2 of one pre-norm block (timm and Segmenter)."""
    return (
        layer_norm_rules(rf"{source}\.norm1", f"{target}/norm1")
        + dense_rules(rf"{source}\.attn\.qkv", f"{target}/attn/qkv")
        + dense_rules(rf"{source}\.attn\.proj", f"{target}/attn/proj")
        + layer_norm_rules(rf"{source}\.norm2", f"{target}/norm2")
        + dense_rules(rf"{source}\.mlp\.fc1", f"{target}/mlp/fc1")
        + dense_rules(rf"{source}\.mlp\.fc2", f"{target}/mlp/fc2")
    )


def encoder_rules(source: str) -> list[Rule]:
    """The ViT trunk under the key prefix ``source`` ('' or 'encoder\\.') → ``params/backbone``."""
    return (
        conv_rules(rf"{source}patch_embed\.proj", "backbone/patch_embed")
        + [Rule(rf"{source}cls_token", "params/backbone/cls_token"), Rule(rf"{source}pos_embed", "params/backbone/pos_embed")]
        + transformer_block_rules(rf"{source}blocks\.(\d+)", r"backbone/block\1")
        + layer_norm_rules(rf"{source}norm", "backbone/norm")
    )


def pos_embed_grid(pos_embed_shape: tuple[int, ...]) -> int:
    """Side g of the square patch grid of a (1, 1 + g·g, D) position embedding."""
    grid = math.isqrt(pos_embed_shape[1] - 1)
    if len(pos_embed_shape) != 3 or grid * grid != pos_embed_shape[1] - 1:
        raise ValueError(f"pos_embed of shape {pos_embed_shape} is not (1, 1 + g*g, D) for a square grid")
    return grid


def table() -> list[Rule]:
    return encoder_rules("") + dense_rules(r"head", "backbone/head")


def infer(state_dict) -> ModelSpec:
    grid = pos_embed_grid(require(state_dict, "pos_embed", NAME).shape)
    num_classes = require(state_dict, "head.weight", NAME).shape[0]
    return ModelSpec("vit_s16", int(num_classes), {"pos_embed_grid": grid})


FAMILY = Family(
    name=NAME,
    description="timm ViT-S/16 classifier (patch_embed.proj, cls_token, pos_embed, blocks.{i}, norm, head)",
    detect=lambda keys: "patch_embed.proj.weight" in keys and "blocks.0.attn.qkv.weight" in keys,
    infer=infer,
    table=tuple(table()),
    normalize=True,
)
