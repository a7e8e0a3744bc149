"""Perceptually aligned gradients on synthetic_shapes: a clean model vs PGD-AT models at several radii.

Question: do adversarially trained segmentation models have gradients that are more useful as image priors
and explanations than a clean model's, and does a low training radius already help? (Methods and papers:
docs/algorithms.md#perceptually-aligned-gradients.)

Procedure, all on CPU at 32x32 pixels:
1. Train with ``jaxseg.train.loop.train`` on ``jaxseg.config.load_config("synthetic[:pgd-at]", overrides)``:
   a clean model, PGD-AT models at Linf radii ``--radii`` (/255; training step 0.6375 eps, i.e. the default
   recipe's 0.01 at 4/255, 2 steps), and an independent clean "judge" (another seed) that scores generations.
2. For every studied model, on the first ``--eval-examples`` validation images:
   - clean and APGD-CE (Linf 4/255) mIoU, to show what each model's robustness is;
   - inpainting (penalty and hard mode) of a random 12x12 square per image toward the true label map, scored
     by MSE / PSNR in the square against the true image (baseline: the mean fill);
   - generation toward other images' label maps from class-Gaussian seeds (fitted on training images), scored
     by the judge's mIoU on the generated images against the target maps (baseline: the seeds themselves);
   - localisation: saliency = |∇ (sum of the class-c logit over the image)|, c = the class of the image's
     largest object; box around the largest saliency component vs the box of that object (IoU >= 0.5) and
     the pointing game against the class-c mask;
   - gradient alignment: cosine between the descent direction -∇CE at x + n (n ~ N(0, 0.1²)) and the
     denoising direction -n;
   - ROAR / KAR (q = 0.1 .. 0.9) of the saliency |∇ CE(labels)| with ``interpret.simple_trainer`` retraining.
Writes ``results.json``, ``results.md`` and figures into ``--workdir``; ``docs/pag_study.md`` reports them.
Usage: ``python experiments/pag_study.py --workdir runs/pag_study [--figures docs/figures]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxseg import data as datasets
from jaxseg import metrics
from jaxseg.attacks import ModelLogits, apgd
from jaxseg.checkpoint import load_model
from jaxseg.config import load_config
from jaxseg.pag import common, generate, inpaint, interpret, localize, saliency
from jaxseg.train.loop import train

NUM_CLASSES = 6


def train_model(name: str, recipe: str, eps: float | None, seed: int, args, dataset: str, data_dir: str, workdir: Path) -> dict:
    """Train (or resume/reuse) one model in ``workdir/name``; returns the training summary and time."""
    overrides = [
        f"data.name={dataset}", f"data.data_dir={data_dir}", f"data.crop_size={args.image_size}",
        f"data.base_size={args.image_size}", f"data.eval_size={args.image_size}", f"seed={seed}",
        f"train.steps={args.train_steps}", f"train.eval_every={args.train_steps}",
        f"train.checkpoint_every={args.train_steps}", "train.eval_examples=32", "train.robust_eval_iterations=5",
        f"train.log_every={max(args.train_steps // 10, 1)}",
    ]
    if eps is not None:
        overrides += [f"attack.eps={eps}", f"attack.step_size={eps * 255 / 400}"]
    config = load_config(recipe, overrides)
    bar = tqdm(total=args.train_steps, desc=f"train {name}", unit="step")

    def on_step(step, values):
        bar.update(step - bar.n)
        bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k in ("loss", "clean_mIoU", "robust_mIoU")})

    started = time.perf_counter()
    summary = train(config, workdir / name, on_step=on_step)
    bar.close()
    return {**summary, "seconds": time.perf_counter() - started}


def random_squares(rng: np.random.Generator, count: int, size: int, side: int) -> np.ndarray:
    """(count, size, size) bool masks, one side x side square at a random position each."""
    masks = np.zeros((count, size, size), bool)
    for index, (top, left) in enumerate(rng.integers(0, size - side + 1, (count, 2))):
        masks[index, top:top + side, left:left + side] = True
    return masks


def largest_object(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the class c of its largest connected foreground component and that component's mask."""
    classes = np.zeros(len(labels), np.int32)
    masks = np.zeros(labels.shape, bool)
    for index, label in enumerate(labels):
        best = 0
        for c in range(1, NUM_CLASSES):
            component = localize.largest_component(label == c)
            if component.sum() > best:
                best, classes[index], masks[index] = int(component.sum()), c, component
    return classes, masks


