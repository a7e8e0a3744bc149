"""`jaxseg quickstart --budget tiny` end to end: report, figures, results JSON, and a rerun that resumes.

The command runs in a subprocess, as a newcomer runs it: one CPU device (not the 8 fake devices of the other
tests, over which the tiny training batch would be split) and its own process start-up.
"""

import json
import subprocess

import numpy as np
import pytest
from cli_subprocess import run_jaxseg

from jaxseg import quickstart, quickstart_report

pytestmark = pytest.mark.slow  # 2-3 minutes on a shared 2-core CPU, mostly XLA compilation

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_quickstart(*arguments) -> subprocess.CompletedProcess:
    return run_jaxseg("quickstart", *arguments, timeout=900)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("quickstart")
    process = run_quickstart("--workdir", str(workdir), "--budget", "tiny")
    assert process.returncode == 0, process.stderr[-3000:]
    return workdir, process


def training_steps(run_dir):
    return [line["step"] for line in quickstart.read_metrics(run_dir) if "loss" in line]


def test_report_figures_and_results(first_run):
    workdir, process = first_run
    assert "clean: clean mIoU" in process.stdout and "wrote" in process.stdout
    assert "train pgd-at" in process.stderr  # the progress bars
    budget = quickstart.BUDGETS["tiny"]
    for name in ("report.md", "report.html"):
        assert (workdir / name).stat().st_size > 1000
    for filename in quickstart_report.FIGURES.values():
        content = (workdir / "figures" / filename).read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 2000
    report = (workdir / "report.md").read_text()
    assert "model mAcc (%)" in report
    for filename in quickstart_report.FIGURES.values():
        assert f"figures/{filename}" in report
    page = (workdir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(quickstart_report.FIGURES)  # self-contained

    for name, _ in quickstart.MODELS:
        results = json.loads((workdir / "eval" / name / "results.json").read_text())
        assert results["attack"] == "sea" and results["num_examples"] == budget.eval_examples
        assert [row["eps_255"] for row in results["robust"]] == pytest.approx(budget.radii)
        clean = results["clean"]
        for scores in [clean] + results["robust"]:
            assert 0.0 <= scores["aAcc"] <= 1.0 and 0.0 <= scores["mIoU"] <= 1.0 and 0.0 <= scores["mAcc"] <= 1.0
        assert results["class_weights"]["mode"] == "dataset" and len(results["class_weights"]["values"]) == 6
        unattacked = results["robust"][0]
        assert unattacked["eps"] == 0.0
        assert unattacked["aAcc"] == pytest.approx(clean["aAcc"], abs=1e-3)
        assert unattacked["mIoU"] == pytest.approx(clean["mIoU"], abs=1e-3)
        for row in results["robust"]:  # SEA is a worst case: never above the clean score
            assert row["aAcc"] <= clean["aAcc"] + 1e-6
        # Each radius is a separate attack of only a few iterations here, so larger radii are only
        # required not to be clearly weaker.
        accuracies = [row["aAcc"] for row in results["robust"]]
        assert all(later <= earlier + 0.02 for earlier, later in zip(accuracies, accuracies[1:]))
        assert training_steps(workdir / name) == list(range(1, budget.clean_steps + 1))
        with np.load(workdir / "eval" / name / "adversarial_examples.npz") as arrays:
            perturbation = np.abs(arrays["adversarial"] - arrays["images"]).max()
            assert perturbation <= float(arrays["eps"]) + 1e-6

    state = json.loads((workdir / "quickstart.json").read_text())
    assert set(state["stages"]) == set(quickstart.STAGES)
    assert all(stage["status"] == "ran" and stage["seconds"] > 0 for stage in state["stages"].values())
    for name, _ in quickstart.MODELS:
        assert state["training"][name]["steps"] == budget.clean_steps
        assert np.isfinite(state["training"][name]["final_loss"])
    for stage in quickstart.STAGES:
        assert stage in page


def test_second_run_resumes_without_retraining(first_run):
    workdir, _ = first_run
    before = json.loads((workdir / "quickstart.json").read_text())
    results_before = (workdir / "eval" / "clean" / "results.json").read_text()
    process = run_quickstart("--workdir", str(workdir), "--budget", "tiny")
    assert process.returncode == 0, process.stderr[-3000:]
    assert "clean: finished run found at step 3; not retraining" in process.stdout
    after = json.loads((workdir / "quickstart.json").read_text())
    for stage in quickstart.STAGES[:-1]:
        assert after["stages"][stage]["status"] == "cached"
        assert after["stages"][stage]["seconds"] == before["stages"][stage]["seconds"]
    for name, _ in quickstart.MODELS:
        assert training_steps(workdir / name) == list(range(1, quickstart.BUDGETS["tiny"].clean_steps + 1))
    assert (workdir / "eval" / "clean" / "results.json").read_text() == results_before
    assert after["invocation_seconds"] < 0.25 * before["invocation_seconds"]
    assert "wrote" in process.stdout


def test_a_workdir_keeps_its_budget(first_run, capsys):
    from jaxseg import cli

    workdir, _ = first_run
    assert cli.main(["quickstart", "--workdir", str(workdir), "--budget", "default"]) == 2
    assert "budget 'tiny'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown quickstart budget"):
        quickstart.get_budget("huge")
