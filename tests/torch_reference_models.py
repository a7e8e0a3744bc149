"""PyTorch reference models with the published checkpoint key names, for the conversion parity tests.

Written from the published checkpoint layouts (nmndeep/revisiting-at, nmndeep/Robust-Segmentation, torchvision,
timm, Strudel et al.'s Segmenter; docs/algorithms.md#weight-conversion), parameterised so the tests can build
small ones. ``randomize_`` gives every norm, layer scale and BatchNorm statistic non-trivial values so that a
swapped or dropped tensor shows up.
Imported only by tests (needs the ``torch`` extra).
"""

from __future__ import annotations

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Norm scales ~U(0.5, 1.5), shifts ~N(0, 0.1), BN running mean ~N(0, 0.1), var ~U(0.5, 1.5), gammas ~U(0.5, 1.5)."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor):
        tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))

    def normal(tensor, std=0.1):
        tensor.copy_(std * torch.randn(tensor.shape, generator=generator))

    for name, module in model.named_modules():
        if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, LayerNorm2d, timm.layers.LayerNorm2d)):
            uniform(module.weight)
            normal(module.bias)
        if isinstance(module, nn.BatchNorm2d):
            normal(module.running_mean)
            uniform(module.running_var)
    for name, parameter in model.named_parameters():
        if name.endswith("gamma"):
            uniform(parameter)
    return model.eval()


