"""The training driver end to end on a tiny synthetic_shapes: resume = uninterrupted, SIGTERM, best checkpoint,
PIR-AT initialisation, evaluation logs, and a two-process jax.distributed run on localhost."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxseg import data as datasets
from jaxseg.checkpoint import load_variables, save_variables
from jaxseg.config import load_config
from jaxseg.models import create_model, init_variables
from jaxseg.train.checkpoints import load_training_variables
from jaxseg.train.loop import initialise_from, train

DATASET = "synthetic_shapes/32px-n64-16-16-seed0"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    datasets.prepare("synthetic_shapes", data_dir=str(directory), image_size=32, num_train=64, num_validation=16, num_test=16)
    return str(directory)


def quick_config(data_dir, *overrides, recipe="pgd-at"):
    """A 4-step run on 32 px crops; ``recipe='clean'`` (no robust evaluation) where the attack is beside the point."""
    if recipe == "clean":
        overrides = ("train.robust_eval_iterations=0", *overrides)
    return load_config(f"synthetic:{recipe},quick", [
        f"data.name={DATASET}", f"data.data_dir={data_dir}", "train.steps=4", "train.checkpoint_every=2",
        "train.eval_every=2", "train.eval_examples=8", *overrides,
    ])


def test_resumed_run_after_sigterm_matches_uninterrupted_run(data_dir, tmp_path):
    config = quick_config(data_dir)
    full = train(config, tmp_path / "full")
    assert full["status"] == "completed" and full["step"] == 4

    def preempt_at_two(step, values):
        if step == 2 and "loss" in values:
            os.kill(os.getpid(), signal.SIGTERM)

    first = train(config, tmp_path / "resumed", on_step=preempt_at_two)
    assert first["status"] == "preempted" and first["step"] == first["checkpoint_step"] == 2
    # The SIGTERM left a restorable checkpoint.
    variables, metadata = load_variables(tmp_path / "resumed")
    assert metadata["step"] == 2 and metadata["model"] == "upernet_convnext_atto"
    second = train(config, tmp_path / "resumed")
    assert second["status"] == "completed" and second["step"] == 4

    full_variables, _ = load_variables(tmp_path / "full")
    resumed_variables, _ = load_variables(tmp_path / "resumed")
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), full_variables, resumed_variables
    )

    # Logs: JSON lines with training and evaluation metrics, TensorBoard events, the config; each step once
    # in the resumed run's too.
    lines = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == [1, 2, 3, 4]
    resumed_lines = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in resumed_lines] == [line["step"] for line in lines]
    evaluations = [line for line in lines if "clean_mIoU" in line]
    assert [e["step"] for e in evaluations] == [2, 4]
    for e in evaluations:
        assert 0.0 <= e["robust_aAcc"] <= e["clean_aAcc"] <= 1.0
    assert list((tmp_path / "full" / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "full" / "config.json").read_text())["train"]["recipe"] == "pgd-at"
    # The best checkpoint by robust mIoU exists and loads.
    _, best_metadata = load_training_variables(tmp_path / "full", best=True)
    assert best_metadata["step"] in (2, 4)


def test_restore_onto_a_different_device_count(data_dir, tmp_path):
    config = quick_config(data_dir, "train.steps=2", "mesh.data=8", recipe="clean")
    train(config, tmp_path / "run")
    resumed = train(quick_config(data_dir, "train.steps=3", "mesh.data=2", "mesh.model=4", recipe="clean"), tmp_path / "run")
    assert resumed["status"] == "completed" and resumed["step"] == 3


def test_pirat_initialisation_copies_the_backbone(tmp_path):
    classifier = create_model("convnext_atto", 6)
    classifier_variables = init_variables(classifier, jax.random.key(1), (1, 32, 32, 3))
    save_variables(tmp_path / "backbone", classifier_variables, {"model": "convnext_atto", "num_classes": 6})

    segmentor = create_model("upernet_convnext_atto", 6)
    fresh = init_variables(segmentor, jax.random.key(2), (1, 32, 32, 3))
    merged, copied = initialise_from(fresh, str(tmp_path / "backbone"))
    np.testing.assert_array_equal(
        merged["params"]["backbone"]["stem"]["conv"]["kernel"], classifier_variables["params"]["backbone"]["stem"]["conv"]["kernel"]
    )
    # The decoder and the segmentation-only output norms keep their fresh initialisation.
    np.testing.assert_array_equal(merged["params"]["decode_head"]["classifier"]["kernel"],
                                  fresh["params"]["decode_head"]["classifier"]["kernel"])
    assert "out_norm0" in merged["params"]["backbone"]
    assert any("stage2_block5" in path for path in copied)

    wrong = create_model("upernet_convnext_femto", 6)
    with pytest.raises(ValueError, match="shapes differ"):
        initialise_from(init_variables(wrong, jax.random.key(3), (1, 32, 32, 3)), str(tmp_path / "backbone"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_distributed_run_on_localhost(data_dir, tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    command = [
        sys.executable, "-m", "jaxseg.cli", "train", "synthetic:quick", "--workdir", str(tmp_path / "run"),
        "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
        f"--config.data.name={DATASET}", f"--config.data.data_dir={data_dir}", "--config.train.steps=2",
        "--config.train.eval_every=2", "--config.train.robust_eval_iterations=0",
    ]
    processes = [
        subprocess.Popen(command + ["--process-id", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    stdout = outputs[0][0]  # the summary JSON, possibly beside lines the collectives library prints
    summary, _ = json.JSONDecoder().raw_decode(stdout[stdout.index("{"):])
    assert summary["status"] == "completed" and summary["step"] == 2
    assert (Path(tmp_path) / "run" / "checkpoints" / "2").exists()


def test_bad_workdirs_and_foreign_checkpoints_give_clear_errors(data_dir, tmp_path, monkeypatch):
    config = quick_config(data_dir, "train.steps=2", "train.checkpoint_every=1", "train.eval_every=100", recipe="clean")
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with pytest.raises(OSError, match="not writable"):
        train(config, not_a_directory / "run")

    # A full disk at step 2: a clear error naming the intact earlier checkpoint, which then resumes.
    from jaxseg.train import checkpoints as checkpoints_module

    original_save = checkpoints_module.ocp.CheckpointManager.save

    def save_fails_at_step_two(manager, step, *args, **kwargs):
        if step == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original_save(manager, step, *args, **kwargs)

    monkeypatch.setattr(checkpoints_module.ocp.CheckpointManager, "save", save_fails_at_step_two)
    with pytest.raises(checkpoints_module.CheckpointWriteError, match=r"step 2 .*No space left.*steps \[1\]"):
        train(config, tmp_path / "run")
    monkeypatch.setattr(checkpoints_module.ocp.CheckpointManager, "save", original_save)
    assert load_variables(tmp_path / "run")[1]["step"] == 1
    assert train(config, tmp_path / "run")["step"] == 2

    # Resuming a run of another model, or loading its variables into another model, lists the differences.
    femto = quick_config(data_dir, "train.steps=3", "model.name=upernet_convnext_femto", recipe="clean")
    with pytest.raises(ValueError, match=r"(?s)different model \(\d+ mismatched parameters\).*params/backbone/.*checkpoint \(\d+,\) vs model"):
        train(femto, tmp_path / "run")
    target = init_variables(create_model("upernet_convnext_femto", 6), jax.random.key(0), (1, 32, 32, 3))
    with pytest.raises(ValueError, match=r"checkpoint (.|\n)*: checkpoint \(\d+,?\) vs model"):
        load_variables(tmp_path / "run", target=target)
