"""Configs, overrides and the command line."""

import json

import pytest

from jaxseg import cli
from jaxseg.config import apply_override, config_from_json, load_config, save_config


def test_config_loads_with_arg_and_overrides():
    config = load_config("synthetic:pgd-at,quick", ["train.steps=7", "attack.eps=8/255", "model.name=upernet_convnext_t"])
    assert config.train.recipe == "pgd-at"
    assert config.train.steps == 7
    assert config.attack.eps == pytest.approx(8 / 255)
    assert config.model.name == "upernet_convnext_t"
    apply_override(config, "evaluate.eps=(4/255, 8/255)")
    assert config.evaluate.eps == pytest.approx((4 / 255, 8 / 255)) and isinstance(config.evaluate.eps, tuple)
    apply_override(config, "mesh.data=-2*2")
    assert config.mesh.data == -4


def test_unknown_fields_and_configs_are_errors():
    config = load_config("synthetic")
    with pytest.raises(ValueError, match="trian"):
        apply_override(config, "trian.steps=3")
    with pytest.raises(FileNotFoundError, match="synthetic"):
        load_config("no_such_config")
    with pytest.raises(ValueError, match="unknown arg"):
        load_config("synthetic:fast")


def test_config_round_trips_through_json(tmp_path):
    config = load_config("synthetic:quick")
    save_config(config, tmp_path / "config.json")
    assert config_from_json(tmp_path / "config.json").to_dict() == config.to_dict()


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in ("train", "evaluate", "attack", "convert", "generate", "inpaint", "saliency", "quickstart", "models"):
        assert name in out


def test_models_and_config_commands(capsys):
    assert cli.main(["models"]) == 0
    assert "upernet_convnext_atto" in capsys.readouterr().out.split()
    assert cli.main(["config", "synthetic:quick", "--config.train.steps=3"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["steps"] == 3


def test_cli_reports_bad_overrides_with_exit_code_2(capsys):
    assert cli.main(["config", "synthetic", "train.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("name, images, warmup_epochs", [
    # Reference code github.com/nmndeep/Robust-Segmentation, configs/pascalvoc_convnext.yaml: N_ITERS 5, WARMUP 10.
    ("pirat_voc", 10582, 10),
    # configs/ade20k_convnext.yaml: WARMUP 5 (= the paper's Tab. 4 for 32 epochs); steps 5 as the paper's Tab. 2-3.
    ("pirat_ade20k", 20210, 5),
])
def test_pirat_recipes_use_five_attack_steps_and_the_released_warmup(name, images, warmup_epochs):
    config = load_config(name)
    assert config.train.recipe == "pgd-at"
    assert config.attack.steps == 5
    assert not config.attack.random_start  # PGD from delta = 0
    assert config.train.warmup_steps == warmup_epochs * images // config.train.batch_size
    for variant in (f"{name}:2step", f"{name}:t,2step", f"{name}:s,2step"):
        two_step = load_config(variant)
        assert two_step.attack.steps == 2
        assert two_step.train.warmup_steps == config.train.warmup_steps
        assert two_step.train.steps == config.train.steps
    assert load_config(f"{name}:s").attack.steps == 5


def test_pirat_clean_init_warmup_scales_with_its_epochs():
    # VOC 300 epochs: the reference code's 1/5 ratio (60 epochs); ADE20K 128 epochs: 20 (paper Tab. 4).
    voc, ade = load_config("pirat_voc:clean-init"), load_config("pirat_ade20k:clean-init")
    assert voc.train.warmup_steps == 60 * 10582 // 128 and voc.train.steps == 300 * 10582 // 128
    assert ade.train.warmup_steps == 20 * 20210 // 128 and ade.train.steps == 128 * 20210 // 128
