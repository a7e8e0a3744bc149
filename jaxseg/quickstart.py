"""``jaxseg quickstart``: train, attack and explain on the built-in ``synthetic_shapes`` data, on a CPU.

One call of ``run_quickstart(workdir)`` does, within a CPU budget (``BUDGETS``):

1. ``prepare`` — writes ``synthetic_shapes`` at the budget's image size into ``workdir/data`` (or ``data_dir``);
2. ``train clean`` / ``train pgd-at`` — trains UPerNet + ConvNeXt-atto with the ``synthetic`` and
   ``synthetic:pgd-at`` configs (``jaxseg.train.loop.train``) in ``workdir/clean`` and ``workdir/pgd-at``;
3. ``evaluate clean`` / ``evaluate pgd-at`` — clean and SEA-robust aAcc/mIoU per radius on a validation subset
   (``jaxseg.evaluate.evaluate``), written to ``workdir/eval/<model>/results.{json,md}``, plus SEA adversarial
   examples of the first batch for the figure (``adversarial_examples.npz``);
4. ``generate`` / ``inpaint`` — the perceptually-aligned-gradient demos (``jaxseg.pag``) with both models,
   written to ``workdir/pag/``;
5. ``report`` — ``workdir/report.md`` and a self-contained ``workdir/report.html`` with the numbers, the
   figures in ``workdir/figures/`` and the wall time of every stage (drawn and written by
   ``jaxseg.quickstart_report``).

Every stage is resumable: a training run whose latest checkpoint is at the configured step is not retrained
(an interrupted one resumes from its checkpoint), and evaluation and PAG outputs that exist for the current
checkpoints are reused. ``workdir/quickstart.json`` records the budget and each stage's time and status.
Nothing here prints: progress goes through ``make_bar`` (e.g. ``tqdm``) and ``log`` callbacks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from jaxseg import arguments
from jaxseg.errors import Stopped
from jaxseg.progress import null_bar, training_progress
from jaxseg.validation import DEFAULT_IGNORE_INDEX

DATASET = "synthetic_shapes"
MODELS = (("clean", "synthetic"), ("pgd-at", "synthetic:pgd-at"))
STAGES = ("prepare", "train clean", "train pgd-at", "evaluate clean", "evaluate pgd-at", "generate", "inpaint",
          "report")
STATE_FILE = "quickstart.json"
TRAINING_SUMMARY_FILE = "quickstart_training.json"


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much work the quickstart does. Sizes in pixels, radii in 1/255 units (Linf, [0, 1] image scale).

    Attributes:
      name: budget name (``BUDGETS`` key).
      image_size: side of the square synthetic images (training crops and evaluation).
      num_train, num_validation: synthetic examples generated per split (the test split gets 16).
      clean_steps, adversarial_steps: training steps of the clean and the PGD-AT model.
      batch_size: training batch (global).
      train_eps: PGD-AT training radius (/255); the attack takes ``synthetic:pgd-at``'s 2 steps from delta = 0,
        each of 0.6375 * eps (the config's 0.01 at 4/255).
      eval_examples: validation images scored by SEA; eval_batch_size: images per compiled attack batch.
      sea_iterations: APGD iterations per SEA component (the paper: 300).
      radii: SEA radii (/255), 0 included as a check (it must reproduce the clean scores).
      example_radius: radius (/255) of the adversarial-example figure.
      pag_examples: images in the generation and inpainting demos.
      generate_iterations, inpaint_iterations: PAG descent steps (Santurkar et al.: 60 and 720).
      fit_images: training images the generation seeds' class Gaussians are fitted on.
      depthwise: the models' depthwise-convolution implementation ("auto": fastest per step on this backend;
        "conv": slower steps but about half the compile time, which dominates tiny runs).
    """

    name: str
    image_size: int
    num_train: int
    num_validation: int
    clean_steps: int
    adversarial_steps: int
    batch_size: int
    train_eps: float
    eval_examples: int
    eval_batch_size: int
    sea_iterations: int
    radii: tuple[float, ...]
    example_radius: float
    pag_examples: int
    generate_iterations: int
    inpaint_iterations: int
    fit_images: int
    depthwise: str = "auto"