def miou(prediction, labels) -> float:
    confusion = metrics.confusion_matrix(jnp.asarray(prediction), jnp.asarray(labels), NUM_CLASSES)
    return float(metrics.scores_from_confusion(confusion)["mIoU"])


def saliency_of(logits_fn, variables, images, labels, batch: int = 64) -> np.ndarray:
    """(N, H, W) saliency maps |∇ CE(labels)| for ROAR/KAR, in batches."""
    parts = []
    for start in range(0, len(images), batch):
        values = saliency.attribute(logits_fn, images[start:start + batch], objective="ce",
                                    labels=labels[start:start + batch], variables=variables).values
        parts.append(saliency.saliency_map(values))
    return np.concatenate(parts)


def study_model(workdir: Path, judge, eval_set, fit_set, retrain, random_curves: dict, args) -> tuple[dict, dict]:
    """All measurements of one trained model; returns (numbers, example arrays for the figures). ``random_curves``
    caches the random-ranking ROAR/KAR scores (they do not depend on the model) across calls."""
    model, variables, _ = load_model(workdir)
    logits_fn = ModelLogits(model)
    images, labels, squares, targets, seeds, object_classes, object_masks = eval_set
    size = images.shape[1]
    key = jax.random.key(0)
    results, examples = {}, {}

    def predict(x):
        return np.asarray(jnp.argmax(logits_fn(variables, jnp.asarray(x)), -1))

    results["clean_mIoU"] = miou(predict(images), labels)
    attacked = apgd(logits_fn, images, labels, key, eps=4 / 255, iterations=args.attack_iterations, variables=variables)
    results["apgd_4_mIoU"] = float(metrics.scores_from_statistics(attacked.statistics)["mIoU"])

    eps = common.scaled_radius(inpaint.INPAINTING_EPS, size, size)
    for mode in inpaint.MODES:
        filled = inpaint.inpaint(logits_fn, images, squares, labels, mode=mode, eps=eps, step_size=eps / 60,
                                 iterations=args.inpaint_iterations, variables=variables)
        mse, psnr = inpaint.region_error(filled.images, images, squares)
        region_hits = np.asarray(filled.prediction)[squares] == labels[squares]
        results[f"inpaint_{mode}"] = {"region_mse": float(np.mean(mse)), "region_psnr_db": float(np.mean(psnr)),
                                      "region_label_accuracy": float(region_hits.mean())}
        examples[f"inpaint_{mode}"] = np.asarray(filled.images[:args.figure_examples])
    examples["corrupted"] = np.asarray(filled.corrupted[:args.figure_examples])

    made = generate.generate(logits_fn, targets, seeds, iterations=args.generate_iterations, variables=variables)
    results["generate"] = {"self_target_accuracy": float(np.mean(made.target_accuracy)),
                           "judge_mIoU": miou(judge(made.images), targets)}
    examples["generated"] = np.asarray(made.images[:args.figure_examples])

    found = saliency.attribute(logits_fn, images, class_index=object_classes, variables=variables)
    maps = saliency.saliency_map(found.values)
    boxes = localize.localize(maps).boxes
    true_boxes = localize.boxes_from_masks(object_masks)
    class_masks = labels == object_classes[:, None, None]
    results["localisation"] = {
        "accuracy": localize.localization_accuracy(boxes, true_boxes),
        "mean_box_iou": float(np.mean(localize.box_iou(boxes, true_boxes))),
        "pointing_game": float(np.mean(localize.pointing_game(maps, class_masks))),
    }
    examples["saliency"], examples["boxes"] = maps[:args.figure_examples], boxes[:args.figure_examples]

    noise = 0.1 * np.asarray(jax.random.normal(jax.random.key(1), images.shape))
    noisy = np.clip(images + noise, 0.0, 1.0)
    descent = -np.asarray(saliency.attribute(logits_fn, noisy, objective="ce", labels=labels, variables=variables).values)
    results["alignment_denoise_cosine"] = float(np.mean(interpret.gradient_alignment(descent, images - noisy)))

    train_images, train_labels = fit_set
    train_maps = saliency_of(logits_fn, variables, train_images, train_labels)
    test_maps = saliency_of(logits_fn, variables, images, labels)
    for mode in interpret.RETRAIN_MODES:
        curve = interpret.remove_and_retrain(train_images, train_labels, train_maps, images, labels, test_maps,
                                             retrain, mode=mode, fractions=args.fractions,
                                             random_scores=random_curves.get(mode))
        random_curves[mode] = curve.random_scores
        results[mode] = {"scores": curve.scores.tolist(), "random_scores": curve.random_scores.tolist(),
                         "area": curve.area}
    return results, examples


