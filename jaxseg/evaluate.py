"""Clean and robust evaluation: aAcc and mIoU under SEA, APGD, PGD, SegPGD, CosPGD or PAdam, per radius.

``evaluate(logits_fn, batches, ...)`` takes any iterable of batches ``{"image": (B, H, W, 3) float in [0, 1],
"label": (B, H, W) int, "valid": optional (B,) bool}`` (padded examples have ``valid`` False and never count)
and returns a JSON-serialisable dict. All scores are dataset-pooled (per-class intersections and unions summed
over images). For an attack with several components (SEA: three APGD runs; PAdam: CE and cos) the robust
score is the worst case over components (``jaxseg.attacks.sea.worst_case``); each component is also reported.
Nothing here prints; pass ``progress`` to observe it. ``write_results`` stores ``results.json`` and
``results.md``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import attacks, metrics
from jaxseg.attacks.sea import SEA_LOSSES, stack_statistics, worst_case
from jaxseg.validation import DEFAULT_IGNORE_INDEX, validate_images

SCORE_KEYS = ("aAcc", "aAcc_per_image", "mIoU", "mAcc")
PADAM_COMPONENT_LOSSES = ("ce", "cos")


def _stacked(results):
    """Per-component ``AttackResult``s → ((A, B, H, W, 3) images, (A, B, ...) statistics)."""
    return jnp.stack([r.adversarial for r in results]), stack_statistics([r.statistics for r in results])


def _run_sea(logits_fn, images, labels, key, *, step_size, class_weights, **shared):
    del step_size  # APGD sets its own step sizes
    result = attacks.sea_attack(logits_fn, images, labels, key, class_weights=class_weights, **shared)
    return result.adversarial, result.statistics


def _run_apgd(logits_fn, images, labels, key, *, step_size, class_weights, **shared):
    del step_size, class_weights
    return _stacked([attacks.apgd(logits_fn, images, labels, key, loss="ce", **shared)])


def _run_padam(logits_fn, images, labels, key, *, step_size, class_weights, **shared):
    del step_size, class_weights
    keys = jax.random.split(key, len(PADAM_COMPONENT_LOSSES))
    return _stacked([attacks.padam(logits_fn, images, labels, k, loss=name, **shared)
                     for name, k in zip(PADAM_COMPONENT_LOSSES, keys)])


def _pgd_family(function):
    """A runner for a PGD-family attack: each keeps its paper's defaults (step size, which iterate is kept)
    unless ``step_size`` is given."""

    def run(logits_fn, images, labels, key, *, step_size, class_weights, **shared):
        del class_weights
        return _stacked([function(logits_fn, images, labels, key, step_size=step_size, **shared)])

    return run


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """One entry of the attack table.

    components: names of the runs that make up the attack (the first starts the worst-case mIoU search).
    default_iterations: per component run, the published setting.
    run: ``(logits_fn, images, labels, key, *, step_size, class_weights, eps, norm, iterations, variables,
      compute_dtype, ignore_index)`` → ((A, B, H, W, 3) adversarial images, ``PerImageStatistics`` with (A, B)
      / (A, B, K) arrays), A = ``len(components)``.
    """

    components: tuple[str, ...]
    default_iterations: int
    run: Callable


ATTACK_TABLE = {
    "sea": AttackSpec(tuple(f"apgd-{name}" for name in SEA_LOSSES), 300, _run_sea),
    "apgd": AttackSpec(("apgd-ce",), 100, _run_apgd),
    "pgd": AttackSpec(("pgd-ce",), 100, _pgd_family(attacks.pgd)),
    "segpgd": AttackSpec(("segpgd",), 100, _pgd_family(attacks.segpgd)),
    "cospgd": AttackSpec(("cospgd",), 100, _pgd_family(attacks.cospgd)),
    "padam": AttackSpec(tuple(f"padam-{name}" for name in PADAM_COMPONENT_LOSSES), 200, _run_padam),
}
ATTACKS = tuple(ATTACK_TABLE)
DEFAULT_ITERATIONS = {name: spec.default_iterations for name, spec in ATTACK_TABLE.items()}


def attack_spec(attack: str) -> AttackSpec:
    """The table entry of ``attack``; ``ValueError`` listing the available attacks for an unknown name."""
    if attack not in ATTACK_TABLE:
        raise ValueError(f"unknown attack {attack!r}; available attacks: {', '.join(ATTACKS)}")
    return ATTACK_TABLE[attack]


def attack_components(attack: str) -> tuple[str, ...]:
    """Names of the runs that make up ``attack`` (the first is the start of the worst-case mIoU search)."""
    return attack_spec(attack).components


def run_attack(attack: str, logits_fn, images, labels, key, *, eps: float, norm: str, iterations: int,
               variables=None, step_size=None, class_weights=None, compute_dtype=None,
               ignore_index: int | None = DEFAULT_IGNORE_INDEX):
    """Run every component of ``attack`` on one batch.

    Returns ``(adversarial, statistics)``: (A, B, H, W, 3) images and ``PerImageStatistics`` with (A, B) /
    (A, B, K) arrays, A = ``len(attack_components(attack))``.
    """
    return attack_spec(attack).run(logits_fn, images, labels, key, step_size=step_size, class_weights=class_weights,
                                   eps=eps, norm=norm, iterations=iterations, variables=variables,
                                   compute_dtype=compute_dtype, ignore_index=ignore_index)


def worst_adversarial(adversarial: jax.Array, statistics: metrics.PerImageStatistics):
    """Per image the component with the lowest pixel accuracy: ((B, H, W, 3) images, (B,) component index)."""
    accuracy = metrics.accuracy_from_counts(statistics.correct, statistics.labelled, empty=0.0)  # (A, B)
    choice = jnp.argmin(accuracy, axis=0)
    return jnp.take_along_axis(adversarial, choice[None, :, None, None, None], axis=0)[0], choice


def _predict_core(variables, images, *, logits_fn, compute_dtype):
    logits = attacks.make_forward(logits_fn, variables, compute_dtype)(images.astype(jnp.float32))
    return jnp.argmax(logits, -1).astype(jnp.int32)


_predict_jit = jax.jit(_predict_core, static_argnames=("logits_fn", "compute_dtype"))


def predict(logits_fn, images, *, variables=None, compute_dtype=None) -> jax.Array:
    """(B, H, W) int32 predicted classes for images (B, H, W, 3) (one compiled forward pass per shape)."""
    return _predict_jit(variables, images, logits_fn=logits_fn, compute_dtype=attacks.normalise_dtype(compute_dtype))


def clean_statistics(logits_fn, images, labels, num_classes: int, *, variables=None, compute_dtype=None,
                     ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> metrics.PerImageStatistics:
    """Per-image statistics of the model's prediction on ``images``."""
    prediction = predict(logits_fn, images, variables=variables, compute_dtype=compute_dtype)
    return metrics.per_image_statistics(prediction, labels, num_classes, ignore_index)