BUDGETS = {
    "default": Budget(
        name="default", image_size=32, num_train=512, num_validation=64, clean_steps=400, adversarial_steps=400,
        batch_size=16, train_eps=4.0, eval_examples=32, eval_batch_size=16, sea_iterations=30,
        radii=(0.0, 2.0, 4.0, 8.0), example_radius=4.0, pag_examples=4, generate_iterations=60,
        inpaint_iterations=240, fit_images=256,
    ),
    "tiny": Budget(
        name="tiny", image_size=32, num_train=32, num_validation=8, clean_steps=3, adversarial_steps=3,
        batch_size=8, train_eps=4.0, eval_examples=8, eval_batch_size=8, sea_iterations=2,
        radii=(0.0, 4.0, 8.0), example_radius=8.0, pag_examples=2, generate_iterations=3, inpaint_iterations=3,
        fit_images=32, depthwise="conv",
    ),
}


class TrainingInterrupted(Stopped):
    """Training stopped early (SIGTERM); its last checkpoint is saved and a rerun resumes from it."""


def get_budget(name: str) -> Budget:
    """The named budget; ``ValueError`` for an unknown name."""
    if name not in BUDGETS:
        raise ValueError(f"unknown quickstart budget {name!r}; choose one of {sorted(BUDGETS)}")
    return BUDGETS[name]


# --- 1. data -----------------------------------------------------------------------------------------------

def dataset_options(budget: Budget) -> dict:
    """Builder options of the budget's ``synthetic_shapes`` variant."""
    return dict(image_size=budget.image_size, num_train=budget.num_train,
                num_validation=max(budget.num_validation, budget.eval_examples, budget.pag_examples), num_test=16)


def prepare_data(budget: Budget, data_dir: str | Path) -> tuple[str, bool]:
    """Write the budget's ``synthetic_shapes`` into ``data_dir`` unless it is there already.

    Returns ``(name, cached)``: the dataset name to read it by and whether it was prepared before.
    """
    from jaxseg import data
    from jaxseg.data.storage import prepared_directory

    options = dataset_options(budget)
    name = data.resolve_name(DATASET, **options)
    cached = (prepared_directory(name, str(data_dir)) / "dataset_info.json").is_file()
    data.prepare(DATASET, data_dir=str(data_dir), **options)
    return name, cached


# --- 2. training -------------------------------------------------------------------------------------------

def training_config(recipe: str, budget: Budget, dataset: str, data_dir: str | Path):
    """The ``synthetic`` config (``recipe`` = "synthetic" or "synthetic:pgd-at") resized to the budget.

    Evaluation during training is reduced to one clean pass at the end (the quickstart's own SEA evaluation
    follows); checkpoints every 50 steps let an interrupted run resume.
    """
    from jaxseg.config import load_config

    adversarial = recipe.endswith("pgd-at")
    steps = budget.adversarial_steps if adversarial else budget.clean_steps
    size = budget.image_size
    overrides = [
        f"data.name={dataset}", f"data.data_dir={data_dir}", f"data.crop_size={size}", f"data.base_size={size}",
        f"data.eval_size={size}", f"model.depthwise={budget.depthwise}", f"train.steps={steps}",
        f"train.batch_size={budget.batch_size}", f"train.warmup_steps={max(1, min(30, steps // 10))}",
        f"train.log_every={max(1, min(10, steps // 10))}", f"train.eval_every={steps}",
        f"train.checkpoint_every={min(50, steps)}", f"train.eval_examples={budget.eval_examples}",
        "train.robust_eval_iterations=0", "train.best_metric=", "train.keep_checkpoints=1",
    ]
    if adversarial:
        eps = budget.train_eps / 255
        overrides += [f"attack.eps={eps}", f"attack.step_size={0.6375 * eps}"]
    return load_config(recipe, overrides)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The JSON lines of ``run_dir/metrics.jsonl`` (training steps and evaluations; empty if missing)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _training_summary(name: str, config, run_dir: Path, seconds: float | None, status: str) -> dict:
    lines = read_metrics(run_dir)
    losses = [line for line in lines if "loss" in line]
    evaluations = [line for line in lines if "clean_mIoU" in line]
    return {
        "model": name, "recipe": config.train.recipe, "steps": int(config.train.steps),
        "batch_size": int(config.train.batch_size), "image_size": int(config.data.crop_size),
        "train_eps_255": float(config.attack.eps) * 255 if config.train.recipe != "clean" else None,
        "seconds": seconds, "status": status,
        "final_loss": losses[-1]["loss"] if losses else None,
        "final_pixel_accuracy": losses[-1].get("pixel_accuracy") if losses else None,
        "images_per_second": losses[-1].get("images_per_second") if losses else None,
        "subset_clean_mIoU": evaluations[-1]["clean_mIoU"] if evaluations else None,
    }


