"""ResNet-50 classifiers (torchvision / RobustBench) → ``resnet50`` and PSPNet + dilated ResNet-50 → ``pspnet_resnet50``.

torchvision keys: ``conv1``, ``bn1``, ``layer{s}.{b}.{conv1..3, bn1..3}``, ``layer{s}.0.downsample.{0: conv,
1: BN}``, ``fc``. RobustBench ``Salman2020Do_R50`` stores the same names under ``model.`` with ``normalize.mean/
std`` buffers (removed before matching; the model gets ``normalize=True``).

PSPNet keys (the semseg/DDC-AT layout on a torchvision-stem ResNet-50): the stem as ``layer0.{0: conv1, 1: bn1}``
(or ``conv1``/``bn1``), ``layer1..4`` as above, ``ppm.features.{i}.{1: conv, 2: BN}``, ``cls.{0: conv 3x3,
1: BN, 4: classifier}``, ``aux.{0, 1, 4}`` likewise (auxiliary head on layer3).
"""

from __future__ import annotations

from jaxseg.convert.common import (
    Family, ModelSpec, Rule, batch_norm_rules, conv_rules, count_indices, dense_rules, require,
)
from jaxseg.models.backbones.resnet import RESNET50_DEPTHS

RESNET = "resnet"
PSPNET = "pspnet"


def layer_rules() -> list[Rule]:
    """The four Bottleneck stages → ``backbone/layer{s}_block{b}``."""
    block, target = r"layer([1-4])\.(\d+)", r"backbone/layer\1_block\2"
    return (
        conv_rules(rf"{block}\.conv([1-3])", rf"{target}/conv\3", bias=False)
        + batch_norm_rules(rf"{block}\.bn([1-3])", rf"{target}/bn\3")
        + conv_rules(rf"{block}\.downsample\.0", f"{target}/downsample_conv", bias=False)
        + batch_norm_rules(rf"{block}\.downsample\.1", f"{target}/downsample_bn")
    )


def check_resnet50(state_dict, family: str) -> None:
    depths = tuple(count_indices(state_dict, rf"layer{stage}\.(\d+)\.") for stage in range(1, 5))
    if depths != RESNET50_DEPTHS:
        raise ValueError(f"{family} checkpoint has {depths} blocks per stage; only ResNet-50 {RESNET50_DEPTHS} is supported")


def resnet_table() -> list[Rule]:
    return (
        conv_rules(r"conv1", "backbone/conv1", bias=False)
        + batch_norm_rules(r"bn1", "backbone/bn1")
        + layer_rules()
        + dense_rules(r"fc", "backbone/fc")
    )


def infer_resnet(state_dict) -> ModelSpec:
    check_resnet50(state_dict, RESNET)
    return ModelSpec("resnet50", int(require(state_dict, "fc.weight", RESNET).shape[0]))


def pspnet_table() -> list[Rule]:
    def conv_bn(source: str, target: str) -> list[Rule]:
        return conv_rules(rf"{source}\.0", f"{target}/conv", bias=False) + batch_norm_rules(rf"{source}\.1", f"{target}/bn")

    return (
        conv_rules(r"(?:layer0\.0|conv1)", "backbone/conv1", bias=False)
        + batch_norm_rules(r"(?:layer0\.1|bn1)", "backbone/bn1")
        + layer_rules()
        + conv_rules(r"ppm\.features\.(\d)\.1", r"decode_head/psp_modules/scale\1/conv", bias=False)
        + batch_norm_rules(r"ppm\.features\.(\d)\.2", r"decode_head/psp_modules/scale\1/bn")
        + conv_bn(r"cls", "decode_head/bottleneck")
        + conv_rules(r"cls\.4", "decode_head/classifier")
        + conv_bn(r"aux", "auxiliary_head/convs0")
        + conv_rules(r"aux\.4", "auxiliary_head/classifier")
    )


def infer_pspnet(state_dict) -> ModelSpec:
    check_resnet50(state_dict, PSPNET)
    num_classes = require(state_dict, "cls.4.weight", PSPNET).shape[0]
    return ModelSpec("pspnet_resnet50", int(num_classes), {"auxiliary": "aux.0.weight" in state_dict})


RESNET_FAMILY = Family(
    name=RESNET,
    description="torchvision / RobustBench ResNet-50 classifier (conv1, bn1, layer1..4, fc)",
    detect=lambda keys: "layer1.0.conv1.weight" in keys and "fc.weight" in keys,
    infer=infer_resnet,
    table=tuple(resnet_table()),
    normalize=True,
)

PSPNET_FAMILY = Family(
    name=PSPNET,
    description="PSPNet + dilated ResNet-50 (layer0..4, ppm.features.{i}, cls, aux)",
    detect=lambda keys: "layer1.0.conv1.weight" in keys and "ppm.features.0.1.weight" in keys,
    infer=infer_pspnet,
    table=tuple(pspnet_table()),
    normalize=True,
)
