"""Kill-and-resume of `jaxseg train` as a scheduler does it, and failed resumes that leave the work directory alone.

One uninterrupted run and one run that is SIGKILLed at seeded random moments (once right after an asynchronous
checkpoint save starts, the others a random time after a random step), then SIGTERMed, then run to the end, both
through the command line on one CPU device (a subprocess each, as a user runs them). The interrupted run must end
with bit-identical parameters and with every step once in metrics.jsonl and in the TensorBoard events; the SIGTERM
must exit with 143 and say that the run was saved and will resume.
"""

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event

from jaxseg import data as datasets
from jaxseg.checkpoint import load_variables
from jaxseg.cli import main
from jaxseg.train.loop import _MetricWriter, read_event_records, truncate_events, truncate_metrics

DATASET = "synthetic_shapes/32px-n64-16-16-seed0"
STEPS = 30
EVAL_EVERY = 10
SIGKILLS = 5
SEED = 4  # targets 2, 4, 1, 4, 3 steps after the restored one


def train_command(data_dir, workdir, *extra) -> list[str]:
    # The smallest training the tests run (UPerNet ConvNeXt-atto on 32 px, clean recipe), at batch 2; grouped
    # depthwise convolutions trace in half the time of the CPU's shifted ones, and every process start traces.
    return [
        sys.executable, "-m", "jaxseg.cli", "train", "synthetic:quick", "--workdir", str(workdir),
        f"--config.data.name={DATASET}", f"--config.data.data_dir={data_dir}", "--config.model.depthwise=conv",
        f"--config.train.steps={STEPS}", "--config.train.batch_size=2", "--config.train.checkpoint_every=2",
        f"--config.train.eval_every={EVAL_EVERY}", "--config.train.robust_eval_iterations=0",
        "--config.train.best_metric=clean_mIoU", *extra,
    ]


def one_device_environment() -> dict:
    """This environment (the shared compilation cache included) without the 8 fake devices of conftest.py."""
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if not f.startswith("--xla_force_host_platform_device_count"))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the small programs too: eight starts load them
    return env


def start(command, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "w")
    process = subprocess.Popen(command, env=one_device_environment(), stdout=log, stderr=subprocess.STDOUT, text=True)
    log.close()
    return process


def checkpoint_steps(workdir: Path) -> list[int]:
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def saves_in_progress(workdir: Path) -> list[str]:
    directory = workdir / "checkpoints"
    return [p.name for p in directory.iterdir() if "orbax-checkpoint-tmp" in p.name] if directory.is_dir() else []


def logged_step(workdir: Path, process: subprocess.Popen) -> int:
    """The last step that ``process`` itself has logged (in the event file named with its process id)."""
    files = (workdir / "tensorboard").glob(f"events.out.tfevents.*.{process.pid}")
    events = [Event.FromString(payload) for path in files for _, payload in read_event_records(path)]
    return max((event.step for event in events if event.summary.value), default=-1)