def train_model(name: str, config, run_dir: str | Path, make_bar: Callable = null_bar,
                log: Callable[[str], None] = lambda text: None) -> dict:
    """Train ``config`` in ``run_dir`` unless its latest checkpoint is already at ``config.train.steps``.

    An unfinished run resumes from its checkpoint (``jaxseg.train.loop.train``). Returns the summary (steps,
    seconds, final loss, ``status``: "trained", "resumed" or "cached"), also written to
    ``run_dir/quickstart_training.json``. ``ValueError`` if the run is already past the configured steps.
    """
    from jaxseg.train.checkpoints import latest_step
    from jaxseg.train.loop import train

    run_dir = Path(run_dir)
    total = int(config.train.steps)
    summary_path = run_dir / TRAINING_SUMMARY_FILE
    step = latest_step(run_dir)
    if step is not None and step > total:
        raise ValueError(f"{run_dir} holds a run at step {step}, beyond this budget's {total} steps; "
                         "use a new --workdir")
    if step == total:
        previous = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        log(f"{name}: finished run found at step {step}; not retraining")
        summary = _training_summary(name, config, run_dir, previous.get("seconds"), "cached")
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
        return summary
    if step:
        log(f"{name}: resuming from step {step} of {total}")
    bar = make_bar(f"train {name}", total, "step")
    bar.update(step or 0)

    started = time.perf_counter()
    try:
        result = train(config, run_dir, on_step=training_progress(bar))
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    if result["status"] != "completed":
        raise TrainingInterrupted(f"training {name} stopped at step {result['step']} ({result['status']}); "
                           "run the quickstart again to resume")
    summary = _training_summary(name, config, run_dir, seconds, "resumed" if step else "trained")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_trained_model(run_dir: str | Path):
    """``(logits_fn, variables, metadata)`` of the latest checkpoint in ``run_dir``; ``logits_fn`` is the
    hashable ``(variables, images) -> logits`` (equal for equal models, so compiled attacks are shared).

    The variables are placed on the first local device: the evaluation batches here are small, and variables
    restored replicated over several devices would make every attack run once per device.
    """
    import jax

    from jaxseg import attacks, checkpoint

    model, variables, metadata = checkpoint.load_model(run_dir, segmentation=True)
    return attacks.logits_function(model), jax.device_put(variables, jax.local_devices()[0]), metadata


# --- 3. evaluation -----------------------------------------------------------------------------------------

def evaluation_settings(budget: Budget, step: int) -> dict:
    """What an evaluation's results depend on; stored with them so stale results are recomputed."""
    return {"checkpoint_step": int(step), "eval_examples": budget.eval_examples, "radii_255": list(budget.radii),
            "sea_iterations": budget.sea_iterations, "image_size": budget.image_size,
            "example_radius_255": budget.example_radius, "class_weights": "dataset", "worst_case_rules": 2}


