"""Registered ConvNeXt models: UPerNet+ConvNeXt segmentors and ConvNeXt classifiers.

Sizes atto/femto/pico/nano are the CPU-friendly ones; t/s/b are the published ones (Liu et al. 2022). The
``_cvst`` variants use the ConvStem of the robust ImageNet backbones (Singh et al. 2023). Small sizes get a
narrower decoder (128 channels, auxiliary 64) because a 512-channel UPerNet would dwarf a 3.4 M backbone;
t/s/b use the published 512/256.

Every factory takes the resolved ``kernels`` ('cpu' | 'xla') from ``create_model``; ``depthwise='auto'`` follows
it (``kernels.resolve_depthwise``: 'shift' with the CPU kernels, 'conv' otherwise).
"""

from __future__ import annotations

from jaxseg.models.backbones.convnext import CONVNEXT_SIZES, ConvNeXt
from jaxseg.models.heads.upernet import FCNHead, UPerHead
from jaxseg.models.kernels import resolve_depthwise
from jaxseg.models.registry import register_model
from jaxseg.models.segmentor import IMAGENET_MEAN, IMAGENET_STD, Classifier, Segmentor

_SHORT_NAMES = {"atto": "atto", "femto": "femto", "pico": "pico", "nano": "nano", "t": "tiny", "s": "small", "b": "base"}
_SMALL = ("atto", "femto", "pico", "nano")


def _normalisation(normalize: bool):
    return (IMAGENET_MEAN, IMAGENET_STD) if normalize else (None, None)


def _upernet_factory(size: str, stem: str):
    def factory(
        num_classes: int,
        *,
        drop_path_rate: float = 0.0,
        normalize: bool = False,
        auxiliary: bool = True,
        decoder_channels: int | None = None,
        depthwise: str = "auto",
        dtype=None,
        kernels: str = "xla",
    ):
        depths, dims = CONVNEXT_SIZES[size]
        channels = decoder_channels or (128 if size in _SMALL else 512)
        mean, std = _normalisation(normalize)
        backbone = ConvNeXt(
            depths, dims, stem=stem, drop_path_rate=drop_path_rate, output_norms=True,
            depthwise=resolve_depthwise(depthwise, kernels), dtype=dtype, kernels=kernels,
        )
        head = UPerHead(num_classes, channels=channels, dtype=dtype, kernels=kernels)
        auxiliary_head = None
        if auxiliary:
            auxiliary_head = FCNHead(num_classes, channels=channels // 2, dtype=dtype, kernels=kernels)
        return Segmentor(backbone, head, auxiliary_head, auxiliary_index=2, mean=mean, std=std)

    return factory


def _classifier_factory(size: str, stem: str):
    def factory(num_classes: int, *, drop_path_rate: float = 0.0, normalize: bool = False, depthwise: str = "auto",
                dtype=None, kernels: str = "xla"):
        depths, dims = CONVNEXT_SIZES[size]
        mean, std = _normalisation(normalize)
        backbone = ConvNeXt(
            depths, dims, stem=stem, drop_path_rate=drop_path_rate, num_classes=num_classes,
            depthwise=resolve_depthwise(depthwise, kernels), dtype=dtype, kernels=kernels,
        )
        return Classifier(backbone, mean=mean, std=std)

    return factory


for _short, _size in _SHORT_NAMES.items():
    for _suffix, _stem in (("", "patchify"), ("_cvst", "convstem")):
        register_model(
            f"upernet_convnext_{_short}{_suffix}",
            f"UPerNet + ConvNeXt-{_size} ({_stem} stem) segmentor",
        )(_upernet_factory(_size, _stem))
        register_model(
            f"convnext_{_short}{_suffix}",
            f"ConvNeXt-{_size} ({_stem} stem) image classifier",
        )(_classifier_factory(_size, _stem))