def _to_host(tree, valid: np.ndarray, axis: int = 0):
    """Global (possibly sharded, multi-host) arrays → NumPy, keeping the ``valid`` images along ``axis``."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
        valid = np.asarray(multihost_utils.process_allgather(valid, tiled=True))
    return jax.tree_util.tree_map(lambda a: np.compress(valid, np.asarray(a), axis=axis), tree)


def _scores(statistics: metrics.PerImageStatistics) -> dict:
    return {k: float(v) for k, v in metrics.scores_from_statistics(statistics).items()}


def evaluate(logits_fn: Callable, batches: Iterable[dict], *, variables=None, attack: str = "sea",
             eps: Sequence[float] = (4 / 255,), norm: str = "linf", iterations: int | None = None,
             step_size: float | None = None, seed: int = 0, class_weights=None, compute_dtype=None,
             ignore_index: int | None = DEFAULT_IGNORE_INDEX, mesh=None, data_description: dict | None = None,
             clean_in_worst_case: bool = True, progress: Callable[[int], None] | None = None) -> dict:
    """Clean and robust aAcc/mIoU/mAcc of a model over ``batches``, for each radius in ``eps``.

    Args:
      logits_fn: ``images -> logits`` or, with ``variables``, ``(variables, images) -> logits``
        (e.g. ``jaxseg.attacks.logits_function(model)``).
      batches: iterable of dicts (see the module docstring); keep one batch shape to compile once.
      attack: one of ``ATTACKS``. eps: radii on the [0, 1] scale. norm: "linf" | "l2".
      iterations: per component run (default ``DEFAULT_ITERATIONS[attack]``). step_size: PGD family's α.
      seed: attack randomness and the order of jaxseg's greedy worst-case search (the reference search
        uses the reference code's seed, 225).
      class_weights: SEA's ``mask-ce-bal`` weights: a ``jaxseg.data.ClassWeights`` (recorded with its
        source), a (K,) array, or None for each image's own label frequencies.
      compute_dtype: e.g. "bfloat16" for the model; losses and projections stay float32.
      mesh: optional ``jax.sharding.Mesh`` with a ``data`` axis: batches are sharded over it and the variables
        replicated (batch sizes must divide the axis).
      data_description: recorded as ``results["data"]`` (dataset, split, protocol, image size ...).
      clean_in_worst_case: the clean image lies inside every threat model, so per image and component the
        result is the worse (lower pixel accuracy) of the clean and the attacked prediction; robust scores are
        then never above clean ones. Each robust row reports ``clean_kept``, the number of (component, image)
        pairs where the clean prediction was the worse. False scores the attacked images alone.
      progress: called with the number of images of each finished batch.
    Returns: ``{"attack", "norm", "iterations", "seed", "num_examples", "class_weights", "data",
      "clean": scores, "robust": [{"eps", "eps_255", scores..., "mIoU_greedy", "components": {name: scores}}]}``
      with scores ``aAcc`` (pooled), ``aAcc_per_image`` (mean of per-image accuracies), ``mIoU``, ``mAcc``
      (fractions). A robust row's ``mIoU`` is the reference code's worst-case search (comparable with
      published SEA tables), ``mIoU_greedy`` jaxseg's stronger search (see ``jaxseg.attacks.sea.worst_case``).
    """
    attack_spec(attack)
    radii = [float(e) for e in eps]
    if not radii or any(not np.isfinite(e) or e < 0 for e in radii):
        raise ValueError(f"eps must be a non-empty list of finite radii >= 0; got {list(eps)}")
    iterations = DEFAULT_ITERATIONS[attack] if iterations is None else int(iterations)
    weights_record = _class_weights_record(class_weights)
    weights = None if weights_record["values"] is None else np.asarray(weights_record["values"], np.float32)
    if mesh is not None:
        from jaxseg import parallel

        variables = parallel.replicate(variables, mesh)
    clean_parts, robust_parts, count = _collect_statistics(
        attack, logits_fn, batches, radii, jax.random.PRNGKey(seed), mesh=mesh, progress=progress,
        variables=variables, norm=norm, iterations=iterations, step_size=step_size, class_weights=weights,
        compute_dtype=compute_dtype, ignore_index=ignore_index)
    if count == 0:
        raise ValueError("evaluate got no valid examples (empty batches or every example marked invalid)")
    results = _summarise(attack, radii, clean_parts, robust_parts, seed, clean_in_worst_case)
    return {"attack": attack, "norm": norm, "iterations": iterations, "seed": seed, "num_examples": count,
            "class_weights": weights_record, "data": dict(data_description or {}),
            "clean_in_worst_case": clean_in_worst_case, **results}


def _collect_statistics(attack, logits_fn, batches, radii, base_key, *, mesh, progress, variables, compute_dtype,
                        ignore_index, **settings):
    """Per batch, the clean statistics and, per radius, those of every component of ``attack`` (key
    ``fold_in(fold_in(base_key, batch), radius position)``), brought to the host with the valid images only.

    Returns (clean parts: list over batches of (N_b, ...) statistics, robust parts: per radius a list over batches
    of (A, N_b, ...) statistics, the number of valid images)."""
    clean_parts, robust_parts, count = [], [[] for _ in radii], 0
    for index, batch in enumerate(batches):
        images, labels = np.asarray(batch["image"], np.float32), np.asarray(batch["label"], np.int32)
        valid = np.asarray(batch.get("valid", np.ones(images.shape[0], bool)), bool)
        if mesh is not None:
            from jaxseg import parallel

            images, labels = parallel.shard_batch((images, labels), mesh)
        for position, radius in enumerate(radii):
            key = jax.random.fold_in(jax.random.fold_in(base_key, index), position)
            _, stats = run_attack(attack, logits_fn, images, labels, key, eps=radius, variables=variables,
                                  compute_dtype=compute_dtype, ignore_index=ignore_index, **settings)
            robust_parts[position].append(_to_host(stats, valid, axis=1))
        clean = clean_statistics(logits_fn, images, labels, stats.intersection.shape[-1], variables=variables,
                                 compute_dtype=compute_dtype, ignore_index=ignore_index)
        clean_parts.append(_to_host(clean, valid))
        count += int(valid.sum())
        if progress is not None:
            progress(int(valid.sum()))
    return clean_parts, robust_parts, count


def _class_weights_record(class_weights) -> dict:
    """``{"mode", "source", "values"}`` for ``evaluate``'s ``class_weights`` argument."""
    if class_weights is None:
        return {"mode": "image", "source": "each image's own label frequencies", "values": None}
    if hasattr(class_weights, "to_json_dict"):
        return class_weights.to_json_dict()
    values = np.asarray(class_weights, np.float64)
    if values.ndim != 1:
        raise ValueError(f"class_weights must be a (K,) array; got shape {values.shape}")
    return {"mode": "given", "source": "passed to evaluate", "values": [float(v) for v in values]}