def evaluate_model(name: str, run_dir: str | Path, out_dir: str | Path, budget: Budget, dataset: str,
                   data_dir: str | Path, make_bar: Callable = null_bar,
                   log: Callable[[str], None] = lambda text: None) -> tuple[dict, bool]:
    """SEA evaluation of one trained model; returns ``(results, cached)``.

    ``results`` is ``jaxseg.evaluate.evaluate``'s dict (fractions) plus ``settings``; written with
    ``write_results`` to ``out_dir``. Also writes ``out_dir/adversarial_examples.npz``: the first evaluation batch
    (``images``, ``labels``), SEA's per-image worst adversarial images at ``budget.example_radius``
    (``adversarial``) and the model's predictions on both. Reused when ``results.json`` matches the settings.
    """
    import jax

    from jaxseg import adversarial_examples, data, evaluate
    from jaxseg.train.checkpoints import latest_step

    out_dir = Path(out_dir)
    step = latest_step(run_dir)
    if step is None:
        raise FileNotFoundError(f"no trained model in {run_dir}")
    settings = evaluation_settings(budget, step)
    results_path = out_dir / "results.json"
    if results_path.exists() and (out_dir / "adversarial_examples.npz").exists():
        results = json.loads(results_path.read_text())
        if results.get("settings") == settings:
            log(f"{name}: evaluation results for step {step} found; not re-evaluating")
            return results, True
    logits_fn, variables, _ = load_trained_model(run_dir)

    def batches():
        return data.eval_batches(dataset, "validation", data_dir=str(data_dir), batch_size=budget.eval_batch_size,
                                 protocol="standard", image_size=budget.image_size, num_examples=budget.eval_examples)

    radii = [r / 255 for r in budget.radii]
    weights = data.dataset_class_weights(dataset, str(data_dir))
    bar = make_bar(f"evaluate {name} (SEA, {len(radii)} radii)", budget.eval_examples, "img")
    try:
        results = evaluate.evaluate(logits_fn, batches(), variables=variables, attack="sea", eps=radii,
                                    iterations=budget.sea_iterations, seed=0, class_weights=weights,
                                    data_description={"dataset": dataset, "split": "validation", "protocol": "standard",
                                                      "image_size": budget.image_size},
                                    progress=bar.update)
    finally:
        bar.close()
    examples = adversarial_examples.attack_examples(
        "sea", logits_fn, batches(), eps=budget.example_radius / 255, variables=variables,
        iterations=budget.sea_iterations, class_weights=weights, key=jax.random.PRNGKey(1))
    adversarial_examples.save_examples(out_dir / "adversarial_examples.npz", examples, eps=budget.example_radius / 255)
    results.update(model=str(run_dir), settings=settings)
    evaluate.write_results(results, out_dir)  # results.json last: its presence marks a finished evaluation
    return results, False


# --- 4. perceptually aligned gradients ---------------------------------------------------------------------

def square_masks(count: int, size: int, seed: int = 0) -> np.ndarray:
    """(count, size, size) bool: one square of side 3/8 ``size`` per image at a random position."""
    side = max(1, 3 * size // 8)
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), bool)
    for index, (top, left) in enumerate(rng.integers(0, size - side + 1, (count, 2))):
        masks[index, top:top + side, left:left + side] = True
    return masks


def _pag_inputs(budget: Budget, dataset: str, data_dir):
    from jaxseg import data

    images, labels = data.load_split_arrays(dataset, "validation", data_dir=str(data_dir), protocol="standard",
                                            image_size=budget.image_size, num_examples=budget.pag_examples)
    return images, labels


