"""SEA, the Segmentation Ensemble Attack (Croce, Singh, Hein, "Towards Reliable Evaluation and Fast Training of
Robust Semantic Segmentation Models", ECCV 2024; docs/sea_evaluation.md).

``sea_attack`` runs the three APGD attacks (losses ``mask-ce-bal``, ``mask-ce``, ``js``; 300 iterations,
red-eps, random start, track loss = unmasked CE) on a batch. ``worst_case`` combines the per-image statistics
of several attacks over a whole dataset: stack the statistics of all images (from all batches and hosts)
into (A, N, ...) arrays, then

- aAcc: per image the attack with the lowest pixel accuracy; reported pooled (correct / labelled pixels) and
  as the mean of the per-image minima (the reference code's form; the two agree under the paper's protocol,
  where every image is fully labelled and has the same size);
- mIoU: a search over per-image attack choices on the dataset-pooled mIoU, either the reference code's
  procedure reproduced exactly (``rule="reference"``, the default, comparable with published tables) or
  jaxseg's stronger greedy search (``rule="greedy"``).
"""

from __future__ import annotations

import random
from statistics import mean as exact_mean
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import metrics
from jaxseg.attacks.apgd import apgd
from jaxseg.validation import DEFAULT_IGNORE_INDEX

SEA_LOSSES = ("mask-ce-bal", "mask-ce", "js")
SEA_ITERATIONS = 300
MAX_ROUNDS = 1000
TOLERANCE = 1e-6
WORST_CASE_RULES = ("reference", "greedy")
REFERENCE_SEED = 225  # random.seed of the reference code's worst-case script


class SEAResult(NamedTuple):
    """Outputs of the component attacks, stacked on a leading attack axis A (order of ``names``).

    adversarial: (A, B, H, W, C). statistics: ``PerImageStatistics`` with (A, B) / (A, B, K) arrays.
    loss_history, accuracy_history: (A, N, B). names: the component losses.
    """

    adversarial: jax.Array
    statistics: metrics.PerImageStatistics
    loss_history: jax.Array
    accuracy_history: jax.Array
    names: tuple[str, ...]


def sea_attack(logits_fn, images, labels, key, *, eps, iterations: int = SEA_ITERATIONS, norm: str = "linf",
               losses: Sequence[str] = SEA_LOSSES, track_loss: str = "ce", red_eps: bool = True,
               early_stop: bool = True, mask=None, class_weights=None,
               ignore_index: int | None = DEFAULT_IGNORE_INDEX, variables=None,
               compute_dtype=None, shared_program: bool = True) -> SEAResult:
    """The SEA component attacks on one batch; combine over the dataset with ``worst_case``.

    Arguments as for ``jaxseg.attacks.apgd``; ``class_weights`` (K,) are the training-set weights of
    ``mask-ce-bal`` (``losses.balanced_class_weights``; None = each image's own label frequencies).
    ``shared_program``: the components run one compiled APGD program whose loss is chosen at run time
    (``apgd(loss=losses, loss_index=i)``), so a batch shape compiles once for all of them and every radius;
    False compiles one program per loss (the same algorithm; for measuring the difference).
    """
    if isinstance(losses, str) or len(losses) == 0:
        raise ValueError(f"sea_attack needs a non-empty list of loss names (default {SEA_LOSSES}); got {losses!r}")
    keys = jax.random.split(key, len(losses))
    results = [
        apgd(logits_fn, images, labels, attack_key, eps=eps, iterations=iterations, norm=norm,
             **(dict(loss=tuple(losses), loss_index=index) if shared_program else dict(loss=losses[index])),
             track_loss=track_loss, red_eps=red_eps, early_stop=early_stop, mask=mask, class_weights=class_weights,
             ignore_index=ignore_index, variables=variables, compute_dtype=compute_dtype)
        for index, attack_key in enumerate(keys)
    ]
    return SEAResult(
        adversarial=jnp.stack([r.adversarial for r in results]),
        statistics=stack_statistics([r.statistics for r in results]),
        loss_history=jnp.stack([r.loss_history for r in results]),
        accuracy_history=jnp.stack([r.accuracy_history for r in results]),
        names=tuple(losses),
    )


def stack_statistics(per_attack: Sequence[metrics.PerImageStatistics]) -> metrics.PerImageStatistics:
    """A list of A ``PerImageStatistics`` over the same images → one with a leading attack axis."""
    if not per_attack:
        raise ValueError("worst case over attacks needs the statistics of at least one attack")
    first = [jnp.shape(part) for part in per_attack[0]]
    for index, statistics in enumerate(per_attack):
        if not isinstance(statistics, metrics.PerImageStatistics):
            raise ValueError(f"attack {index}: expected metrics.PerImageStatistics, got {type(statistics).__name__}")
        shapes = [jnp.shape(part) for part in statistics]
        if shapes != first:
            raise ValueError(f"the attacks' statistics must cover the same images and classes: attack 0 has "
                             f"shapes {first}, attack {index} {shapes}")
    return metrics.PerImageStatistics(*(jnp.stack(parts) for parts in zip(*per_attack)))