def _no_better_than_clean(stacked: metrics.PerImageStatistics, clean: metrics.PerImageStatistics):
    """Per component and image, the clean statistics where the clean prediction has the lower pixel accuracy.

    stacked: (A, N, ...) NumPy statistics of the attacks; clean: (N, ...). Returns (statistics, kept count).
    """
    attacked_accuracy = np.asarray(metrics.accuracy_from_counts(stacked.correct, stacked.labelled, empty=0.0))
    clean_accuracy = np.asarray(metrics.accuracy_from_counts(clean.correct, clean.labelled, empty=0.0))
    keep_clean = clean_accuracy[None] < attacked_accuracy  # (A, N)
    merged = [np.where(keep_clean.reshape(keep_clean.shape + (1,) * (a.ndim - 2)), c[None], a)
              for a, c in zip(stacked, clean)]
    return metrics.PerImageStatistics(*merged), int(keep_clean.sum())


def _summarise(attack, radii, clean_parts, robust_parts, seed, clean_in_worst_case: bool) -> dict:
    names = attack_components(attack)
    clean = metrics.concatenate_statistics(clean_parts)
    robust = []
    for radius, parts in zip(radii, robust_parts):
        stacked = metrics.PerImageStatistics(*(np.concatenate(p, axis=1) for p in zip(*parts)))
        clean_kept = 0
        if clean_in_worst_case:
            stacked, clean_kept = _no_better_than_clean(stacked, clean)
        components = {
            name: _scores(metrics.PerImageStatistics(*(a[i] for a in stacked))) for i, name in enumerate(names)
        }
        if len(names) > 1:
            reference = worst_case(stacked, rule="reference")
            greedy = worst_case(stacked, rule="greedy", seed=seed)
            worst = {key: float(reference[key]) for key in SCORE_KEYS} | {"mIoU_greedy": float(greedy["mIoU"])}
        else:
            worst = components[names[0]] | {"mIoU_greedy": components[names[0]]["mIoU"]}
        robust.append({"eps": radius, "eps_255": radius * 255, **worst, "clean_kept": clean_kept,
                       "components": components})
    return {"clean": _scores(clean), "robust": robust}


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def results_markdown(results: dict) -> str:
    """A Markdown table of ``evaluate``'s results (percent, one row per radius and component)."""
    radius_unit = "/255" if results["norm"] == "linf" else ""
    data = results.get("data", {})
    weights = results.get("class_weights", {})
    lines = [
        f"# Robust evaluation: {results['attack']} ({results['norm']}, {results['iterations']} iterations, "
        f"{results['num_examples']} images)",
        "",
    ]
    if data:
        lines.append("Data: " + ", ".join(f"{key} {value}" for key, value in data.items()) + ".")
    if weights:
        lines.append(f"mask-ce-bal class weights: {weights['mode']} ({weights['source']}).")
    if results.get("clean_in_worst_case"):
        kept = ", ".join(str(row["clean_kept"]) for row in results["robust"])
        lines.append("Per image and component the worse of the clean and the attacked prediction counts (clean "
                     f"kept in {kept} component-image pairs, by radius).")
    lines += [
        "Worst case over components: aAcc per image (lowest accuracy); mIoU by the SEA reference code's search "
        "(the number comparable with published tables), mIoU (greedy) by jaxseg's stronger search. aAcc is "
        "pooled over pixels, aAcc/img the mean of per-image accuracies (the reference code's form).",
        "",
        "| eps | attack | aAcc (%) | aAcc/img (%) | mIoU (%) | mIoU greedy (%) | mAcc (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    clean = results["clean"]
    lines.append(f"| 0 | clean | {_percent(clean['aAcc'])} | {_percent(clean['aAcc_per_image'])} | "
                 f"{_percent(clean['mIoU'])} | | {_percent(clean['mAcc'])} |")
    for row in results["robust"]:
        eps = f"{row['eps_255']:g}{radius_unit}" if radius_unit else f"{row['eps']:g}"
        lines.append(f"| {eps} | **{results['attack']} (worst case)** | {_percent(row['aAcc'])} | "
                     f"{_percent(row['aAcc_per_image'])} | **{_percent(row['mIoU'])}** | {_percent(row['mIoU_greedy'])} | "
                     f"{_percent(row['mAcc'])} |")
        if len(row["components"]) > 1:
            for name, scores in row["components"].items():
                lines.append(f"| {eps} | {name} | {_percent(scores['aAcc'])} | {_percent(scores['aAcc_per_image'])} | "
                             f"{_percent(scores['mIoU'])} | | {_percent(scores['mAcc'])} |")
    return "\n".join(lines) + "\n"


def write_results(results: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out_dir`` (created if needed); returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = out_dir / "results.json", out_dir / "results.md"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    markdown_path.write_text(results_markdown(results), encoding="utf-8")
    return json_path, markdown_path


def array_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, num_examples: int | None = None):
    """Batches from in-memory arrays; the last batch is padded (``valid`` False) to keep one compiled shape.

    images: (N, H, W, 3) float in [0, 1]; labels: (N, H, W) int.
    """
    images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32)
    if images.ndim != 4 or labels.shape != images.shape[:3]:
        raise ValueError(f"arrays must be images (N, H, W, 3) and labels (N, H, W); got {images.shape}, {labels.shape}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1; got {batch_size}")
    total = images.shape[0] if num_examples is None else min(int(num_examples), images.shape[0])
    for start in range(0, total, batch_size):
        index = np.arange(start, start + batch_size)
        valid = index < total
        index = np.minimum(index, total - 1)
        yield {"image": images[index], "label": labels[index], "valid": valid, "index": index}