def _pag_settings(budget: Budget, run_dirs: dict, kind: str) -> dict:
    """What a PAG demo's outputs depend on (``kind``: "generate" or "inpaint"), the models' checkpoint steps
    included; stored with them so stale outputs are recomputed."""
    from jaxseg.train.checkpoints import latest_step

    steps = {name: latest_step(path) for name, path in run_dirs.items()}
    settings = {"checkpoint_steps": steps, "examples": budget.pag_examples, "image_size": budget.image_size}
    if kind == "generate":
        return {**settings, "iterations": budget.generate_iterations, "fit_images": budget.fit_images}
    return {**settings, "iterations": budget.inpaint_iterations}


def _cached_pag(out_dir: Path, kind: str, settings: dict):
    numbers_path, arrays_path = out_dir / f"{kind}.json", out_dir / f"{kind}.npz"
    if numbers_path.exists() and arrays_path.exists():
        numbers = json.loads(numbers_path.read_text())
        if numbers.get("settings") == settings:
            with np.load(arrays_path) as arrays:
                return numbers, dict(arrays)
    return None


def _save_pag(out_dir: Path, kind: str, numbers: dict, arrays: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / f"{kind}.npz", **arrays)
    (out_dir / f"{kind}.json").write_text(json.dumps(numbers, indent=2) + "\n")


def generation_demo(run_dirs: dict, out_dir: str | Path, budget: Budget, dataset: str, data_dir,
                    make_bar: Callable = null_bar) -> tuple[dict, dict, bool]:
    """Class-conditional generation with each model (``jaxseg.pag.generate``): the targets are the label maps
    of the first ``budget.pag_examples`` validation images, the seeds are drawn from per-class Gaussians over
    4x4 blocks of ``budget.fit_images`` training images, L2 radius 40 rescaled from 224 px, step eps/40.

    Returns ``(numbers, arrays, cached)``: per model the fraction of target pixels its own prediction matches
    (``self_target_accuracy``) and the *other* model's (``other_target_accuracy``, a transfer check: an image
    that only fools its generator is not a good image); arrays ``targets``, ``real``, ``seeds``,
    ``generated_<model>``. Written to ``out_dir/generate.{json,npz}``, reused when the settings match.
    """
    import jax

    from jaxseg import data, evaluate
    from jaxseg.pag import generate

    out_dir = Path(out_dir)
    settings = _pag_settings(budget, run_dirs, "generate")
    cached = _cached_pag(out_dir, "generate", settings)
    if cached is not None:
        return (*cached, True)
    bar = make_bar("PAG generation", 1 + len(run_dirs), "stage")
    try:
        real, targets = _pag_inputs(budget, dataset, data_dir)
        fit_images, fit_labels = data.load_split_arrays(dataset, "train", data_dir=str(data_dir), protocol="standard",
                                                        image_size=budget.image_size, num_examples=budget.fit_images)
        num_classes = data.dataset_info(dataset).num_classes
        gaussians = generate.fit_class_gaussians(fit_images, fit_labels, num_classes)
        seeds = np.asarray(generate.make_seed("class-gaussian", jax.random.key(0), targets, gaussians=gaussians))
        bar.update()
        models = {name: load_trained_model(path)[:2] for name, path in run_dirs.items()}
        arrays = {"targets": targets, "real": real, "seeds": seeds}
        numbers: dict = {"settings": settings, "models": {}}
        for name, (logits_fn, variables) in models.items():
            made = jax.device_get(generate.generate(logits_fn, targets, seeds, iterations=budget.generate_iterations,
                                                    variables=variables))
            arrays[f"generated_{name}"] = np.asarray(made.images)
            numbers["models"][name] = {"self_target_accuracy": float(np.mean(made.target_accuracy)),
                                       "initial_loss": float(np.mean(made.loss_history[0])),
                                       "final_loss": float(np.mean(made.loss))}
            bar.update()
        for name in models:
            for other, (other_fn, other_variables) in models.items():
                if other != name:
                    prediction = np.asarray(evaluate.predict(other_fn, arrays[f"generated_{name}"],
                                                             variables=other_variables))
                    labelled = targets != DEFAULT_IGNORE_INDEX
                    numbers["models"][name]["other_target_accuracy"] = float(
                        np.mean(prediction[labelled] == targets[labelled]))
    finally:
        bar.close()
    _save_pag(out_dir, "generate", numbers, arrays)
    return numbers, arrays, False


