"""PIR-AT / Segmenter checkpoints (Strudel et al. code in nmndeep/Robust-Segmentation) → ``segmenter_vit_s``.

Source keys: the ViT encoder under ``encoder.`` (timm names: ``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.{i}.*``, ``norm``; its ImageNet ``head`` is dropped) and the mask transformer under ``decoder.``:
``proj_dec``, ``cls_emb`` (1, K, D), ``blocks.{i}.*``, ``decoder_norm``, ``proj_patch`` / ``proj_classes``
((D, D), used as ``x @ W``, copied as they are), ``mask_norm``. The stored position-embedding grid (the
training crop / 16) becomes ``pos_embed_grid``. PIR-AT models take raw [0, 1] images (``normalize=False``).
"""

from __future__ import annotations

from jaxseg.convert.common import Family, ModelSpec, Rule, dense_rules, layer_norm_rules, require
from jaxseg.convert.vit import encoder_rules, pos_embed_grid, transformer_block_rules

NAME = "pirat_segmenter"


def table() -> list[Rule]:
    decoder = (
        dense_rules(r"decoder\.proj_dec", "decode_head/proj_dec")
        + [
            Rule(r"decoder\.cls_emb", "params/decode_head/cls_emb"),
            Rule(r"decoder\.proj_patch", "params/decode_head/proj_patch"),
            Rule(r"decoder\.proj_classes", "params/decode_head/proj_classes"),
        ]
        + transformer_block_rules(r"decoder\.blocks\.(\d+)", r"decode_head/block\1")
        + layer_norm_rules(r"decoder\.decoder_norm", "decode_head/decoder_norm")
        + layer_norm_rules(r"decoder\.mask_norm", "decode_head/mask_norm")
    )
    return encoder_rules(r"encoder\.") + [Rule(r"encoder\.head\.(weight|bias)", None)] + decoder


def infer(state_dict) -> ModelSpec:
    grid = pos_embed_grid(require(state_dict, "encoder.pos_embed", NAME).shape)
    num_classes = require(state_dict, "decoder.cls_emb", NAME).shape[1]
    return ModelSpec("segmenter_vit_s", int(num_classes), {"pos_embed_grid": grid})


FAMILY = Family(
    name=NAME,
    description="PIR-AT Segmenter + ViT-S/16 (encoder.*, decoder.{proj_dec, cls_emb, blocks, mask_norm, ...})",
    detect=lambda keys: "encoder.patch_embed.proj.weight" in keys and "decoder.cls_emb" in keys,
    infer=infer,
    table=tuple(table()),
    normalize=False,
)
