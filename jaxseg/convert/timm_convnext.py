"""timm ConvNeXt classifiers (any size) → ``convnext_<size>`` (``Classifier`` around ``ConvNeXt``).

Source keys: ``stem.{0: conv 4x4/4, 1: LayerNorm2d}``, ``stages.{i}.downsample.{0: LayerNorm2d, 1: conv 2x2/2}``
(i >= 1), ``stages.{i}.blocks.{j}.{gamma, conv_dw, norm, mlp.fc1, mlp.fc2}``, ``head.{norm, fc}``. LayerNorm2d
normalises over channels, which is a LayerNorm over C in NHWC. The small sizes (atto..nano) store the MLP as
1x1 convolutions (``conv_mlp``); those weights are squeezed into Dense kernels.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxseg.convert.common import (
    Family, ModelSpec, Rule, conv_rules, count_indices, dense_rules, layer_norm_rules, require,
)
from jaxseg.models.backbones.convnext import CONVNEXT_SIZES

SHORT_NAMES = {"tiny": "t", "small": "s", "base": "b"}
NAME = "timm_convnext"


def convnext_size(depths: tuple[int, ...], dims: tuple[int, ...]) -> str:
    """The registry short name ('atto'..'nano', 't', 's', 'b') of a ConvNeXt with these depths and dims."""
    for size, (size_depths, size_dims) in CONVNEXT_SIZES.items():
        if tuple(size_depths) == depths and tuple(size_dims) == dims:
            return SHORT_NAMES.get(size, size)
    raise ValueError(f"no registered ConvNeXt size has depths {depths} and dims {dims}; known: {CONVNEXT_SIZES}")


def block_rules(source: str, target: str, names: Mapping[str, str]) -> list[Rule]:
    """One ConvNeXt block; ``names`` gives the source names of conv_dw, norm, fc1, fc2 (gamma is 'gamma')."""
    return (
        [Rule(rf"{source}\.gamma", f"params/{target}/gamma")]
        + conv_rules(rf"{source}\.{names['conv_dw']}", f"{target}/conv_dw")
        + layer_norm_rules(rf"{source}\.{names['norm']}", f"{target}/norm")
        + dense_rules(rf"{source}\.{names['fc1']}", f"{target}/fc1")
        + dense_rules(rf"{source}\.{names['fc2']}", f"{target}/fc2")
    )


TIMM_BLOCK_NAMES = {"conv_dw": "conv_dw", "norm": "norm", "fc1": r"mlp\.fc1", "fc2": r"mlp\.fc2"}


def trunk_rules() -> list[Rule]:
    """Downsampling layers, blocks and classifier head of the timm layout (everything but the stem)."""
    return (
        layer_norm_rules(r"stages\.(\d+)\.downsample\.0", r"backbone/downsample\1_norm")
        + conv_rules(r"stages\.(\d+)\.downsample\.1", r"backbone/downsample\1_conv")
        + block_rules(r"stages\.(\d+)\.blocks\.(\d+)", r"backbone/stage\1_block\2", TIMM_BLOCK_NAMES)
        + layer_norm_rules(r"head\.norm", "backbone/head_norm")
        + dense_rules(r"head\.fc", "backbone/head_fc")
    )


def table() -> list[Rule]:
    return conv_rules(r"stem\.0", "backbone/stem/conv") + layer_norm_rules(r"stem\.1", "backbone/stem/norm") + trunk_rules()


def stage_layout(state_dict: Mapping[str, np.ndarray], block_key: str, norm_key: str, family: str):
    """(depths, dims) read from block counts and the per-block norm widths; keys are ``str.format`` templates."""
    depths = tuple(count_indices(state_dict, block_key.format(stage=stage)) for stage in range(4))
    dims = tuple(require(state_dict, norm_key.format(stage=stage), family).shape[0] for stage in range(4))
    return depths, dims


def infer_classifier(state_dict: Mapping[str, np.ndarray], family: str, stem_suffix: str) -> ModelSpec:
    depths, dims = stage_layout(
        state_dict, r"stages\.{stage}\.blocks\.(\d+)\.", "stages.{stage}.blocks.0.norm.weight", family
    )
    num_classes = require(state_dict, "head.fc.weight", family).shape[0]
    return ModelSpec(f"convnext_{convnext_size(depths, dims)}{stem_suffix}", int(num_classes))


FAMILY = Family(
    name=NAME,
    description="timm ConvNeXt classifier (stem.0/1, stages.{i}.blocks.{j}, head.norm/fc)",
    detect=lambda keys: "stem.0.weight" in keys and "stages.0.blocks.0.conv_dw.weight" in keys,
    infer=lambda state_dict: infer_classifier(state_dict, NAME, ""),
    table=tuple(table()),
    normalize=True,
)