def inpainting_demo(run_dirs: dict, out_dir: str | Path, budget: Budget, dataset: str, data_dir,
                    make_bar: Callable = null_bar) -> tuple[dict, dict, bool]:
    """Inpainting with each model (``jaxseg.pag.inpaint``, penalty mode): a random square (3/8 of the side) of
    each of the first ``budget.pag_examples`` validation images is hidden and filled toward the true label map
    (L2 radius 21.6 rescaled from 224 px, step eps/60).

    Returns ``(numbers, arrays, cached)``: per model the PSNR (dB) in the square against the true image, the
    baseline PSNR of the mean-colour fill, and the fraction of square pixels predicted as labelled; arrays
    ``images``, ``labels``, ``masks``, ``corrupted``, ``inpainted_<model>``. Written to
    ``out_dir/inpaint.{json,npz}``, reused when the settings match.
    """
    import jax

    from jaxseg import data
    from jaxseg.pag import common, inpaint

    out_dir = Path(out_dir)
    settings = _pag_settings(budget, run_dirs, "inpaint")
    cached = _cached_pag(out_dir, "inpaint", settings)
    if cached is not None:
        return (*cached, True)
    bar = make_bar("PAG inpainting", len(run_dirs), "model")
    try:
        images, labels = _pag_inputs(budget, dataset, data_dir)
        masks = square_masks(len(images), budget.image_size)
        eps = common.scaled_radius(inpaint.INPAINTING_EPS, budget.image_size, budget.image_size)
        arrays = {"images": images, "labels": labels, "masks": masks}
        numbers: dict = {"settings": settings, "eps": eps, "models": {}}
        for name, path in run_dirs.items():
            logits_fn, variables, _ = load_trained_model(path)
            filled = jax.device_get(inpaint.inpaint(logits_fn, images, masks, labels, mode="penalty", eps=eps,
                                                    step_size=eps / 60, iterations=budget.inpaint_iterations,
                                                    variables=variables))
            _, psnr = inpaint.region_error(filled.images, images, masks)
            _, baseline = inpaint.region_error(filled.corrupted, images, masks)
            region = masks & (labels != DEFAULT_IGNORE_INDEX)
            hits = np.asarray(filled.prediction)[region] == labels[region]
            arrays["corrupted"] = np.asarray(filled.corrupted)
            arrays[f"inpainted_{name}"] = np.asarray(filled.images)
            numbers["models"][name] = {"region_psnr_db": float(np.mean(psnr)),
                                       "region_label_accuracy": float(np.mean(hits))}
            numbers["mean_fill_psnr_db"] = float(np.mean(baseline))
            bar.update()
    finally:
        bar.close()
    _save_pag(out_dir, "inpaint", numbers, arrays)
    return numbers, arrays, False


# --- the whole run -----------------------------------------------------------------------------------------

def _machine() -> dict:
    import jax

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu_count": os.cpu_count(), "backend": jax.default_backend(), "devices": jax.device_count(),
            "platform": platform.platform(), "load_average_start": load}


def _load_state(path: Path, budget: Budget) -> dict:
    if not path.exists():
        return {}
    state = json.loads(path.read_text())
    if state.get("budget", {}).get("name") not in (None, budget.name):
        raise ValueError(f"{path.parent} holds a quickstart with budget {state['budget']['name']!r}; use the same "
                         f"--budget or a new --workdir")
    return state


