"""Adversarial examples to keep and look at: attack batches, keep each image's worst component, predict, score, save.

Behind ``jaxseg attack`` and the quickstart's example figure. ``jaxseg.evaluate.evaluate`` scores a whole split
without keeping images; this keeps them (host memory: five arrays of the examples' size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from jaxseg import evaluate, metrics

ARRAYS = ("images", "labels", "adversarial", "clean_prediction", "adversarial_prediction")


def attack_examples(attack: str, logits_fn: Callable, batches: Iterable[dict], *, eps: float, variables=None,
                    norm: str = "linf", iterations: int | None = None, step_size: float | None = None,
                    class_weights=None, compute_dtype=None, key=None, max_batches: int | None = 1) -> dict:
    """Attack up to ``max_batches`` batches (None: all) at radius ``eps`` and keep the valid images.

    Batch ``i`` is attacked with ``fold_in(key, i)`` (``key`` default ``PRNGKey(0)``); for an ensemble (SEA,
    PAdam) each image's lowest-accuracy component is kept (``evaluate.worst_adversarial``). ``class_weights``
    is a ``jaxseg.data.ClassWeights`` or None. Returns NumPy arrays ``images`` (N, H, W, 3), ``labels``
    (N, H, W), ``adversarial`` (N, H, W, 3), ``clean_prediction`` and ``adversarial_prediction`` (N, H, W), and
    ``num_classes`` (int).
    """
    import jax

    key = jax.random.PRNGKey(0) if key is None else key
    iterations = iterations or evaluate.DEFAULT_ITERATIONS[attack]
    weights = None if class_weights is None else class_weights.values
    parts = {name: [] for name in ARRAYS}
    num_classes = None
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        valid = np.asarray(batch.get("valid", np.ones(len(batch["image"]), bool)), bool)
        images, labels = np.asarray(batch["image"], np.float32), np.asarray(batch["label"], np.int32)
        adversarial, statistics = evaluate.run_attack(
            attack, logits_fn, images, labels, jax.random.fold_in(key, index), eps=eps, norm=norm,
            iterations=iterations, variables=variables, step_size=step_size, class_weights=weights,
            compute_dtype=compute_dtype)
        adversarial, _ = evaluate.worst_adversarial(adversarial, statistics)
        num_classes = int(statistics.intersection.shape[-1])
        values = (images, labels, adversarial, evaluate.predict(logits_fn, images, variables=variables),
                  evaluate.predict(logits_fn, adversarial, variables=variables))
        for name, value in zip(ARRAYS, values):
            parts[name].append(np.asarray(value)[valid])
    if num_classes is None:
        raise ValueError("no batch to attack: the data holds no examples")
    return {**{name: np.concatenate(value) for name, value in parts.items()}, "num_classes": num_classes}


def example_scores(examples: dict) -> dict:
    """aAcc, mIoU, ... (``metrics.scores_from_statistics``, 4 decimals) of the clean and the adversarial
    predictions of ``attack_examples``' result: ``{"clean": {...}, "adversarial": {...}}``."""
    scores = {}
    for name in ("clean", "adversarial"):
        stats = metrics.per_image_statistics(examples[f"{name}_prediction"], examples["labels"],
                                             examples["num_classes"])
        scores[name] = {k: round(float(v), 4) for k, v in metrics.scores_from_statistics(stats).items()}
    return scores


def save_examples(path: str | Path, examples: dict, **extra) -> Path:
    """Write the arrays of ``attack_examples``' result (and ``extra`` arrays or numbers) as a compressed ``.npz``;
    creates the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **extra, **{name: examples[name] for name in ARRAYS})
    return path