def wait_for(process: subprocess.Popen, condition, what: str, timeout: float = 300.0, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(poll)


def scalar_steps(workdir: Path) -> dict[str, list[int]]:
    """{tag: [step, ...]} of the scalars in all TensorBoard event files, read back record by record."""
    steps: dict[str, list[int]] = {}
    for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
        records = read_event_records(path)
        assert sum(len(record) for record, _ in records) == path.stat().st_size, f"torn records in {path.name}"
        for _, payload in records:
            event = Event.FromString(payload)
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


# Eight process starts (each imports, traces and loads the compiled steps: ~10-25 s) and one compilation: about
# 380 CPU-seconds; 4-9 minutes on a 2-core machine shared with other jobs.
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uninterrupted and the interrupted run's work directories and what the interruptions did."""
    root = tmp_path_factory.mktemp("resume")
    data_dir = root / "data"
    datasets.prepare("synthetic_shapes", data_dir=str(data_dir), image_size=32, num_train=64, num_validation=16,
                     num_test=16)
    # The interrupted run starts once the uninterrupted one has compiled its training step (the shared cache
    # then serves it); the two overlap from there.
    uninterrupted = start(train_command(data_dir, root / "uninterrupted"), root / "uninterrupted.log")
    wait_for(uninterrupted, lambda: logged_step(root / "uninterrupted", uninterrupted) >= 1, "a first step",
             timeout=900)

    try:
        workdir = root / "interrupted"
        rng = random.Random(SEED)
        interruptions = []
        for index in range(SIGKILLS + 1):
            restored = max(checkpoint_steps(workdir), default=0)
            log_path = root / f"interrupted-{index}.log"
            process = start(train_command(data_dir, workdir), log_path)
            if index == 1:
                # Right after an asynchronous save starts: the step directory is still Orbax's temporary one.
                leftover = set(saves_in_progress(workdir))  # the next run removes these when it opens the directory
                wait_for(process, lambda: set(saves_in_progress(workdir)) - leftover, "a checkpoint save started",
                         poll=0.005)
                process.send_signal(signal.SIGKILL)
                returncode = process.wait(timeout=300)
                interruptions.append({"signal": "SIGKILL", "restored": restored, "returncode": returncode,
                                      "mid_save": sorted(set(saves_in_progress(workdir)) - leftover)})
                continue
            # A random moment: 1-4 steps after the restored one (mid-step, in a log write, an evaluation or a save).
            target = restored + rng.randint(1, 4)
            wait_for(process, lambda: logged_step(workdir, process) >= target, f"step {target}")
            time.sleep(rng.uniform(0.0, 0.5))
            sigterm = index == SIGKILLS
            process.send_signal(signal.SIGTERM if sigterm else signal.SIGKILL)
            returncode = process.wait(timeout=300)
            interruptions.append({"signal": "SIGTERM" if sigterm else "SIGKILL", "restored": restored,
                                  "returncode": returncode, "log": log_path.read_text()})
        final = start(train_command(data_dir, workdir), root / "final.log")
        assert final.wait(timeout=900) == 0, (root / "final.log").read_text()[-3000:]
    except BaseException:
        uninterrupted.kill()
        raise
    assert uninterrupted.wait(timeout=900) == 0, (root / "uninterrupted.log").read_text()[-3000:]
    return {"uninterrupted": root / "uninterrupted", "interrupted": workdir, "interruptions": interruptions,
            "data_dir": data_dir}


@slow
def test_killed_and_resumed_run_ends_bit_identical(runs):
    kills = [i for i in runs["interruptions"] if i["signal"] == "SIGKILL"]
    assert len(kills) >= SIGKILLS and all(kill["returncode"] == -signal.SIGKILL for kill in kills)
    # One kill landed while an asynchronous save was being written; the run resumed past it anyway.
    assert any(kill.get("mid_save") for kill in kills)
    # Every run resumed from further along than the one before, or from the same checkpoint.
    restored = [i["restored"] for i in runs["interruptions"]]
    assert restored == sorted(restored) and restored[-1] > 0
    expected, metadata = load_variables(runs["uninterrupted"])
    resumed, resumed_metadata = load_variables(runs["interrupted"])
    assert metadata["step"] == resumed_metadata["step"] == STEPS
    jax.tree_util.tree_map(np.testing.assert_array_equal, expected, resumed)
    # The temporary directory of the save killed midway was cleaned up by the next run.
    assert not saves_in_progress(runs["interrupted"])


@slow
def test_every_step_is_recorded_once(runs):
    for workdir in (runs["uninterrupted"], runs["interrupted"]):
        rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        assert [row["step"] for row in rows if "loss" in row] == list(range(1, STEPS + 1)), workdir.name
        evaluations = list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
        assert [row["step"] for row in rows if "clean_mIoU" in row] == evaluations, workdir.name
        tags = scalar_steps(workdir)
        for tag in ("loss", "pixel_accuracy", "images_per_second"):
            assert tags[tag] == list(range(1, STEPS + 1)), (workdir.name, tag)
        assert tags["clean_mIoU"] == evaluations
    # The interrupted run's values are the uninterrupted run's (timings aside), also across the restarts.
    def values(workdir):
        rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "images_per_second"} for row in rows]

    assert values(runs["interrupted"]) == values(runs["uninterrupted"])


