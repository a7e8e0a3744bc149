"""jaxseg installed from its wheel, as a library user gets it: configs and other package data travel with it.

The wheel is built from a copy of the sources (nothing is written into the checkout) and installed without
dependencies into a fresh virtual environment in tmp_path. That environment reuses this one's dependencies
through a ``.pth`` file naming this environment's site-packages: a path line of a ``.pth`` is only added to
``sys.path`` (the ``.pth`` files inside it are not processed), so the editable install's import finder, set
up by a ``.pth`` there, stays out, and ``jaxseg`` can only come from the wheel. Every command then runs from a
directory outside the repository: ``jaxseg --version``, ``jaxseg config NAME`` for every shipped config, and
the smallest end-to-end use (prepare the 32 px synthetic data, train ``synthetic:quick`` for one step).
"""

import json
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # about a minute on a shared 2-core CPU, mostly the one training step's compilation

REPO = Path(__file__).resolve().parent.parent
SOURCE_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md")
SOURCE_FOLDERS = ("jaxseg", "configs")

# Run by the new environment's interpreter: where jaxseg and its data come from.
PROBE = """
import importlib.metadata, json, sys
import jaxseg, jaxseg.configs
from jaxseg.config import available_configs
from jaxseg.data.loss_weights import published_class_weights
print(json.dumps({
    "jaxseg": jaxseg.__file__,
    "configs": jaxseg.configs.__file__,
    "names": available_configs(),
    "version": jaxseg.__version__,
    "metadata_version": importlib.metadata.version("jaxseg"),
    "voc_weights": len(published_class_weights("voc2012_seg")),
    "meta_path": [getattr(f, "__name__", type(f).__name__) for f in sys.meta_path],
    "modules": [m for m in sys.modules if "editable" in m],
}))
"""


def repository_version() -> str:
    text = (REPO / "jaxseg" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE).group(1)


def repository_configs() -> list[str]:
    return sorted(p.stem for p in (REPO / "configs").glob("*.py") if not p.stem.startswith("_"))


def copy_source(destination: Path) -> Path:
    """What building the wheel reads, copied so the build writes nothing (build/, *.egg-info) into the checkout."""
    destination.mkdir()
    for name in SOURCE_FILES:
        if (REPO / name).exists():
            shutil.copy2(REPO / name, destination / name)
    for name in SOURCE_FOLDERS:
        shutil.copytree(REPO / name, destination / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return destination


def run(command, *, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    process = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                             timeout=timeout)
    assert process.returncode == 0, f"{command} failed:\n{process.stdout[-2000:]}\n{process.stderr[-3000:]}"
    return process


def build_wheel(tmp_path: Path) -> Path:
    source = copy_source(tmp_path / "source")
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels,
         source], cwd=tmp_path)
    (wheel,) = wheels.glob("jaxseg-*.whl")
    return wheel


def fresh_environment(tmp_path: Path, wheel: Path) -> Path:
    """A new venv with only the wheel installed in it, reusing this environment's dependencies."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    # Installed before the dependencies are visible, so pip sees no other jaxseg (such as the editable one).
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], cwd=tmp_path)
    (new_site,) = (venv / "lib").glob("python*/site-packages")
    ours = [p for p in site.getsitepackages() if os.path.isdir(p)]
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        ours.append(site.getusersitepackages())
    (new_site / "_jaxseg_test_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    return venv


def test_wheel_ships_configs_and_data_and_runs_outside_the_repository(tmp_path):
    wheel = build_wheel(tmp_path)
    version = repository_version()
    assert wheel.name.startswith(f"jaxseg-{version}-")
    names = repository_configs()
    assert names, "no configs/*.py in the repository"
    with zipfile.ZipFile(wheel) as archive:
        content = set(archive.namelist())
    expected = {"jaxseg/configs/__init__.py", "jaxseg/data/tables/sea_class_weights.json"}
    expected |= {f"jaxseg/configs/{name}.py" for name in names}
    assert expected <= content, f"missing from the wheel: {sorted(expected - content)}"
    assert not any(n.startswith("configs/") for n in content)  # inside the package, not a top-level package

    venv = fresh_environment(tmp_path, wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert REPO not in elsewhere.resolve().parents
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    # One CPU device, as a user has (the test session's 8 fake devices would split the tiny batch).
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if not f.startswith("--xla_force_host_platform_device_count"))
    env.setdefault("JAX_PLATFORMS", "cpu")

    probe = json.loads(run([venv / "bin" / "python", "-c", PROBE], cwd=elsewhere, env=env).stdout)
    installed = venv.resolve()
    for key in ("jaxseg", "configs"):
        assert installed in Path(probe[key]).resolve().parents, f"{key} imported from {probe[key]}, not the wheel"
    assert "_EditableFinder" not in probe["meta_path"] and not probe["modules"]
    assert probe["names"] == names
    assert probe["version"] == probe["metadata_version"] == version
    assert probe["voc_weights"] == 21

    jaxseg = venv / "bin" / "jaxseg"
    assert run([jaxseg, "--version"], cwd=elsewhere, env=env).stdout.strip() == f"jaxseg {version}"
    for name in names:
        config = json.loads(run([jaxseg, "config", name], cwd=elsewhere, env=env).stdout)
        assert {"model", "data", "train", "attack"} <= set(config), name
    assert json.loads(run([jaxseg, "config", "synthetic:quick", "--config.train.steps=3"], cwd=elsewhere,
                          env=env).stdout)["train"]["steps"] == 3

    data_dir = elsewhere / "data"
    run([jaxseg, "data", "prepare", "synthetic_shapes", "--image-size", "32", "--data-dir", data_dir],
        cwd=elsewhere, env=env)
    run([jaxseg, "train", "synthetic:quick", "--workdir", "run", f"--config.data.data_dir={data_dir}",
         "--config.train.steps=1", "--config.train.checkpoint_every=1", "--config.train.eval_every=100",
         "--config.model.depthwise=conv"], cwd=elsewhere, env=env)
    metrics = [json.loads(line) for line in (elsewhere / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1]
    assert json.loads((elsewhere / "run" / "config.json").read_text())["data"]["name"] == "synthetic_shapes/32px"
