"""A small-scale test of PIR-AT's claim (Croce et al. 2024) on the built-in synthetic_shapes data.

Claim: adversarial training of a segmentation model starting from a *robust* pre-trained backbone (PIR-AT)
reaches better robustness at the same (or much smaller) training budget than adversarial training from a
clean initialisation.

Procedure, all on CPU:
1. Robust pre-training: a ConvNeXt-atto classifier, PGD-AT (Linf 4/255, 2 steps) on whole training images
   labelled by their dominant shape class (the stand-in for robust ImageNet pre-training).
2. Segmentation PGD-AT (UPerNet + ConvNeXt-atto, ``synthetic:pgd-at``) for the same number of steps from
   (a) the robust backbone (PIR-AT) and (b) a random initialisation (AT).
3. Evaluation on validation images: clean, APGD-CE and SEA at 4/255 and 8/255.

Writes ``results.json`` and ``results.md`` in ``--workdir``; ``docs/pirat_synthetic.md`` holds the measured
table. Usage: ``python experiments/pirat_synthetic.py --workdir runs/pirat``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from jaxseg import data as datasets
from jaxseg import metrics
from jaxseg.attacks import apgd, pgd
from jaxseg.attacks.sea import sea_attack, worst_case
from jaxseg.checkpoint import load_model, save_variables
from jaxseg.config import load_config
from jaxseg.models import create_model, init_variables
from jaxseg.train.loop import train
from jaxseg.train.state import create_optimizer, create_train_state

NUM_CLASSES = 6


def dominant_class(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, H, W) label maps → (N,) the most frequent foreground class per image (0 if there is none)."""
    counts = np.stack([(labels == c).sum(axis=(1, 2)) for c in range(num_classes)], axis=1)
    counts[:, 0] = 0
    return np.where(counts.max(1) > 0, counts.argmax(1), 0).astype(np.int32)


def pretrain_robust_classifier(dataset: str, data_dir: str, out: Path, steps: int, image_size: int, seed: int = 0) -> dict:
    """PGD-AT of a ConvNeXt-atto classifier; saves a variables checkpoint usable as ``model.init_from``."""
    images, labels = datasets.load_split_arrays(dataset, "train", data_dir=data_dir, protocol="standard", image_size=image_size)
    targets = dominant_class(labels, NUM_CLASSES)
    model = create_model("convnext_atto", NUM_CLASSES)
    variables = init_variables(model, jax.random.key(seed), (1, image_size, image_size, 3))
    train_config = load_config("synthetic", [f"train.steps={steps}", "train.warmup_steps=20"]).train
    optimizer = create_optimizer(train_config)
    state = create_train_state(variables, optimizer)

    @jax.jit
    def step(state, images, targets, key):
        def logits_fn(x):  # a classifier seen as a constant segmentation: (B, H, W, K); its mean CE is the image CE
            logits = model.apply(state.variables, x, train=False)
            return jnp.broadcast_to(logits[:, None, None, :], (*x.shape[:3], logits.shape[-1]))

        pixel_targets = jnp.broadcast_to(targets[:, None, None], images.shape[:3])
        adversarial = pgd(logits_fn, images, pixel_targets, key, eps=4 / 255, step_size=0.01,
                          iterations=2, random_start=False, keep="last").adversarial

        def loss_fn(params):
            logits = model.apply({"params": params, "batch_stats": state.batch_stats}, adversarial, train=True,
                                 rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == targets)
        return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state), loss, accuracy

    rng = np.random.default_rng(seed)
    batch = 32
    for index in tqdm(range(steps), desc="robust pre-training"):
        chosen = rng.choice(len(images), batch, replace=False)
        state, loss, accuracy = step(state, images[chosen], targets[chosen], jax.random.key(index))
    save_variables(out, state.variables, {"model": "convnext_atto", "num_classes": NUM_CLASSES,
                                          "source": "experiments/pirat_synthetic.py robust pre-training"})
    val_images, val_labels = datasets.load_split_arrays(dataset, "validation", data_dir=data_dir, protocol="standard",
                                                        image_size=image_size)
    predictions = jnp.argmax(model.apply(state.variables, jnp.asarray(val_images), train=False), -1)
    return {"final_loss": float(loss), "final_adversarial_batch_accuracy": float(accuracy),
            "validation_clean_accuracy": float(jnp.mean(predictions == dominant_class(val_labels, NUM_CLASSES)))}