@slow
def test_sigterm_saves_and_exits_143(runs):
    (sigterm,) = [i for i in runs["interruptions"] if i["signal"] == "SIGTERM"]
    assert sigterm["returncode"] == 143, sigterm["log"][-3000:]
    assert "stopped by SIGTERM at step" in sigterm["log"] and "will resume from it when started again" in sigterm["log"]
    summary, _ = json.JSONDecoder().raw_decode(sigterm["log"][sigterm["log"].rindex('{\n  "status"'):])
    assert summary["status"] == "preempted" and summary["checkpoint_step"] == summary["step"]


def tree_digest(directory: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``directory`` (directories as entries too)."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(directory.rglob("*"))
    }


@slow
def test_failed_resume_leaves_the_work_directory_untouched(runs, tmp_path, capsys):
    workdir = runs["interrupted"]
    before = tree_digest(workdir)
    common = ["train", "synthetic:quick", "--workdir", str(workdir), f"--config.data.name={DATASET}",
              f"--config.data.data_dir={runs['data_dir']}", f"--config.train.steps={STEPS + 10}"]
    failures = {
        "another model": (["--config.model.name=upernet_convnext_femto"], r"different model \(\d+ mismatched"),
        "another class count": (["--config.model.num_classes=7"], r"decode_head/classifier/kernel: checkpoint"),
        "a missing split": (["--config.data.eval_split=nosuchsplit"], "has no split 'nosuchsplit'"),
        "a bad interval": (["--config.train.log_every=0"], "train.log_every must be a positive integer"),
        "a misspelt metric": (["--config.train.best_metric=robust_miou"], "train.best_metric must be"),
    }
    for name, (overrides, message) in failures.items():
        assert main(common + overrides) == 2, name
        error = capsys.readouterr().err
        assert re.search(message, error), (name, error[-2000:])
        assert tree_digest(workdir) == before, f"{name}: the work directory changed"
    # A fresh run with bad data creates no work directory at all.
    fresh = tmp_path / "fresh"
    assert main(["train", "synthetic:quick", "--workdir", str(fresh), f"--config.data.name={DATASET}",
                 f"--config.data.data_dir={tmp_path / 'no-data'}"]) == 2
    assert "is not prepared" in capsys.readouterr().err
    assert not fresh.exists()


def test_truncating_the_records_keeps_steps_up_to_the_restored_one(tmp_path):
    from tensorboardX import SummaryWriter

    metrics = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 7)]
    metrics.write_text("".join(rows) + '{"step": 7, "lo')  # a torn last line from a killed writer
    truncate_metrics(metrics, 4)
    assert metrics.read_text() == "".join(rows[:4])

    # Event files written by tensorboardX, one with a torn last record, then by the run's own writer.
    board = tmp_path / "tensorboard"
    writer = SummaryWriter(str(board), filename_suffix=".first")
    for s in range(1, 7):
        writer.add_scalar("loss", 1.0 / s, s)
    writer.close()
    with open(next(board.glob("*.first")), "ab") as events:
        events.write(b"\x10\x00\x00")
    assert truncate_events(board, 4)
    assert scalar_steps(tmp_path)["loss"] == [1, 2, 3, 4]
    writer = _MetricWriter(tmp_path, resume_step=4)  # truncates again (no change), then appends
    for s in range(5, 8):
        writer.write(s, {"loss": 1.0 / s, "accuracy": 0.5})
    writer.close()
    assert scalar_steps(tmp_path) == {"loss": list(range(1, 8)), "accuracy": [5, 6, 7]}
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == list(range(1, 8))
    (ours,) = [p for p in board.iterdir() if not p.name.endswith(".first")]
    events = [Event.FromString(payload) for _, payload in read_event_records(ours)]
    assert events[0].file_version == "brain.Event:2"
    assert events[1].step == 5 and events[1].session_log.status == events[1].session_log.START
    assert events[2].summary.value[0].tag == "loss" and events[2].summary.value[0].simple_value == pytest.approx(0.2)
    # A restart from step 2: the first file keeps steps <= 2; the second, left without summaries, is removed.
    writer = _MetricWriter(tmp_path, resume_step=2)
    writer.close()
    assert scalar_steps(tmp_path) == {"loss": [1, 2]}
    assert len(list(board.iterdir())) == 2  # the first file and the new one (a header and the restart marker)
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2]
    assert not truncate_events(tmp_path / "missing", 0)
