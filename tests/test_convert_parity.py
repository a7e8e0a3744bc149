"""PyTorch → Flax parity for every conversion family, at float32 and highest matmul precision.

Each PyTorch model has random weights with randomised norms, layer scales and BatchNorm statistics, is saved as
.pth and .safetensors, converted from both (the results must be identical) and run on the same images.
Logits must agree to 1e-4 and per-stage features to 1e-3, both relative to the output scale max(1, max|ref|).
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
from safetensors.torch import save_file  # noqa: E402

import torch_reference_models as ref  # noqa: E402
from jaxseg.convert import convert_checkpoint  # noqa: E402
from jaxseg.models import create_model  # noqa: E402
from jaxseg.models.layers import resize_bilinear  # noqa: E402

pytestmark = pytest.mark.torch
LOGIT_TOLERANCE = 1e-4
FEATURE_TOLERANCE = 1e-3


def save_and_convert(tmp_path, state_dict, wrapper=None, **options):
    """Save as .pth (inside ``{wrapper: state_dict, 'epoch': 3}`` if given) and .safetensors, convert both, check
    they agree; return (variables, metadata)."""
    state_dict = {key: value.detach().clone().contiguous() for key, value in state_dict.items()}
    torch.save({wrapper: state_dict, "epoch": 3} if wrapper else state_dict, tmp_path / "model.pth")
    save_file(state_dict, str(tmp_path / "model.safetensors"))
    variables, metadata = convert_checkpoint(tmp_path / "model.pth", **options)
    from_safetensors, metadata_st = convert_checkpoint(tmp_path / "model.safetensors", **options)
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, from_safetensors)
    assert {k: v for k, v in metadata.items() if k not in ("source", "sha256")} == {
        k: v for k, v in metadata_st.items() if k not in ("source", "sha256")
    }
    return variables, metadata


def images(batch, size, seed=0):
    return np.random.default_rng(seed).uniform(size=(batch, size, size, 3)).astype(np.float32)


def torch_apply(function, x_nhwc):
    with torch.no_grad():
        out = function(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()))
    return [to_nhwc(o) for o in out] if isinstance(out, (list, tuple)) else to_nhwc(out)


def to_nhwc(tensor):
    array = tensor.numpy()
    return array.transpose(0, 2, 3, 1) if array.ndim == 4 else array


def relative_error(actual, reference, tolerance):
    actual, reference = np.asarray(actual), np.asarray(reference)
    assert actual.shape == reference.shape
    error = float(np.max(np.abs(actual - reference)) / max(1.0, float(np.max(np.abs(reference)))))
    assert error <= tolerance, error
    return error


def flax_model(metadata):
    return create_model(metadata["model"], metadata["num_classes"], **metadata["options"])


def subtree(variables, name):
    return {collection: tree[name] for collection, tree in variables.items() if name in tree}


def backbone_features(model, variables, x):
    backbone = model.backbone.clone(num_classes=None) if hasattr(model.backbone, "num_classes") else model.backbone
    return backbone.apply(subtree(variables, "backbone"), x, train=False)


def report(family, **errors):
    print(f"\n[parity] {family}: " + ", ".join(f"{k}={v:.2e}" for k, v in errors.items()))


def test_timm_convnext_atto(tmp_path):
    torch.manual_seed(0)
    model = ref.randomize_(timm.create_model("convnext_atto", num_classes=10))
    variables, metadata = save_and_convert(tmp_path, model.state_dict())
    assert metadata["model"] == "convnext_atto" and metadata["num_classes"] == 10
    assert metadata["family"] == "timm_convnext" and metadata["options"]["normalize"] is True
    x = images(2, 64)
    normalized = (x - np.array(ref.IMAGENET_MEAN, np.float32)) / np.array(ref.IMAGENET_STD, np.float32)
    flax = flax_model(metadata)
    logits = relative_error(flax.apply(variables, x), torch_apply(model, normalized), LOGIT_TOLERANCE)
    reference = torch_apply(lambda t: model.forward_intermediates(t, intermediates_only=True), normalized)
    features = max(
        relative_error(a, b, FEATURE_TOLERANCE)
        for a, b in zip(backbone_features(flax, variables, normalized), reference)
    )
    report("timm_convnext (convnext_atto)", logits=logits, features=features)


def test_revisiting_at_convstem_with_wrappers(tmp_path):
    torch.manual_seed(1)
    model = ref.randomize_(ref.NormalizedModel(ref.convstem_convnext("convnext_atto", 7), "base_model"))
    state_dict = {f"module.{key}": value for key, value in model.state_dict().items()}
    variables, metadata = save_and_convert(tmp_path, state_dict, wrapper="state_dict")
    assert metadata["model"] == "convnext_atto_cvst" and metadata["family"] == "revisiting_at"
    assert metadata["options"]["normalize"] is True
    x = images(2, 64, seed=1)
    logits = relative_error(flax_model(metadata).apply(variables, x), torch_apply(model, x), LOGIT_TOLERANCE)
    report("revisiting_at (ConvStem convnext_atto)", logits=logits)


@pytest.mark.parametrize("convstem", [True, False])
def test_pirat_upernet(tmp_path, convstem):
    torch.manual_seed(2)
    model = ref.randomize_(ref.PiratUperNet((2, 2, 6, 2), (40, 80, 160, 320), channels=64, num_classes=5, convstem=convstem))
    variables, metadata = save_and_convert(tmp_path, model.state_dict(), wrapper="model")
    assert metadata["model"] == "upernet_convnext_atto" + ("_cvst" if convstem else "")
    assert metadata["options"] == {"normalize": False, "decoder_channels": 64, "auxiliary": True}
    x = images(2, 64, seed=2)
    flax = flax_model(metadata)
    logits = flax.apply(variables, x)
    reference = torch_apply(model, x)
    logit_error = relative_error(logits, reference, LOGIT_TOLERANCE)
    agreement = float(np.mean(np.argmax(logits, -1) == np.argmax(reference, -1)))
    assert agreement > 0.999
    features = backbone_features(flax, variables, x)
    feature_error = max(
        relative_error(a, b, FEATURE_TOLERANCE) for a, b in zip(features, torch_apply(model.backbone, x))
    )
    auxiliary = flax.auxiliary_head.apply(subtree(variables, "auxiliary_head"), features[2], train=False)
    auxiliary_error = relative_error(resize_bilinear(auxiliary, 64, 64), torch_apply(model.auxiliary, x), LOGIT_TOLERANCE)
    report(
        f"pirat_upernet (atto, convstem={convstem})",
        logits=logit_error, features=feature_error, auxiliary=auxiliary_error, argmax_disagreement=1 - agreement,
    )


def test_robustbench_resnet50(tmp_path):
    torch.manual_seed(3)
    model = ref.randomize_(ref.NormalizedModel(torchvision.models.resnet50(weights=None, num_classes=10)))
    variables, metadata = save_and_convert(tmp_path, model.state_dict())
    assert metadata["model"] == "resnet50" and metadata["family"] == "resnet" and metadata["options"]["normalize"]
    x = images(2, 64, seed=3)
    flax = flax_model(metadata)
    logits = relative_error(flax.apply(variables, x), torch_apply(model, x), LOGIT_TOLERANCE)
    net = model.model
    normalized = (x - np.array(ref.IMAGENET_MEAN, np.float32)) / np.array(ref.IMAGENET_STD, np.float32)

    def stages(t):
        t = net.maxpool(net.relu(net.bn1(net.conv1(t))))
        outputs = []
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            t = layer(t)
            outputs.append(t)
        return outputs

    features = max(
        relative_error(a, b, FEATURE_TOLERANCE)
        for a, b in zip(backbone_features(flax, variables, normalized), torch_apply(stages, normalized))
    )
    report("resnet (RobustBench-style ResNet-50)", logits=logits, features=features)


def test_pspnet_resnet50(tmp_path):
    torch.manual_seed(4)
    model = ref.randomize_(ref.PSPNet(num_classes=5))
    variables, metadata = save_and_convert(tmp_path, model.state_dict(), normalize=False)
    assert metadata["model"] == "pspnet_resnet50" and metadata["options"] == {"normalize": False, "auxiliary": True}
    x = images(1, 64, seed=4)
    flax = flax_model(metadata)
    logits = flax.apply(variables, x)
    reference = torch_apply(model, x)
    logit_error = relative_error(logits, reference, LOGIT_TOLERANCE)
    features = backbone_features(flax, variables, x)
    layer3, layer4 = torch_apply(model.features, x)
    assert features[3].shape == (1, 8, 8, 2048)
    feature_error = max(relative_error(features[2], layer3, FEATURE_TOLERANCE), relative_error(features[3], layer4, FEATURE_TOLERANCE))
    auxiliary = flax.auxiliary_head.apply(subtree(variables, "auxiliary_head"), features[2], train=False)
    auxiliary_error = relative_error(resize_bilinear(auxiliary, 64, 64), torch_apply(model.auxiliary, x), LOGIT_TOLERANCE)
    agreement = float(np.mean(np.argmax(logits, -1) == np.argmax(reference, -1)))
    report("pspnet (dilated ResNet-50)", logits=logit_error, features=feature_error, auxiliary=auxiliary_error,
           argmax_disagreement=1 - agreement)


def test_timm_vit_small(tmp_path):
    torch.manual_seed(5)
    model = ref.randomize_(timm.create_model("vit_small_patch16_224", img_size=32, num_classes=10))
    variables, metadata = save_and_convert(tmp_path, model.state_dict())
    assert metadata["model"] == "vit_s16" and metadata["options"] == {"normalize": True, "pos_embed_grid": 2}
    x = images(2, 32, seed=5)
    normalized = (x - np.array(ref.IMAGENET_MEAN, np.float32)) / np.array(ref.IMAGENET_STD, np.float32)
    flax = flax_model(metadata)
    logits = relative_error(flax.apply(variables, x), torch_apply(model, normalized), LOGIT_TOLERANCE)
    tokens = torch_apply(model.forward_features, normalized)[:, 1:].reshape(2, 2, 2, 384)
    features = relative_error(backbone_features(flax, variables, normalized)[0], tokens, FEATURE_TOLERANCE)
    report("timm_vit (vit_small_patch16_224 at 32 px)", logits=logits, features=features)


def test_pirat_segmenter_at_native_and_resized_grid(tmp_path):
    torch.manual_seed(6)
    model = ref.randomize_(ref.Segmenter(num_classes=5, image_size=64))
    variables, metadata = save_and_convert(tmp_path, model.state_dict())
    assert metadata["model"] == "segmenter_vit_s"
    assert metadata["options"] == {"normalize": False, "pos_embed_grid": 4}
    flax = flax_model(metadata)
    errors = {}
    for size in (64, 32):  # 32 px resizes the stored 4x4 position embedding to 2x2
        x = images(2, size, seed=size)
        logits = flax.apply(variables, x)
        reference = torch_apply(model, x)
        errors[f"logits_{size}px"] = relative_error(logits, reference, LOGIT_TOLERANCE)
        tokens = torch_apply(lambda t: model.encoder(t)[:, 1:], x).reshape(2, size // 16, size // 16, 384)
        errors[f"features_{size}px"] = relative_error(backbone_features(flax, variables, x)[0], tokens, FEATURE_TOLERANCE)
    report("pirat_segmenter (ViT-S/16 + mask transformer)", **errors)
