"""Robust ImageNet ConvNeXt classifiers of Singh, Croce & Hein (repo nmndeep/revisiting-at) → ``convnext_*``.

timm names, with the ConvStem as ``stem.stem.{0: conv3x3/2, 1: LayerNorm2d, 3: conv3x3/2, 4: LayerNorm2d}``
(2 and 5 are GELUs) → ``_cvst`` models, possibly wrapped in ``module.`` / ``base_model.`` / ``model.`` prefixes
(removed before matching) and carrying ``normalize.mean/std`` buffers (ImageNet statistics: the converted
model gets ``normalize=True``). Checkpoints with the patchify stem convert to the plain ``convnext_*`` models.
"""

from __future__ import annotations

from jaxseg.convert import timm_convnext
from jaxseg.convert.common import Family, ModelSpec, Rule, conv_rules, layer_norm_rules

NAME = "revisiting_at"


def table() -> list[Rule]:
    convstem = (
        conv_rules(r"stem\.stem\.0", "backbone/stem/conv1")
        + layer_norm_rules(r"stem\.stem\.1", "backbone/stem/norm1")
        + conv_rules(r"stem\.stem\.3", "backbone/stem/conv2")
        + layer_norm_rules(r"stem\.stem\.4", "backbone/stem/norm2")
    )
    return convstem + timm_convnext.table()


def infer(state_dict) -> ModelSpec:
    suffix = "_cvst" if "stem.stem.0.weight" in state_dict else ""
    return timm_convnext.infer_classifier(state_dict, NAME, suffix)


def detect(keys: set[str]) -> bool:
    is_convnext = "stages.0.blocks.0.conv_dw.weight" in keys
    return is_convnext and ("stem.stem.0.weight" in keys or "normalize.mean" in keys)


FAMILY = Family(
    name=NAME,
    description="robust ConvNeXt (+ConvStem stem.stem.*) of nmndeep/revisiting-at, timm names, normalize buffers",
    detect=detect,
    infer=infer,
    table=tuple(table()),
    normalize=True,
)
