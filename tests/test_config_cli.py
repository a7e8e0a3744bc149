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