def save_figures(examples: dict, eval_set, out: Path) -> list[str]:
    """Inpainting, generation and saliency panels (rows: models) as PNGs; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    images, labels, _, targets, seeds = eval_set[:5]
    names = list(examples)
    count = len(next(iter(examples.values()))["generated"])
    files = []

    def grid(filename, title, first_rows, model_panel):
        rows = len(first_rows) + len(names)
        figure, axes = plt.subplots(rows, count, figsize=(1.3 * count, 1.35 * rows), squeeze=False)
        for row, (label, panels) in enumerate(first_rows + [(n, model_panel(n)) for n in names]):
            for column in range(count):
                axis = axes[row, column]
                model_panel_value = panels[column]
                if callable(model_panel_value):
                    model_panel_value(axis)
                elif model_panel_value.ndim == 2 and model_panel_value.dtype.kind in "iu":
                    axis.imshow(model_panel_value, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
                else:
                    axis.imshow(np.clip(model_panel_value, 0, 1), cmap="magma", interpolation="nearest")
                axis.set_xticks([]), axis.set_yticks([])
            axes[row, 0].set_ylabel(label, fontsize=7)
        figure.suptitle(title, fontsize=9)
        figure.tight_layout()
        figure.savefig(out / filename, dpi=110)
        plt.close(figure)
        files.append(filename)

    grid("pag_inpainting.png", "Inpainting (penalty mode) of a 12x12 square",
         [("true", images[:count]), ("corrupted", examples[names[0]]["corrupted"])],
         lambda n: examples[n]["inpaint_penalty"])
    grid("pag_generation.png", "Generation toward a target map from a class-Gaussian seed",
         [("target", targets[:count]), ("seed", seeds[:count])], lambda n: examples[n]["generated"])

    def with_box(saliency_map, box):
        def draw(axis):
            axis.imshow(saliency_map, cmap="magma", interpolation="nearest")
            y0, x0, y1, x1 = box
            axis.add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="cyan", lw=1))
        return draw

    grid("pag_saliency.png", "Saliency of the largest object's class, with the localised box",
         [("image", images[:count]), ("labels", labels[:count])],
         lambda n: [with_box(m, b) for m, b in zip(examples[n]["saliency"], examples[n]["boxes"])])
    return files


def save_curves(results: dict, fractions, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for axis, mode in zip(axes, interpret.RETRAIN_MODES):
        for name, numbers in results.items():
            axis.plot(fractions, numbers[mode]["scores"], marker="o", label=name)
        axis.plot(fractions, next(iter(results.values()))[mode]["random_scores"], "k--", label="random ranking")
        axis.set_xlabel("fraction of pixels " + ("removed" if mode == "roar" else "kept"))
        axis.set_ylabel("retrained mIoU")
        axis.set_title(mode.upper())
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "pag_roar_kar.png", dpi=110)
    plt.close(figure)
    return "pag_roar_kar.png"


def markdown(results: dict) -> str:
    lines = [
        "| model | clean mIoU | APGD 4/255 mIoU | inpaint PSNR penalty / hard (dB) | judge mIoU on generations "
        "| loc. acc. | mean box IoU | pointing | align cos | ROAR area | KAR area |",
        "|" + "---|" * 11,
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {100 * r['clean_mIoU']:.1f} | {100 * r['apgd_4_mIoU']:.1f} | "
            f"{r['inpaint_penalty']['region_psnr_db']:.2f} / {r['inpaint_hard']['region_psnr_db']:.2f} | "
            f"{100 * r['generate']['judge_mIoU']:.1f} | {100 * r['localisation']['accuracy']:.1f} | "
            f"{r['localisation']['mean_box_iou']:.3f} | {100 * r['localisation']['pointing_game']:.1f} | "
            f"{r['alignment_denoise_cosine']:.3f} | {r['roar']['area']:.4f} | {r['kar']['area']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/pag_study")
    parser.add_argument("--figures", help="also copy the figures here (e.g. docs/figures)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-train", type=int, default=512)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--radii", type=float, nargs="+", default=[1.0, 4.0, 8.0], help="PGD-AT radii in /255")
    parser.add_argument("--eval-examples", type=int, default=32)
    parser.add_argument("--fit-examples", type=int, default=256, help="training images for seeds and ROAR/KAR")
    parser.add_argument("--attack-iterations", type=int, default=20)
    parser.add_argument("--inpaint-iterations", type=int, default=240)
    parser.add_argument("--generate-iterations", type=int, default=60)
    parser.add_argument("--retrain-steps", type=int, default=300)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--figure-examples", type=int, default=6)
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = str(workdir / "tfds")
    size = args.image_size
    dataset = datasets.resolve_name("synthetic_shapes", image_size=size, num_train=args.num_train,
                                    num_validation=max(64, args.eval_examples), num_test=64)
    datasets.prepare("synthetic_shapes", data_dir=data_dir, image_size=size, num_train=args.num_train,
                     num_validation=max(64, args.eval_examples), num_test=64)

    models = {"clean": ("synthetic", None, 0)}
    models.update({f"PGD-AT {r:g}/255": ("synthetic:pgd-at", r / 255, 0) for r in args.radii})
    training = {name: train_model(name.replace(" ", "_").replace("/", "-"), recipe, eps, seed, args, dataset,
                                  data_dir, workdir) for name, (recipe, eps, seed) in models.items()}
    training["judge"] = train_model("judge", "synthetic", None, 1, args, dataset, data_dir, workdir)

    judge_model, judge_variables, _ = load_model(workdir / "judge")
    judge_fn = jax.jit(ModelLogits(judge_model))

    def judge(x):
        return np.asarray(jnp.argmax(judge_fn(judge_variables, jnp.asarray(x)), -1))

    images, labels = datasets.load_split_arrays(dataset, "validation", data_dir=data_dir, protocol="standard",
                                                image_size=size, num_examples=args.eval_examples)
    fit_images, fit_labels = datasets.load_split_arrays(dataset, "train", data_dir=data_dir, protocol="standard",
                                                        image_size=size, num_examples=args.fit_examples)
    rng = np.random.default_rng(0)
    squares = random_squares(rng, len(images), size, 12)
    targets = np.roll(labels, 1, axis=0)  # each image's target is another image's map
    gaussians = generate.fit_class_gaussians(fit_images, fit_labels, NUM_CLASSES)
    seeds = np.asarray(generate.make_seed("class-gaussian", jax.random.key(2), targets, gaussians=gaussians))
    object_classes, object_masks = largest_object(labels)
    eval_set = (images, labels, squares, targets, seeds, object_classes, object_masks)
    baselines = {
        "judge_clean_mIoU": miou(judge(images), labels),
        "judge_mIoU_on_seeds": miou(judge(seeds), targets),
        "mean_fill_region_psnr_db": float(np.mean(inpaint.region_error(inpaint.corrupt(jnp.asarray(images), jnp.asarray(squares)), images, squares)[1])),
    }
    random_curves: dict = {}
    retrain = interpret.simple_trainer(NUM_CLASSES, steps=args.retrain_steps)
    results, examples = {}, {}
    for name in tqdm(list(models), desc="study models"):
        started = time.perf_counter()
        results[name], examples[name] = study_model(workdir / name.replace(" ", "_").replace("/", "-"), judge,
                                                    eval_set, (fit_images, fit_labels), retrain, random_curves, args)
        results[name]["study_seconds"] = time.perf_counter() - started
    figures = save_figures(examples, eval_set, workdir) + [save_curves(results, args.fractions, workdir)]
    if args.figures:
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        for name in figures:
            shutil.copy(workdir / name, Path(args.figures) / name)
    settings = vars(args)
    (workdir / "results.json").write_text(json.dumps(
        {"results": results, "baselines": baselines, "training": training, "settings": settings}, indent=2))
    table = markdown(results)
    (workdir / "results.md").write_text(table + "\n\n" + json.dumps(baselines, indent=2) + "\n")
    print(table)
    print(json.dumps(baselines, indent=2))


if __name__ == "__main__":
    main()
