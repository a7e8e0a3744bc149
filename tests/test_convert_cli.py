"""``jaxseg convert``: writes a variables checkpoint that ``load_variables`` restores into a working model."""

import jax
import numpy as np
import pytest

from jaxseg.checkpoint import load_variables
from jaxseg.cli import main
from jaxseg.convert import convert_checkpoint
from jaxseg.convert.common import sha256_of
from jaxseg.models import create_model

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
from safetensors.torch import save_file  # noqa: E402

import torch_reference_models as ref  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = ref.randomize_(timm.create_model("convnext_atto", num_classes=6))
    path = tmp_path_factory.mktemp("src") / "convnext_atto.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_convert_then_load_gives_a_model_that_runs(checkpoint, tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["convert", str(checkpoint), "--out", str(out)]) == 0
    assert "convnext_atto" in capsys.readouterr().out
    variables, metadata = load_variables(out)
    assert metadata["model"] == "convnext_atto" and metadata["num_classes"] == 6
    assert metadata["family"] == "timm_convnext" and metadata["sha256"] == sha256_of(checkpoint)
    assert metadata["source"] == str(checkpoint.resolve()) and metadata["options"] == {"normalize": True}
    model = create_model(metadata["model"], metadata["num_classes"], **metadata["options"])
    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    logits = model.apply(variables, images)
    expected, _ = convert_checkpoint(checkpoint)
    assert logits.shape == (2, 6)
    np.testing.assert_allclose(logits, model.apply(jax.tree_util.tree_map(np.asarray, expected), images), atol=1e-6)


def test_convert_errors_are_reported_not_raised(checkpoint, tmp_path, capsys):
    assert main(["convert", str(tmp_path / "absent.pth"), "--out", str(tmp_path / "a")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["convert", str(checkpoint), "--out", str(tmp_path / "b"), "--num-classes", "3"]) == 2
    assert "6-class classifier" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    assert main(["convert", str(checkpoint), "--out", str(tmp_path / "full")]) == 2
    assert "new or empty directory" in capsys.readouterr().err