class LayerNorm2d(nn.Module):
    """ConvNeXt's channels-first LayerNorm, written as in the reference code (mean/var over dim 1)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvStem(nn.Module):
    """Singh et al.'s ConvStem: keys ``stem.{0,1,3,4}``."""

    def __init__(self, dim: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, dim // 2, 3, 2, 1), LayerNorm2d(dim // 2), nn.GELU(),
            nn.Conv2d(dim // 2, dim, 3, 2, 1), LayerNorm2d(dim), nn.GELU(),
        )

    def forward(self, x):
        return self.stem(x)


class ImageNormalizer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class NormalizedModel(nn.Module):
    """RobustBench / revisiting-at wrapper: keys ``normalize.{mean,std}`` and ``<attribute>.<model keys>``."""

    def __init__(self, model: nn.Module, attribute: str = "model"):
        super().__init__()
        self.normalize = ImageNormalizer()
        self.attribute = attribute
        setattr(self, attribute, model)

    def forward(self, x):
        return getattr(self, self.attribute)(self.normalize(x))


def convstem_convnext(name: str = "convnext_atto", num_classes: int = 10) -> nn.Module:
    """timm ConvNeXt with the ConvStem, as the robust ImageNet backbones of nmndeep/revisiting-at."""
    model = timm.create_model(name, num_classes=num_classes)
    model.stem = ConvStem(model.stages[0].blocks[0].norm.weight.shape[0])
    return model


# ------------------------------------------------------------------------------------------ PIR-AT UPerNet


class Block(nn.Module):
    """PIR-AT ConvNeXt block: dwconv, norm, pwconv1, pwconv2, gamma."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class PiratConvNeXt(nn.Module):
    def __init__(self, depths, dims, convstem: bool):
        super().__init__()
        stem = ConvStem(dims[0]) if convstem else nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0]))
        self.downsample_layers = nn.ModuleList(
            [stem] + [nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, 2)) for i in range(3)]
        )
        self.stages = nn.ModuleList([nn.Sequential(*[Block(dims[i]) for _ in range(depths[i])]) for i in range(4)])
        for i in range(4):
            self.add_module(f"norm{i}", LayerNorm2d(dims[i]))

    def forward(self, x):
        outputs = []
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            outputs.append(getattr(self, f"norm{i}")(x))
        return outputs


class ConvModule(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.batch_norm = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.batch_norm(self.conv(x)))


class PoolingBlock(nn.Module):
    def __init__(self, scale: int, cin: int, cout: int):
        super().__init__()
        self.add_module("0", nn.AdaptiveAvgPool2d(scale))
        self.add_module("1", ConvModule(cin, cout, 1))

    def forward(self, x):
        return getattr(self, "1")(getattr(self, "0")(x))


def _resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class UperNetHead(nn.Module):
    def __init__(self, in_channels, channels: int, num_classes: int):
        super().__init__()
        self.psp_modules = nn.ModuleList([PoolingBlock(s, in_channels[-1], channels) for s in (1, 2, 3, 6)])
        self.bottleneck = ConvModule(in_channels[-1] + 4 * channels, channels, 3)
        self.lateral_convs = nn.ModuleList([ConvModule(c, channels, 1) for c in in_channels[:-1]])
        self.fpn_convs = nn.ModuleList([ConvModule(channels, channels, 3) for _ in in_channels[:-1]])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features):
        last = features[-1]
        top = self.bottleneck(torch.cat([last] + [_resize(p(last), last.shape[2:]) for p in self.psp_modules], 1))
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)] + [top]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
        outputs = [self.fpn_convs[i](laterals[i]) for i in range(len(laterals) - 1)] + [laterals[-1]]
        outputs = [outputs[0]] + [_resize(o, outputs[0].shape[2:]) for o in outputs[1:]]
        return self.classifier(self.fpn_bottleneck(torch.cat(outputs, 1)))


class FCNHead(nn.Module):
    def __init__(self, cin: int, channels: int, num_classes: int):
        super().__init__()
        self.convs = nn.Sequential(ConvModule(cin, channels, 3))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        return self.classifier(self.convs(x))


class PiratUperNet(nn.Module):
    """UperNetForSemanticSegmentation of nmndeep/Robust-Segmentation (raw [0, 1] input)."""

    def __init__(self, depths, dims, channels=512, num_classes=150, convstem=True):
        super().__init__()
        self.backbone = PiratConvNeXt(depths, dims, convstem)
        self.decode_head = UperNetHead(dims, channels, num_classes)
        self.auxiliary_head = FCNHead(dims[2], channels // 2, num_classes)

    def forward(self, x):
        return _resize(self.decode_head(self.backbone(x)), x.shape[2:])

    def auxiliary(self, x):
        return _resize(self.auxiliary_head(self.backbone(x)[2]), x.shape[2:])


# ------------------------------------------------------------------------------------------ PSPNet


class PSPNet(nn.Module):
    """semseg/DDC-AT PSPNet on a torchvision ResNet-50 (stem as layer0), dilation 2/4 in layer3/4.

    Upsampling uses ``align_corners=False`` (jaxseg's convention; the semseg code uses True).
    """

    def __init__(self, num_classes: int = 21):
        super().__init__()
        resnet = torchvision.models.resnet50(weights=None)
        self.layer0 = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        for layer, dilation in ((self.layer3, 2), (self.layer4, 4)):
            for name, module in layer.named_modules():
                if "conv2" in name:
                    module.dilation, module.padding, module.stride = (dilation, dilation), (dilation, dilation), (1, 1)
                elif "downsample.0" in name:
                    module.stride = (1, 1)
        self.ppm = nn.Module()
        self.ppm.features = nn.ModuleList(
            [
                nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(2048, 512, 1, bias=False), nn.BatchNorm2d(512), nn.ReLU())
                for b in (1, 2, 3, 6)
            ]
        )

        def head(cin, width):
            return nn.Sequential(
                nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.Dropout2d(0.1),
                nn.Conv2d(width, num_classes, 1),
            )

        self.cls = head(4096, 512)
        self.aux = head(1024, 256)

    def features(self, x):
        x = self.layer1(self.layer0(x))
        x = self.layer2(x)
        layer3 = self.layer3(x)
        return layer3, self.layer4(layer3)

    def forward(self, x):
        _, last = self.features(x)
        pyramid = [_resize(f(last), last.shape[2:]) for f in self.ppm.features]
        return _resize(self.cls(torch.cat([last] + pyramid, 1)), x.shape[2:])

    def auxiliary(self, x):
        return _resize(self.aux(self.features(x)[0]), x.shape[2:])


# ------------------------------------------------------------------------------------------ Segmenter


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = ((q @ k.transpose(-2, -1)) * (dim // self.heads) ** -0.5).softmax(-1)
        return self.proj((attention @ v).transpose(1, 2).reshape(batch, tokens, dim))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = FeedForward(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 16, 16)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class SegmenterEncoder(nn.Module):
    """Strudel et al.'s VisionTransformer (LayerNorm eps 1e-5), position embedding for ``image_size``."""

    def __init__(self, image_size: int, dim=384, depth=12, heads=6):
        super().__init__()
        self.grid = image_size // 16
        self.patch_embed = PatchEmbedding(dim)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid**2 + 1, dim))
        self.blocks = nn.ModuleList([TransformerBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1000)

    def forward(self, image):
        x = self.patch_embed(image)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        pos_embed = self.pos_embed
        grid_h, grid_w = image.shape[2] // 16, image.shape[3] // 16
        if (grid_h, grid_w) != (self.grid, self.grid):
            patch_pos = pos_embed[0, 1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
            patch_pos = F.interpolate(patch_pos, size=(grid_h, grid_w), mode="bilinear")
            pos_embed = torch.cat([pos_embed[:, :1], patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)], 1)
        x = x + pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class MaskTransformer(nn.Module):
    def __init__(self, num_classes: int, dim=384, depth=2, heads=6):
        super().__init__()
        self.num_classes = num_classes
        self.blocks = nn.ModuleList([TransformerBlock(dim, heads) for _ in range(depth)])
        self.cls_emb = nn.Parameter(torch.randn(1, num_classes, dim))
        self.proj_dec = nn.Linear(dim, dim)
        self.proj_patch = nn.Parameter(dim**-0.5 * torch.randn(dim, dim))
        self.proj_classes = nn.Parameter(dim**-0.5 * torch.randn(dim, dim))
        self.decoder_norm = nn.LayerNorm(dim)
        self.mask_norm = nn.LayerNorm(num_classes)

    def forward(self, x, grid_h):
        x = torch.cat([self.proj_dec(x), self.cls_emb.expand(x.shape[0], -1, -1)], 1)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_norm(x)
        patches = x[:, : -self.num_classes] @ self.proj_patch
        classes = x[:, -self.num_classes :] @ self.proj_classes
        patches = patches / patches.norm(dim=-1, keepdim=True)
        classes = classes / classes.norm(dim=-1, keepdim=True)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))
        return masks.transpose(1, 2).reshape(x.shape[0], self.num_classes, grid_h, -1)


class Segmenter(nn.Module):
    """Segmenter (encoder + mask transformer); input sides must be multiples of 16."""

    def __init__(self, num_classes: int, image_size: int):
        super().__init__()
        self.encoder = SegmenterEncoder(image_size)
        self.decoder = MaskTransformer(num_classes)

    def forward(self, image):
        tokens = self.encoder(image)[:, 1:]
        masks = self.decoder(tokens, image.shape[2] // 16)
        return _resize(masks, image.shape[2:])