def load_arrays(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) from an ``.npz`` with keys ``images`` (N, H, W, 3) float in [0, 1] and ``labels`` (N, H, W)
    int class indices (255 = ignored).

    Raises FileNotFoundError for a missing file and ValueError (``UnreadableFileError`` for files that are not
    readable .npz archives) naming the file and the problem, before anything else is done with the data.
    """
    import zipfile
    import zlib

    from jaxseg.checkpoint import UnreadableFileError, short_error

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"array file {path} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"array file {path} is a directory, not a .npz file")
    if not zipfile.is_zipfile(path):
        problem = "the file is empty" if path.stat().st_size == 0 else "not a .npz archive (truncated or another format?)"
        raise UnreadableFileError(path, f"{problem}; expected np.savez(path, images=..., labels=...)")
    try:
        with np.load(path) as data:
            missing = {"images", "labels"} - set(data.files)
            if missing:
                raise ValueError(f"{path} must contain arrays 'images' and 'labels'; missing {sorted(missing)}")
            images, labels = data["images"], data["labels"]
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise UnreadableFileError(path, f"a damaged .npz archive ({short_error(error)})") from error
    try:
        validate_images(images)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if labels.shape != images.shape[:3]:
        raise ValueError(f"{path}: labels must have shape (N, H, W) = {images.shape[:3]} to match the images; "
                         f"got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be integer class indices (255 = ignored); got dtype {labels.dtype}")
    bad = np.unique(labels[(labels < 0) | (labels > DEFAULT_IGNORE_INDEX)])
    if bad.size:
        raise ValueError(f"{path}: labels must be class indices >= 0 (255 = ignored); found {bad[:10].tolist()}")
    if np.all(labels == DEFAULT_IGNORE_INDEX):
        raise ValueError(f"{path}: every label is 255 (ignored); there is nothing to score")
    return images, labels