def _pooled_miou(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """Mean IoU over classes with union > 0 of pooled counts (..., K) → (...) float64 (NaN if none)."""
    present = union > 0
    iou = np.where(present, intersection / np.maximum(union, 1), 0.0)
    count = present.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, iou.sum(-1) / count, np.nan)


def _greedy_search(intersection, union, choice, rng, max_rounds: int, tolerance: float):
    """Greedy per-image switches from ``choice`` (N,) to the attack with the lowest pooled mIoU;
    returns (choice, pooled mIoU, rounds run)."""
    images = np.arange(intersection.shape[1])
    pooled_i = intersection[choice, images].sum(0)
    pooled_u = union[choice, images].sum(0)
    current = float(_pooled_miou(pooled_i, pooled_u))
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        before = current
        for n in rng.permutation(images.size):
            chosen = choice[n]
            candidate_i = pooled_i - intersection[chosen, n] + intersection[:, n]  # (A, K)
            candidate_u = pooled_u - union[chosen, n] + union[:, n]
            scores = _pooled_miou(candidate_i, candidate_u)
            best = int(np.nanargmin(scores)) if not np.all(np.isnan(scores)) else chosen
            if scores[best] < current:
                choice[n], pooled_i, pooled_u, current = best, candidate_i[best], candidate_u[best], float(scores[best])
        if not before - current > tolerance:
            break
    return choice, current, rounds


def _greedy_worst_miou(intersection, union, accuracy_choice, seed: int, max_rounds: int, tolerance: float):
    """jaxseg's search: greedy from the first attack, then, if a single attack or the per-image accuracy
    choice is lower, greedy again from the lowest of those. Returns (choice, mIoU, rounds)."""
    attacks, count = intersection.shape[:2]
    images = np.arange(count)
    rng = np.random.default_rng(seed)
    choice, m_iou, rounds = _greedy_search(intersection, union, np.zeros(count, np.int64), rng, max_rounds, tolerance)
    starts = [np.full(count, a, np.int64) for a in range(attacks)] + [accuracy_choice.astype(np.int64)]
    start_scores = [float(_pooled_miou(intersection[s, images].sum(0), union[s, images].sum(0))) for s in starts]
    lowest = int(np.argmin(start_scores))
    if start_scores[lowest] < m_iou:
        choice, m_iou, more = _greedy_search(intersection, union, starts[lowest].copy(), rng, max_rounds, tolerance)
        rounds += more
    return choice, m_iou, rounds


def _reference_miou(intersection: np.ndarray, union: np.ndarray, offset: float = 0.0) -> float:
    """The reference code's mIoU of running float32 counts (K,): classes with union 0 skipped, each IoU in
    float64, the mean by ``statistics.mean`` (exactly rounded). ``offset`` is added to the unions."""
    present = union != 0
    return exact_mean((intersection[present] / (union[present] + offset)).tolist())


def _as_float32(values: np.ndarray) -> np.ndarray:
    """float64 values rounded to float32 (as ``torch.tensor(list_of_floats)`` does) and back to float64."""
    return values.astype(np.float32).astype(np.float64)


def _reference_worst_miou(intersection, union, seed: int, max_rounds: int, tolerance: float):
    """The search of the SEA reference code (``tools/worse_only.py``, ``evalSEA.worst_case_miou``), step by step.

    Every image starts on attack 0. Each round visits the images in the order of one ``random.shuffle``
    (Python's generator, seeded once with ``seed``); for an image the attacks are tried in order 0..A-1, a
    candidate scored as the mean over classes with non-zero running union of (I + dI) / (U + dU + 1e-8), and
    accepted when that is below the running mIoU computed (without the 1e-8) *before* this image — so the
    image's current attack is re-accepted and the last improving attack wins. After each image the running
    mIoU is recomputed; rounds stop when a round gains <= ``tolerance``.

    The arithmetic is the reference's: running counts start as a float32 accumulation over the images in
    order (the reference adds float32 tensors), are rounded to float32 whenever they are read (it rebuilds
    float32 tensors from Python floats), sums and ratios are float64, means exactly rounded. One deliberate
    difference: when an accepted switch involves a class whose running union is 0, the reference's running
    lists lose that class and later entries shift onto the wrong classes; here classes stay aligned. That
    only arises when a class has no labelled and no predicted pixel in the pooled statistics.
    Returns (choice, mIoU, rounds).
    """
    attacks, count, _ = intersection.shape
    inter32, union32 = intersection.astype(np.float32), union.astype(np.float32)
    running_i, running_u = np.zeros(inter32.shape[2], np.float32), np.zeros(inter32.shape[2], np.float32)
    for n in range(count):
        running_i, running_u = running_i + inter32[0, n], running_u + union32[0, n]
    running_i, running_u = running_i.astype(np.float64), running_u.astype(np.float64)
    current = _reference_miou(running_i, running_u)
    choice = np.zeros(count, np.int64)
    generator = random.Random(seed)
    previous_best = 10.0
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        order = list(range(count))
        generator.shuffle(order)
        for n in order:
            for attack in range(attacks):
                base_i, base_u = _as_float32(running_i), _as_float32(running_u)
                present = base_u != 0
                new_i = base_i + (inter32[attack, n] - inter32[choice[n], n])
                new_u = base_u + (union32[attack, n] - union32[choice[n], n])
                score = exact_mean((new_i[present] / (new_u[present] + 1e-8)).tolist())
                if score < current:
                    choice[n], running_i, running_u = attack, new_i, new_u
            current = _reference_miou(_as_float32(running_i), _as_float32(running_u))
        if previous_best - current <= tolerance:
            break
        previous_best = current
    return choice, current, rounds


