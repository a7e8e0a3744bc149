"""Registered ResNet-50 and ViT-S/16 models: classifiers, PSPNet + dilated ResNet-50, Segmenter + ViT-S/16.

Options shared with the other families: ``normalize`` (ImageNet mean/std inside the model; False = raw [0, 1]
input), ``dtype`` (compute dtype; parameters stay float32), ``drop_path_rate`` for the transformers.
``pos_embed_grid`` is the side of the patch grid the ViT position embedding is stored for (14 for 224 px
ImageNet weights; a Segmenter checkpoint trained on 512 px crops stores 32); any input that is a multiple of 16
works, the embedding is resized bilinearly. ``kernels`` ('cpu' | 'xla') is the convolution kernel set that
``create_model`` resolved for the platform.
"""

from __future__ import annotations

from jaxseg.models.backbones.resnet import RESNET50_DEPTHS, ResNet
from jaxseg.models.backbones.vit import VisionTransformer
from jaxseg.models.heads.pspnet import PSPHead
from jaxseg.models.heads.segmenter import SEGMENTER_LAYER_NORM_EPS, MaskTransformer
from jaxseg.models.heads.upernet import FCNHead
from jaxseg.models.registry import register_model
from jaxseg.models.segmentor import IMAGENET_MEAN, IMAGENET_STD, Classifier, Segmentor

VIT_S16 = dict(patch_size=16, dim=384, depth=12, num_heads=6, mlp_ratio=4)
TIMM_LAYER_NORM_EPS = 1e-6


def _normalisation(normalize: bool):
    return (IMAGENET_MEAN, IMAGENET_STD) if normalize else (None, None)


@register_model("resnet50", "ResNet-50 image classifier (torchvision layout)")
def resnet50(num_classes: int, *, normalize: bool = False, dtype=None, kernels: str = "xla"):
    mean, std = _normalisation(normalize)
    backbone = ResNet(RESNET50_DEPTHS, num_classes=num_classes, dtype=dtype, kernels=kernels)
    return Classifier(backbone, mean=mean, std=std)


@register_model("pspnet_resnet50", "PSPNet + dilated ResNet-50 (output stride 8) segmentor")
def pspnet_resnet50(num_classes: int, *, normalize: bool = False, auxiliary: bool = True, dtype=None,
                    kernels: str = "xla"):
    """Auxiliary FCN head (256 channels) on layer3, training only."""
    mean, std = _normalisation(normalize)
    backbone = ResNet(RESNET50_DEPTHS, dilated=True, dtype=dtype, kernels=kernels)
    head = PSPHead(num_classes, channels=512, dtype=dtype, kernels=kernels)
    auxiliary_head = FCNHead(num_classes, channels=256, dtype=dtype, kernels=kernels) if auxiliary else None
    return Segmentor(backbone, head, auxiliary_head, auxiliary_index=2, mean=mean, std=std)


@register_model("vit_s16", "ViT-S/16 image classifier (timm vit_small_patch16_224 layout)")
def vit_s16(
    num_classes: int, *, normalize: bool = False, drop_path_rate: float = 0.0, pos_embed_grid: int = 14, dtype=None,
    kernels: str = "xla",
):
    mean, std = _normalisation(normalize)
    backbone = VisionTransformer(
        **VIT_S16, pos_embed_grid=pos_embed_grid, layer_norm_eps=TIMM_LAYER_NORM_EPS,
        drop_path_rate=drop_path_rate, num_classes=num_classes, dtype=dtype, kernels=kernels,
    )
    return Classifier(backbone, mean=mean, std=std)


@register_model("segmenter_vit_s", "Segmenter (mask transformer, 2 layers) + ViT-S/16 segmentor")
def segmenter_vit_s(
    num_classes: int, *, normalize: bool = False, drop_path_rate: float = 0.0, pos_embed_grid: int = 14, dtype=None,
    kernels: str = "xla",
):
    """LayerNorm eps 1e-5 throughout, as Segmenter's (and PIR-AT's) PyTorch code."""
    mean, std = _normalisation(normalize)
    backbone = VisionTransformer(
        **VIT_S16, pos_embed_grid=pos_embed_grid, layer_norm_eps=SEGMENTER_LAYER_NORM_EPS,
        drop_path_rate=drop_path_rate, dtype=dtype, kernels=kernels,
    )
    head = MaskTransformer(num_classes, dim=384, depth=2, num_heads=6, drop_path_rate=drop_path_rate, dtype=dtype)
    return Segmentor(backbone, head, None, mean=mean, std=std)