@dataclasses.dataclass
class _RunState:
    """One invocation's state (``run_quickstart``'s result) and the ``quickstart.json`` it is written to.

    ``old_stages``: the stages of the previous invocation in this workdir; a stage reused from it keeps the
    time it took then.
    """

    state: dict
    path: Path
    old_stages: dict

    def record(self, stage: str, seconds: float, cached: bool) -> None:
        """Record ``stage``'s wall time (seconds) and whether it was reused, and write the state."""
        if cached and stage in self.old_stages:
            seconds = self.old_stages[stage]["seconds"]
        self.state["stages"][stage] = {"seconds": seconds, "status": "cached" if cached else "ran"}
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.state, indent=2) + "\n")


def _timed(function, *args):
    """``(function(*args), wall seconds it took)``."""
    clock = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - clock


def _use_compilation_cache(workdir: Path) -> None:
    """Keep XLA compilations in ``workdir/.jax_cache`` (those over 1 s) unless ``JAX_COMPILATION_CACHE_DIR`` is
    set."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        import jax

        jax.config.update("jax_compilation_cache_dir", str(workdir / ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _start(workdir: Path, budget: Budget, data_dir: Path) -> _RunState:
    """A fresh state for this invocation; ``ValueError`` if ``workdir`` holds a quickstart of another budget."""
    workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / STATE_FILE
    previous = _load_state(state_path, budget)
    state = {"budget": dataclasses.asdict(budget), "machine": _machine(), "data_dir": str(data_dir), "stages": {}}
    return _RunState(state, state_path, previous.get("stages", {}))


def _train_models(run: _RunState, run_dirs: dict, budget: Budget, dataset: str, data_dir: Path, make_bar,
                  log) -> None:
    """The ``train <model>`` stages: ``train_model`` for every ``MODELS`` entry, summaries in ``training``."""
    run.state["training"] = {}
    for name, recipe in MODELS:
        config = training_config(recipe, budget, dataset, data_dir)
        summary, seconds = _timed(train_model, name, config, run_dirs[name], make_bar, log)
        run.state["training"][name] = summary
        run.record(f"train {name}", summary["seconds"] if summary["seconds"] is not None else seconds,
                   summary["status"] == "cached")


def _evaluate_models(run: _RunState, run_dirs: dict, workdir: Path, budget: Budget, dataset: str, data_dir: Path,
                     make_bar, log) -> None:
    """The ``evaluate <model>`` stages: ``evaluate_model`` for every model, the scores in ``results``."""
    run.state["results"] = {}
    for name, _ in MODELS:
        (results, cached), seconds = _timed(evaluate_model, name, run_dirs[name], workdir / "eval" / name, budget,
                                            dataset, data_dir, make_bar, log)
        run.state["results"][name] = {k: results[k] for k in ("clean", "robust", "num_examples", "iterations",
                                                              "attack")}
        run.record(f"evaluate {name}", seconds, cached)


def _pag_demos(run: _RunState, run_dirs: dict, workdir: Path, budget: Budget, dataset: str, data_dir: Path,
               make_bar) -> tuple[dict, dict]:
    """The ``generate`` and ``inpaint`` stages (numbers in ``pag``); returns the two demos' arrays."""
    pag_dir = workdir / "pag"
    (generation, generated, cached), seconds = _timed(generation_demo, run_dirs, pag_dir, budget, dataset,
                                                      data_dir, make_bar)
    run.record("generate", seconds, cached)
    (inpainting, inpainted, cached), seconds = _timed(inpainting_demo, run_dirs, pag_dir, budget, dataset,
                                                      data_dir, make_bar)
    run.record("inpaint", seconds, cached)
    run.state["pag"] = {"generate": generation, "inpaint": inpainting}
    return generated, inpainted