def worst_case(statistics: metrics.PerImageStatistics | Sequence[metrics.PerImageStatistics], *,
               rule: str = "reference", seed: int | None = None, max_rounds: int = MAX_ROUNDS,
               tolerance: float = TOLERANCE) -> dict:
    """Worst case over A attacks of per-image statistics with (A, N, ...) arrays (or a list of A of them).

    aAcc: per image the attack with the lowest pixel accuracy. mIoU: a search over per-image attack choices
    on the dataset-pooled mIoU, by ``rule``:

    - ``"reference"`` (default): the SEA reference code's procedure, reproduced exactly (see
      ``_reference_worst_miou``; ``seed`` defaults to its 225). Its numbers are the ones comparable with
      published SEA tables.
    - ``"greedy"``: jaxseg's stronger search: each visited image moves to the attack that gives the lowest
      pooled mIoU if that is strictly lower (order from a NumPy generator seeded with ``seed``, default 0);
      if the result is above a single attack's mIoU or that of the per-image accuracy choice, the search
      continues from the lowest of those. It ends at or below the reference rule on typical statistics.

    Returns a dict: ``aAcc`` (pooled correct / labelled pixels of the per-image lowest-accuracy choice),
    ``aAcc_per_image`` (mean over images with labelled pixels of the per-image minimum accuracy: the form
    the reference code reports; equal to ``aAcc`` when all images have the same number of labelled
    pixels), ``mAcc`` (pooled mean class accuracy of the accuracy choice), ``mIoU``, ``rule``, ``choice`` (N,)
    attack per image for mIoU, ``accuracy_choice`` (N,), ``rounds``. Host-side NumPy; works on statistics
    gathered from any number of batches and hosts.
    """
    if rule not in WORST_CASE_RULES:
        raise ValueError(f"unknown worst-case rule {rule!r}; use one of {WORST_CASE_RULES}")
    if not isinstance(statistics, metrics.PerImageStatistics):
        statistics = stack_statistics(list(statistics))
    correct, labelled, intersection, union, class_pixels = (np.asarray(a).astype(np.int64) for a in statistics)
    if (intersection.ndim != 3 or correct.shape != intersection.shape[:2] or labelled.shape != correct.shape
            or union.shape != intersection.shape or class_pixels.shape != intersection.shape):
        raise ValueError(
            "worst_case expects statistics stacked as (A, N) counts and (A, N, K) intersections/unions/class "
            f"pixels; got correct {correct.shape}, labelled {labelled.shape}, intersection {intersection.shape}, "
            f"union {union.shape}, class_pixels {class_pixels.shape}"
        )
    count = correct.shape[1]
    if count == 0:
        raise ValueError("worst_case needs the statistics of at least one image")
    images = np.arange(count)
    accuracy = correct / np.maximum(labelled, 1)
    accuracy_choice = np.argmin(accuracy, axis=0)
    total = labelled[0].sum()
    a_acc = float(correct[accuracy_choice, images].sum() / total) if total > 0 else float("nan")
    has_pixels = labelled[0] > 0
    a_acc_per_image = float(accuracy[accuracy_choice, images][has_pixels].mean()) if has_pixels.any() else float("nan")
    m_acc = float(metrics.mean_class_accuracy(intersection[accuracy_choice, images].sum(0), class_pixels[0].sum(0)))
    if rule == "reference":
        search_seed = REFERENCE_SEED if seed is None else seed
        choice, m_iou, rounds = _reference_worst_miou(intersection, union, search_seed, max_rounds, tolerance)
    else:
        search_seed = 0 if seed is None else seed
        choice, m_iou, rounds = _greedy_worst_miou(intersection, union, accuracy_choice, search_seed, max_rounds,
                                                   tolerance)
    return {"aAcc": a_acc, "aAcc_per_image": a_acc_per_image, "mAcc": m_acc, "mIoU": float(m_iou), "rule": rule,
            "choice": choice, "accuracy_choice": accuracy_choice, "rounds": rounds}
