"""Conversion safety and error reporting: refused pickles, corrupt files, wrong families, key/shape problems."""

import pickle
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxseg.convert import convert_checkpoint, convert_state_dict, detect_family
from jaxseg.convert.common import load_state_dict

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from safetensors.torch import save_file  # noqa: E402

import torch_reference_models as ref  # noqa: E402

pytestmark = pytest.mark.torch


class MarkerPayload:
    """Unpickling this would create ``path``: the test asserts that it never happens."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def atto_state_dict(num_classes=10):
    torch.manual_seed(0)
    return {k: v.numpy() for k, v in timm.create_model("convnext_atto", num_classes=num_classes).state_dict().items()}


def shapes_only(module):
    """A state dict of zero-stride arrays with ``module``'s key names and shapes (no memory, no compute)."""
    return {key: np.broadcast_to(np.float32(0), tuple(value.shape)) for key, value in module.state_dict().items()}


def test_importing_the_library_does_not_import_torch():
    code = "import sys, jaxseg.convert, jaxseg.models, jaxseg.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    payload = {"weight": torch.zeros(3), "payload": MarkerPayload(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle)
    with pytest.raises(ValueError, match="arbitrary code"):
        convert_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_truncated_file_is_reported(tmp_path, suffix):
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in atto_state_dict().items()}
    path = tmp_path / f"model{suffix}"
    torch.save(tensors, path) if suffix == ".pth" else save_file(tensors, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        convert_checkpoint(path)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(FileNotFoundError):
        convert_checkpoint(tmp_path / "absent.safetensors")
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported checkpoint file"):
        convert_checkpoint(tmp_path / "weights.npz")


def test_pt_files_without_torch_give_install_advice(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ValueError, match="torch extra"):
        load_state_dict(path)


def test_wrappers_are_unwrapped(tmp_path):
    torch.save({"model": {"state_dict": {"a.weight": torch.ones(2)}}, "epoch": 1}, tmp_path / "wrapped.pt")
    loaded = load_state_dict(tmp_path / "wrapped.pt")
    assert list(loaded) == ["a.weight"] and loaded["a.weight"].dtype == np.float32


def test_wrong_family_names_what_the_keys_look_like():
    with pytest.raises(ValueError, match=r"does not look like a resnet checkpoint.*look like family 'timm_convnext'"):
        convert_state_dict(atto_state_dict(), family="resnet")
    with pytest.raises(ValueError, match="unknown family"):
        convert_state_dict(atto_state_dict(), family="not_a_family")


def test_unknown_layout_is_reported_with_the_known_families():
    with pytest.raises(ValueError, match="cannot tell which model family.*pirat_upernet"):
        detect_family(["encoder.weight", "decoder.bias"])


def test_every_key_problem_is_listed_in_one_error():
    state_dict = atto_state_dict()
    del state_dict["stages.1.blocks.0.gamma"], state_dict["head.norm.bias"]
    state_dict["stages.0.blocks.0.conv_dw.weight"] = np.zeros((40, 1, 5, 5), np.float32)
    state_dict["stages.0.blocks.0.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as info:
        convert_state_dict(state_dict)
    message = str(info.value)
    assert "1 source keys match no rule" in message and "stages.0.blocks.0.extra.weight" in message
    assert "1 shapes differ" in message and "stage0_block0/conv_dw/kernel: expected (7, 7, 1, 40), got (5, 5, 1, 40)" in message
    assert "2 model variables have no source key" in message
    assert "params/backbone/stage1_block0/gamma" in message and "params/backbone/head_norm/bias" in message


def test_num_classes_mismatch_and_foreign_normalisation_are_refused():
    with pytest.raises(ValueError, match="10-class classifier, but num_classes=21"):
        convert_state_dict(atto_state_dict(), num_classes=21)
    state_dict = atto_state_dict() | {"normalize.mean": np.full(3, 0.5, np.float32), "normalize.std": np.full(3, 0.5, np.float32)}
    with pytest.raises(ValueError, match="ImageNet statistics"):
        convert_state_dict(state_dict)


def test_published_sizes_convert_shape_only():
    """ConvNeXt-T classifier (timm) and PIR-AT UPerNet + ConvNeXt-T/ConvStem (ADE20K) cover the full key layouts."""
    with torch.device("meta"):
        timm_tiny = timm.create_model("convnext_tiny")
        pirat = ref.PiratUperNet((3, 3, 9, 3), (96, 192, 384, 768), channels=512, num_classes=150, convstem=True)
    _, metadata = convert_state_dict(shapes_only(timm_tiny))
    assert (metadata["model"], metadata["num_classes"]) == ("convnext_t", 1000)
    variables, metadata = convert_state_dict({f"module.{k}": v for k, v in shapes_only(pirat).items()})
    assert metadata == {
        "model": "upernet_convnext_t_cvst", "num_classes": 150, "family": "pirat_upernet",
        "options": {"normalize": False, "decoder_channels": 512, "auxiliary": True},
    }
    assert variables["params"]["backbone"]["stem"]["conv2"]["kernel"].shape == (3, 3, 48, 96)
    assert sum(p.numel() for p in pirat.parameters()) == sum(
        int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(variables["params"])
    )