def _report(run: _RunState, workdir: Path, dataset: str, generated: dict, inpainted: dict, started: float) -> None:
    """The ``report`` stage: the figures, then ``report.md``/``report.html`` with the totals (``started``: the
    invocation's ``time.perf_counter()`` at its start)."""
    from jaxseg import data
    from jaxseg.quickstart_report import write_figures, write_report

    clock = time.perf_counter()
    examples = {}
    for name, _ in MODELS:
        with np.load(workdir / "eval" / name / "adversarial_examples.npz") as arrays:
            examples[name] = dict(arrays)
    write_figures(workdir / "figures", run.state["results"], examples, generated, inpainted,
                  data.dataset_info(dataset).palette)
    # The report's own time is known only after it is written; record the time so far, then rewrite it.
    run.record("report", time.perf_counter() - clock, False)
    for _ in range(2):
        run.state["total_seconds"] = sum(stage["seconds"] for stage in run.state["stages"].values())
        run.state["invocation_seconds"] = time.perf_counter() - started
        run.state["report"] = [str(p) for p in write_report(run.state, workdir)]
        run.record("report", time.perf_counter() - clock, False)


def run_quickstart(workdir: str | Path, *, budget: str | Budget = "default", data_dir: str | Path | None = None,
                   make_bar: Callable | None = None, log: Callable[[str], None] | None = None,
                   compilation_cache: bool = True) -> dict:
    """Run (or resume) the whole quickstart in ``workdir``; returns the state written to ``quickstart.json``.

    Args:
      workdir: output directory (created). Layout: ``data/`` (unless ``data_dir``), ``clean/`` and ``pgd-at/``
        (training runs), ``eval/<model>/``, ``pag/``, ``figures/``, ``report.md``, ``report.html``,
        ``quickstart.json``.
      budget: a ``BUDGETS`` name or a ``Budget``. A workdir keeps the budget it was started with.
      data_dir: where ``synthetic_shapes`` is prepared (default ``workdir/data``).
      make_bar: ``make_bar(description, total, unit)`` → object with ``update(n)``, ``set_postfix(dict)``,
        ``close()`` (e.g. ``tqdm``); log: called with one-line status messages.
      compilation_cache: keep XLA compilations in ``workdir/.jax_cache`` (unless ``JAX_COMPILATION_CACHE_DIR``
        is set), so that a rerun after an interruption skips the minutes of compilation it already paid for.
    Returns: ``{"budget", "machine", "stages": {stage: {"seconds", "status"}}, "training", "results", "pag",
      "total_seconds", "invocation_seconds", "report": [md, html]}``; ``status`` is "ran" or "cached".
    """
    started = time.perf_counter()
    budget = get_budget(budget) if isinstance(budget, str) else budget
    make_bar = make_bar or null_bar
    log = log or (lambda text: None)
    arguments.check_output_dir(workdir, "--workdir")  # also refuses a file in the way
    workdir = Path(workdir).expanduser().resolve()
    if compilation_cache:
        _use_compilation_cache(workdir)
    data_dir = Path(data_dir).expanduser().resolve() if data_dir else workdir / "data"
    run = _start(workdir, budget, data_dir)

    (dataset, cached), seconds = _timed(prepare_data, budget, data_dir)
    run.record("prepare", seconds, cached)
    run_dirs = {name: workdir / name for name, _ in MODELS}
    _train_models(run, run_dirs, budget, dataset, data_dir, make_bar, log)
    _evaluate_models(run, run_dirs, workdir, budget, dataset, data_dir, make_bar, log)
    generated, inpainted = _pag_demos(run, run_dirs, workdir, budget, dataset, data_dir, make_bar)
    _report(run, workdir, dataset, generated, inpainted, started)
    run.state["machine"]["load_average_end"] = _machine()["load_average_start"]
    run.save()
    return run.state


def run_quickstart_command(workdir: str | Path, *, budget: str = "default", data_dir: str | Path | None = None,
                           compilation_cache: bool = True, make_bar: Callable | None = None,
                           log: Callable[[str], None] | None = None) -> str:
    """``jaxseg quickstart``: ``run_quickstart`` and its ``summary_text`` (``jaxseg.quickstart_report``)."""
    from jaxseg.quickstart_report import summary_text

    return summary_text(run_quickstart(workdir, budget=budget, data_dir=data_dir, make_bar=make_bar, log=log,
                                       compilation_cache=compilation_cache))
