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
   figures in ``workdir/figures/`` and the wall time of every stage.

Every stage is resumable: a training run whose latest checkpoint is at the configured step is not retrained
(an interrupted one resumes from its checkpoint), and evaluation and PAG outputs that exist for the current
checkpoints are reused. ``workdir/quickstart.json`` records the budget and each stage's time and status.
Nothing here prints: progress goes through ``make_bar`` (e.g. ``tqdm``) and ``log`` callbacks.
"""

from __future__ import annotations

import base64
import dataclasses
import html
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

DATASET = "synthetic_shapes"
MODELS = (("clean", "synthetic"), ("pgd-at", "synthetic:pgd-at"))
MODEL_TITLES = {"clean": "clean", "pgd-at": "PGD-AT"}
STAGES = ("prepare", "train clean", "train pgd-at", "evaluate clean", "evaluate pgd-at", "generate", "inpaint",
          "report")
STATE_FILE = "quickstart.json"
TRAINING_SUMMARY_FILE = "quickstart_training.json"
FIGURES = {
    "robustness": "robustness_curve.png",
    "adversarial": "adversarial_examples.png",
    "generation": "pag_generation.png",
    "inpainting": "pag_inpainting.png",
}


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

    from jaxseg import attacks
    from jaxseg.models import create_model
    from jaxseg.train.checkpoints import load_training_variables

    variables, metadata = load_training_variables(run_dir)
    variables = jax.device_put(variables, jax.local_devices()[0])
    model = create_model(metadata["model"], int(metadata["num_classes"]), **metadata["options"])
    return attacks.logits_function(model), variables, metadata


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
                    labelled = targets != data.IGNORE_INDEX
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
            region = masks & (labels != data.IGNORE_INDEX)
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


# --- 5. figures and report ---------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _palette(dataset: str) -> np.ndarray:
    from jaxseg import data

    return data.dataset_info(dataset).palette


def _colour(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    from jaxseg import data

    return data.colorize(labels, palette)


def robustness_figure(results: dict, path: str | Path) -> Path:
    """aAcc and mIoU (%) against the SEA radius (/255) for every model in ``results`` (name → evaluate dict)."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for axis, metric in zip(axes, ("aAcc", "mIoU")):
        for name, result in results.items():
            radii = [row["eps_255"] for row in result["robust"]]
            values = [100 * row[metric] for row in result["robust"]]
            axis.plot(radii, values, marker="o", label=MODEL_TITLES.get(name, name))
        axis.set_xlabel("SEA radius eps (Linf, x/255)")
        axis.set_ylabel(f"robust {metric} (%)")
        axis.set_title(f"{metric} under SEA")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def adversarial_figure(examples: dict, palette: np.ndarray, path: str | Path, count: int = 3) -> Path:
    """Rows: (model, image); columns: image, amplified perturbation, clean prediction, attacked prediction,
    ground truth. ``examples``: model name → the arrays of ``adversarial_examples.npz``."""
    plt = _pyplot()
    rows = [(name, index) for name, arrays in examples.items() for index in range(min(count, len(arrays["images"])))]
    titles = ("image", "perturbation (amplified)", "clean prediction", "attacked prediction", "ground truth")
    figure, axes = plt.subplots(len(rows), 5, figsize=(8.5, 1.75 * len(rows)), squeeze=False)
    for row, (name, index) in enumerate(rows):
        arrays = examples[name]
        eps = float(arrays["eps"])
        delta = arrays["adversarial"][index] - arrays["images"][index]
        panels = (arrays["images"][index], np.clip(0.5 + delta / (2 * max(eps, 1e-12)), 0, 1),
                  _colour(arrays["clean_prediction"][index], palette),
                  _colour(arrays["adversarial_prediction"][index], palette), _colour(arrays["labels"][index], palette))
        for column, panel in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(panel, interpolation="nearest")
            axis.set_xticks([]), axis.set_yticks([])
            if row == 0:
                axis.set_title(titles[column], fontsize=8)
        axes[row, 0].set_ylabel(f"{MODEL_TITLES.get(name, name)} #{index}", fontsize=8)
    eps_255 = 255 * float(next(iter(examples.values()))["eps"])
    figure.suptitle(f"SEA adversarial examples at eps = {eps_255:g}/255 (perturbation scaled to [0, 1])", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def _image_grid(path, title: str, rows: list[tuple[str, np.ndarray]]) -> Path:
    plt = _pyplot()
    count = len(rows[0][1])
    figure, axes = plt.subplots(len(rows), count, figsize=(1.6 * count + 0.8, 1.6 * len(rows)), squeeze=False)
    for row, (label, panels) in enumerate(rows):
        for column in range(count):
            axis = axes[row, column]
            axis.imshow(np.clip(panels[column], 0, 255 if panels[column].dtype == np.uint8 else 1),
                        interpolation="nearest")
            axis.set_xticks([]), axis.set_yticks([])
        axes[row, 0].set_ylabel(label, fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def generation_figure(arrays: dict, palette: np.ndarray, path: str | Path) -> Path:
    """Rows: target label map, the real image with that map, the seed, then each model's generation."""
    models = [k.removeprefix("generated_") for k in arrays if k.startswith("generated_")]
    rows = [("target map", _colour(arrays["targets"], palette)), ("real image", arrays["real"]),
            ("seed", arrays["seeds"])]
    rows += [(MODEL_TITLES.get(name, name), arrays[f"generated_{name}"]) for name in models]
    return _image_grid(path, "Generation toward a target label map (class-Gaussian seed)", rows)


def inpainting_figure(arrays: dict, palette: np.ndarray, path: str | Path) -> Path:
    """Rows: true image, its label map, the corrupted input, then each model's inpainting."""
    models = [k.removeprefix("inpainted_") for k in arrays if k.startswith("inpainted_")]
    rows = [("true image", arrays["images"]), ("label map", _colour(arrays["labels"], palette)),
            ("corrupted", arrays["corrupted"])]
    rows += [(MODEL_TITLES.get(name, name), arrays[f"inpainted_{name}"]) for name in models]
    return _image_grid(path, "Inpainting of the square toward the label map (penalty mode)", rows)


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _seconds(value) -> str:
    if value is None:
        return "–"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def _load(machine: dict) -> str:
    load = machine.get("load_average_start")
    return "unknown" if load is None else ", ".join(f"{x:.2f}" for x in load)


def results_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings, %) of clean/robust aAcc, mIoU and mAcc per radius for every model."""
    names = list(results)
    columns = ("aAcc", "mIoU", "mAcc")
    header = ["SEA radius"] + [f"{MODEL_TITLES.get(n, n)} model {m} (%)" for n in names for m in columns]
    rows = [["clean images"] + [_percent(results[n]["clean"][m]) for n in names for m in columns]]
    for index, row in enumerate(results[names[0]]["robust"]):
        rows.append([f"{row['eps_255']:g}/255"]
                    + [_percent(results[n]["robust"][index][m]) for n in names for m in columns])
    return header, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _report_sections(state: dict) -> list[tuple[str, str, object]]:
    """The report as a list of (kind, title, content) blocks shared by the Markdown and HTML writers:
    kind "p" (paragraph text), "table" ((header, rows)), "figure" (file name in figures/), "h" (heading)."""
    budget = state["budget"]
    training, results, pag = state["training"], state["results"], state["pag"]
    radii = ", ".join(f"{r:g}/255" for r in budget["radii"])
    blocks: list[tuple[str, str, object]] = [
        ("p", "", "This report was written by `jaxseg quickstart`. It trained two UPerNet + ConvNeXt-atto "
         f"segmentation models on the built-in synthetic_shapes data ({budget['image_size']}x{budget['image_size']} "
         f"px, {budget['num_train']} training images, 6 classes): a clean model and an adversarially trained one "
         f"(PGD-AT, Linf eps {budget['train_eps']:g}/255, 2 attack steps). It then attacked both with SEA, the "
         "segmentation ensemble attack (three APGD runs with different losses, worst case per image), and used "
         "the models' input gradients to generate and inpaint images (perceptually aligned gradients). Budget "
         f"'{budget['name']}': a CPU-sized run, so the models are small and weak; read the numbers as a "
         "comparison between the two models."),
        ("h", "Training", None),
        ("table", "", (["model", "recipe", "steps", "batch", "time", "final loss", "final batch pixel acc. (%)"],
                       [[MODEL_TITLES.get(n, n), s["recipe"] + (f" {s['train_eps_255']:g}/255" if s["train_eps_255"]
                                                               else ""),
                         str(s["steps"]), str(s["batch_size"]), _seconds(s["seconds"]),
                         "–" if s["final_loss"] is None else f"{s['final_loss']:.3f}",
                         _percent(s["final_pixel_accuracy"])] for n, s in training.items()])),
        ("h", "Robustness under SEA", None),
        ("p", "", f"Clean and robust pooled pixel accuracy (aAcc), mean IoU (mIoU) and mean class accuracy (mAcc) "
         f"on the first {budget['eval_examples']} validation images; SEA with {budget['sea_iterations']} iterations "
         f"per component at Linf radii {radii}, mask-ce-bal weighted by the training split's inverse class "
         "frequencies, worst-case mIoU by the SEA reference code's search. The 0/255 row attacks with an empty "
         "budget and must equal the clean row. JSON: eval/<model>/results.json (also jaxseg's stronger greedy "
         "worst-case mIoU and the per-image aAcc)."),
        ("table", "", results_table(results)),
        ("figure", "Robust aAcc and mIoU against the radius", FIGURES["robustness"]),
        ("figure", f"SEA adversarial examples at {budget['example_radius']:g}/255", FIGURES["adversarial"]),
    ]
    generation, inpainting = pag["generate"], pag["inpaint"]
    blocks += [
        ("h", "Perceptually aligned gradients", None),
        ("p", "", "Generation: each model's gradients turn a seed (sampled from per-class colour statistics) into "
         "an image that the model segments as a target label map (L2 projected descent, "
         f"{budget['generate_iterations']} steps). Target-pixel accuracy under the generating model and under the "
         "other model (an image that only fools its own generator does not transfer). Inpainting: a hidden "
         f"square is filled toward the true label map ({budget['inpaint_iterations']} steps); PSNR in the square "
         f"against the true image (mean-colour fill: {inpainting['mean_fill_psnr_db']:.2f} dB)."),
        ("table", "", (["model", "generation: own model target acc. (%)", "generation: other model target acc. (%)",
                        "inpainting PSNR in the square (dB)", "inpainting: square pixels predicted as labelled (%)"],
                       [[MODEL_TITLES.get(n, n), _percent(generation["models"][n]["self_target_accuracy"]),
                         _percent(generation["models"][n].get("other_target_accuracy")),
                         f"{inpainting['models'][n]['region_psnr_db']:.2f}",
                         _percent(inpainting["models"][n]["region_label_accuracy"])] for n in training])),
        ("figure", "Generation", FIGURES["generation"]),
        ("figure", "Inpainting", FIGURES["inpainting"]),
        ("h", "Wall time", None),
        ("p", "", f"Measured on {state['machine']['cpu_count']} CPU core(s), JAX backend "
         f"{state['machine']['backend']}, load average (1, 5, 15 min) {_load(state['machine'])} at the start "
         "(a load above the core count means other processes shared the CPUs). "
         "Stages reused from an earlier invocation show the time they took then. Compilation (XLA) is a large "
         "share of every stage at this size."),
        ("table", "", (["stage", "time", "this invocation"],
                       [[stage, _seconds(state["stages"][stage]["seconds"]), state["stages"][stage]["status"]]
                        for stage in STAGES if stage in state["stages"]]
                       + [["total of the stages", _seconds(state["total_seconds"]), ""],
                          ["this invocation", _seconds(state["invocation_seconds"]), ""]])),
    ]
    return blocks


def write_report(state: dict, workdir: str | Path) -> tuple[Path, Path]:
    """``workdir/report.md`` (figures linked from ``figures/``) and ``workdir/report.html`` (figures embedded as
    base64 PNGs, so the file stands alone)."""
    workdir = Path(workdir)
    markdown, body = ["# jaxseg quickstart report", ""], []
    for kind, title, content in _report_sections(state):
        if kind == "h":
            markdown += [f"## {title}", ""]
            body.append(f"<h2>{html.escape(title)}</h2>")
        elif kind == "p":
            markdown += [content, ""]
            body.append(f"<p>{html.escape(content).replace('`', '')}</p>")
        elif kind == "table":
            markdown += [_markdown_table(*content), ""]
            body.append(_html_table(*content))
        elif kind == "figure":
            markdown += [f"![{title}](figures/{content})", ""]
            encoded = base64.b64encode((workdir / "figures" / content).read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{encoded}">'
                        f"<figcaption>{html.escape(title)}</figcaption></figure>")
    md_path, html_path = workdir / "report.md", workdir / "report.html"
    md_path.write_text("\n".join(markdown), encoding="utf-8")
    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto;line-height:1.45;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
             "img{max-width:100%}figcaption{font-size:0.9em;color:#555}")
    html_path.write_text(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>jaxseg quickstart report</title>"
        f"<style>{style}</style></head><body><h1>jaxseg quickstart report</h1>\n" + "\n".join(body)
        + "\n</body></html>\n", encoding="utf-8")
    return md_path, html_path


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
    if compilation_cache and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        import jax

        jax.config.update("jax_compilation_cache_dir", str(workdir / ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / STATE_FILE
    previous = _load_state(state_path, budget)
    data_dir = Path(data_dir).expanduser().resolve() if data_dir else workdir / "data"
    state = {"budget": dataclasses.asdict(budget), "machine": _machine(), "data_dir": str(data_dir), "stages": {}}
    old_stages = previous.get("stages", {})

    def record(stage: str, seconds: float, cached: bool) -> None:
        if cached and stage in old_stages:
            seconds = old_stages[stage]["seconds"]
        state["stages"][stage] = {"seconds": seconds, "status": "cached" if cached else "ran"}
        state_path.write_text(json.dumps(state, indent=2) + "\n")

    def timed(function, *args):
        clock = time.perf_counter()
        value = function(*args)
        return value, time.perf_counter() - clock

    (dataset, cached), seconds = timed(prepare_data, budget, data_dir)
    record("prepare", seconds, cached)

    run_dirs = {name: workdir / name for name, _ in MODELS}
    state["training"] = {}
    for name, recipe in MODELS:
        config = training_config(recipe, budget, dataset, data_dir)
        summary, seconds = timed(train_model, name, config, run_dirs[name], make_bar, log)
        state["training"][name] = summary
        record(f"train {name}", summary["seconds"] if summary["seconds"] is not None else seconds,
               summary["status"] == "cached")

    state["results"] = {}
    for name, _ in MODELS:
        (results, cached), seconds = timed(evaluate_model, name, run_dirs[name],
                                           workdir / "eval" / name, budget, dataset, data_dir, make_bar, log)
        state["results"][name] = {k: results[k] for k in ("clean", "robust", "num_examples", "iterations", "attack")}
        record(f"evaluate {name}", seconds, cached)

    pag_dir = workdir / "pag"
    (generation, generated, cached), seconds = timed(generation_demo, run_dirs, pag_dir, budget, dataset,
                                                     data_dir, make_bar)
    record("generate", seconds, cached)
    (inpainting, inpainted, cached), seconds = timed(inpainting_demo, run_dirs, pag_dir, budget, dataset,
                                                     data_dir, make_bar)
    record("inpaint", seconds, cached)
    state["pag"] = {"generate": generation, "inpaint": inpainting}

    clock = time.perf_counter()
    figures = workdir / "figures"
    figures.mkdir(exist_ok=True)
    palette = _palette(dataset)
    robustness_figure(state["results"], figures / FIGURES["robustness"])
    examples = {}
    for name, _ in MODELS:
        with np.load(workdir / "eval" / name / "adversarial_examples.npz") as arrays:
            examples[name] = dict(arrays)
    adversarial_figure(examples, palette, figures / FIGURES["adversarial"])
    generation_figure(generated, palette, figures / FIGURES["generation"])
    inpainting_figure(inpainted, palette, figures / FIGURES["inpainting"])
    # The report's own time is known only after it is written; record the time so far, then rewrite it.
    record("report", time.perf_counter() - clock, False)
    for _ in range(2):
        state["total_seconds"] = sum(stage["seconds"] for stage in state["stages"].values())
        state["invocation_seconds"] = time.perf_counter() - started
        state["report"] = [str(p) for p in write_report(state, workdir)]
        record("report", time.perf_counter() - clock, False)
    state["machine"]["load_average_end"] = _machine()["load_average_start"]
    state_path.write_text(json.dumps(state, indent=2) + "\n")
    return state


def run_quickstart_command(workdir: str | Path, *, budget: str = "default", data_dir: str | Path | None = None,
                           compilation_cache: bool = True, make_bar: Callable | None = None,
                           log: Callable[[str], None] | None = None) -> str:
    """``jaxseg quickstart``: ``run_quickstart`` and its ``summary_text``."""
    return summary_text(run_quickstart(workdir, budget=budget, data_dir=data_dir, make_bar=make_bar, log=log,
                                       compilation_cache=compilation_cache))


def summary_text(state: dict) -> str:
    """``run_quickstart``'s result in a few lines: clean and SEA robust mIoU per model, times, report paths."""
    lines = []
    for name, results in state["results"].items():
        rows = ", ".join(f"{row['eps_255']:g}/255: {100 * row['mIoU']:.1f}" for row in results["robust"])
        lines.append(f"{name}: clean mIoU {100 * results['clean']['mIoU']:.1f}%; SEA robust mIoU (%) {rows}")
    lines.append(f"stages took {state['total_seconds']:.0f} s in total; this invocation "
                 f"{state['invocation_seconds']:.0f} s")
    lines.append(f"wrote {state['report'][0]} and {state['report'][1]}")
    return "\n".join(lines)