def evaluate_robustness(workdir: Path, dataset: str, data_dir: str, image_size: int, num_examples: int,
                        iterations: int, radii: tuple[float, ...]) -> dict:
    """Clean, APGD-CE and SEA aAcc/mIoU (pooled) of the model trained in ``workdir``.

    Not ``jaxseg.evaluate.evaluate``: the attacks here draw their keys from the radius (``key(eps * 255)``), as
    when docs/pirat_synthetic.md was measured, and ``evaluate`` derives them from a seed and the batch index.
    """
    model, variables, _ = load_model(workdir)
    images, labels = datasets.load_split_arrays(dataset, "validation", data_dir=data_dir, protocol="standard",
                                                image_size=image_size, num_examples=num_examples)

    def logits_fn(x):
        return model.apply(variables, x, train=False)

    clean = metrics.per_image_statistics(jnp.argmax(logits_fn(jnp.asarray(images)), -1), jnp.asarray(labels), NUM_CLASSES)
    results = {"clean": {k: float(v) for k, v in metrics.scores_from_statistics(clean).items()}}
    for eps in radii:
        key = jax.random.key(int(eps * 255))
        apgd_stats = apgd(logits_fn, images, labels, key, eps=eps, iterations=iterations, loss="ce").statistics
        sea = sea_attack(logits_fn, images, labels, key, eps=eps, iterations=iterations)
        sea_scores = worst_case(sea.statistics)
        results[f"{eps * 255:g}/255"] = {
            "APGD-CE": {k: float(v) for k, v in metrics.scores_from_statistics(apgd_stats).items()},
            "SEA": {"aAcc": float(sea_scores["aAcc"]), "mIoU": float(sea_scores["mIoU"])},
        }
    return results


def markdown_table(results: dict, radii) -> str:
    header = "| model | clean aAcc / mIoU | " + " | ".join(f"SEA {r * 255:g}/255 aAcc / mIoU" for r in radii) + " |"
    lines = [header, "|" + "---|" * (2 + len(radii))]
    for name, result in results.items():
        row = [name, f"{100 * result['clean']['aAcc']:.1f} / {100 * result['clean']['mIoU']:.1f}"]
        for r in radii:
            sea = result[f"{r * 255:g}/255"]["SEA"]
            row.append(f"{100 * sea['aAcc']:.1f} / {100 * sea['mIoU']:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/pirat_synthetic")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--segmentation-steps", type=int, default=200)
    parser.add_argument("--eval-examples", type=int, default=64)
    parser.add_argument("--attack-iterations", type=int, default=50)
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    data_dir = str(workdir / "tfds")
    dataset = f"synthetic_shapes/{args.image_size}px"
    datasets.prepare(dataset, data_dir=data_dir)
    radii = (4 / 255, 8 / 255)
    timings = {}

    backbone = workdir / "robust_backbone"
    if not backbone.exists():
        started = time.perf_counter()
        pretraining = pretrain_robust_classifier(dataset, data_dir, backbone, args.pretrain_steps, args.image_size)
        timings["pretraining_s"] = time.perf_counter() - started
        (workdir / "pretraining.json").write_text(json.dumps(pretraining, indent=2))

    results = {}
    for name, init_from in (("PIR-AT (robust backbone)", str(backbone)), ("AT (random init)", "")):
        run = workdir / ("pirat" if init_from else "at")
        config = load_config("synthetic:pgd-at", [
            f"data.name={dataset}", f"data.data_dir={data_dir}", f"data.crop_size={args.image_size}",
            f"data.base_size={args.image_size}", f"data.eval_size={args.image_size}",
            f"train.steps={args.segmentation_steps}", f"model.init_from={init_from}",
            "train.eval_every=100000", f"train.checkpoint_every={args.segmentation_steps}",
        ])
        started = time.perf_counter()
        if train(config, run)["status"] != "completed":
            raise SystemExit(f"{name}: training was pre-empted; rerun the same command to resume")
        timings[f"{name} training_s"] = time.perf_counter() - started
        results[name] = evaluate_robustness(run, dataset, data_dir, args.image_size, args.eval_examples,
                                            args.attack_iterations, radii)
    (workdir / "results.json").write_text(json.dumps({"results": results, "timings": timings, "args": vars(args)}, indent=2))
    table = markdown_table(results, radii)
    (workdir / "results.md").write_text(table + "\n")
    print(table)
    print(json.dumps(timings, indent=2))


if __name__ == "__main__":
    main()
