"""PIR-AT UPerNet + ConvNeXt segmentation checkpoints (nmndeep/Robust-Segmentation) → ``upernet_convnext_*``.

Source keys:
- backbone: ``backbone.downsample_layers.0.{0: conv 4x4/4, 1: LN}`` or the ConvStem
  ``backbone.downsample_layers.0.stem.{0,1,3,4}``; ``backbone.downsample_layers.{1..3}.{0: LN, 1: conv 2x2/2}``;
  ``backbone.stages.{i}.{j}.{dwconv, norm, pwconv1, pwconv2, gamma}``; ``backbone.norm{0..3}`` (output norms).
- decode head: ``decode_head.psp_modules.{0..3}.1.{conv, batch_norm|bn}``, ``decode_head.{bottleneck,
  lateral_convs.{0..2}, fpn_convs.{0..2}, fpn_bottleneck}.{conv, batch_norm|bn}``, ``decode_head.classifier``
  (or mmseg's ``conv_seg``).
- auxiliary head: ``auxiliary_head.convs.0.{conv, batch_norm|bn}``, ``auxiliary_head.classifier|conv_seg``.
BatchNorm running statistics go to ``batch_stats``; ``num_batches_tracked`` is dropped. PIR-AT models take raw
[0, 1] images (``normalize=False``). The decoder width is read from the checkpoint (``decoder_channels``).
"""

from __future__ import annotations

from jaxseg.convert.common import (
    Family, ModelSpec, Rule, conv_norm_act_rules, conv_rules, layer_norm_rules, require,
)
from jaxseg.convert.timm_convnext import block_rules, convnext_size, stage_layout

NAME = "pirat_upernet"
PIRAT_BLOCK_NAMES = {"conv_dw": "dwconv", "norm": "norm", "fc1": "pwconv1", "fc2": "pwconv2"}
CLASSIFIER = "(?:classifier|conv_seg)"


def table() -> list[Rule]:
    stem = r"backbone\.downsample_layers\.0"
    backbone = (
        conv_rules(rf"{stem}\.0", "backbone/stem/conv")
        + layer_norm_rules(rf"{stem}\.1", "backbone/stem/norm")
        + conv_rules(rf"{stem}\.stem\.0", "backbone/stem/conv1")
        + layer_norm_rules(rf"{stem}\.stem\.1", "backbone/stem/norm1")
        + conv_rules(rf"{stem}\.stem\.3", "backbone/stem/conv2")
        + layer_norm_rules(rf"{stem}\.stem\.4", "backbone/stem/norm2")
        + layer_norm_rules(r"backbone\.downsample_layers\.([1-3])\.0", r"backbone/downsample\1_norm")
        + conv_rules(r"backbone\.downsample_layers\.([1-3])\.1", r"backbone/downsample\1_conv")
        + block_rules(r"backbone\.stages\.(\d+)\.(\d+)", r"backbone/stage\1_block\2", PIRAT_BLOCK_NAMES)
        + layer_norm_rules(r"backbone\.norm(\d)", r"backbone/out_norm\1")
    )
    decode_head = (
        conv_norm_act_rules(r"decode_head\.psp_modules\.(\d+)\.1", r"decode_head/psp_modules/scale\1")
        + conv_norm_act_rules(r"decode_head\.bottleneck", "decode_head/bottleneck")
        + conv_norm_act_rules(r"decode_head\.lateral_convs\.(\d+)", r"decode_head/lateral_convs\1")
        + conv_norm_act_rules(r"decode_head\.fpn_convs\.(\d+)", r"decode_head/fpn_convs\1")
        + conv_norm_act_rules(r"decode_head\.fpn_bottleneck", "decode_head/fpn_bottleneck")
        + conv_rules(rf"decode_head\.{CLASSIFIER}", "decode_head/classifier")
    )
    auxiliary_head = conv_norm_act_rules(r"auxiliary_head\.convs\.0", "auxiliary_head/convs0") + conv_rules(
        rf"auxiliary_head\.{CLASSIFIER}", "auxiliary_head/classifier"
    )
    return backbone + decode_head + auxiliary_head


def infer(state_dict) -> ModelSpec:
    depths, dims = stage_layout(
        state_dict, r"backbone\.stages\.{stage}\.(\d+)\.", "backbone.stages.{stage}.0.norm.weight", NAME
    )
    suffix = "_cvst" if "backbone.downsample_layers.0.stem.0.weight" in state_dict else ""
    classifier = "decode_head.conv_seg.weight" if "decode_head.conv_seg.weight" in state_dict else "decode_head.classifier.weight"
    num_classes = require(state_dict, classifier, NAME).shape[0]
    channels = require(state_dict, "decode_head.bottleneck.conv.weight", NAME).shape[0]
    auxiliary = any(key.startswith("auxiliary_head.") for key in state_dict)
    return ModelSpec(
        f"upernet_convnext_{convnext_size(depths, dims)}{suffix}",
        int(num_classes),
        {"decoder_channels": int(channels), "auxiliary": auxiliary},
    )


FAMILY = Family(
    name=NAME,
    description="PIR-AT UPerNet + ConvNeXt (backbone.downsample_layers/stages/norm*, decode_head, auxiliary_head)",
    detect=lambda keys: "backbone.stages.0.0.dwconv.weight" in keys and any(k.startswith("decode_head.") for k in keys),
    infer=infer,
    table=tuple(table()),
    normalize=False,
)
