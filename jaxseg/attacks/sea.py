"""SEA, the Segmentation Ensemble Attack (Croce, Singh, Hein, ECCV 2024; REFERENCE.md §4).

``sea_attack`` runs the three APGD attacks (losses ``mask-ce-bal``, ``mask-ce``, ``js``; 300 iterations,
red-eps, random start, track loss = unmasked CE) on a batch. ``worst_case`` / ``sea_worst_case`` combine the
per-image statistics of several attacks over a whole dataset: stack the statistics of all images (from all
batches and hosts) into (A, N, ...) arrays, then

- aAcc: per image the attack with the lowest pixel accuracy, pooled as correct / labelled pixels (with the
  paper's protocol — every image fully labelled, same size — this is the mean of the per-image minima);
- mIoU: greedy search over per-image attack choices on the dataset-pooled mIoU: start with every image on the
  first attack, visit the images in a shuffled order (NumPy generator from ``seed``), move an image to the
  attack that gives the lowest pooled mIoU if that is strictly lower, stop when a round gains <= 1e-6 (at most
  1000 rounds). Should the result be above a single attack's mIoU or that of the per-image accuracy choice
  (possible for a local search), the search continues from the lowest of those, so the worst case is never
  weaker than any of them.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import metrics
from jaxseg.attacks.apgd import apgd

SEA_LOSSES = ("mask-ce-bal", "mask-ce", "js")
SEA_ITERATIONS = 300
MAX_ROUNDS = 1000
TOLERANCE = 1e-6


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
               ignore_index: int | None = metrics.DEFAULT_IGNORE_INDEX, variables=None,
               compute_dtype=None) -> SEAResult:
    """The SEA component attacks on one batch; combine over the dataset with ``sea_worst_case``.

    Arguments as for ``jaxseg.attacks.apgd``; ``class_weights`` (K,) are the training-set weights of
    ``mask-ce-bal`` (``losses.balanced_class_weights``; None = each image's own label frequencies).
    """
    keys = jax.random.split(key, len(losses))
    results = [
        apgd(logits_fn, images, labels, attack_key, eps=eps, iterations=iterations, norm=norm, loss=name,
             track_loss=track_loss, red_eps=red_eps, early_stop=early_stop, mask=mask, class_weights=class_weights,
             ignore_index=ignore_index, variables=variables, compute_dtype=compute_dtype)
        for name, attack_key in zip(losses, keys)
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
    return metrics.PerImageStatistics(*(jnp.stack(parts) for parts in zip(*per_attack)))


def _pooled_miou(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """Mean IoU over classes with union > 0 of pooled counts (..., K) → (...) float64 (NaN if none)."""
    present = union > 0
    iou = np.where(present, intersection / np.maximum(union, 1), 0.0)
    count = present.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, iou.sum(-1) / count, np.nan)


def _greedy_search(intersection, union, choice, rng, max_rounds: int, tolerance: float):
    """Greedy per-image switches from ``choice`` (N,); returns (choice, pooled mIoU, rounds run)."""
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


def worst_case(statistics: metrics.PerImageStatistics | Sequence[metrics.PerImageStatistics], *, seed: int = 0,
               max_rounds: int = MAX_ROUNDS, tolerance: float = TOLERANCE) -> dict:
    """Worst case over A attacks of per-image statistics with (A, N, ...) arrays (or a list of A of them).

    Returns a dict: ``aAcc`` (float, pooled over the per-image lowest-accuracy choice), ``mIoU`` (float,
    greedy search, see the module docstring), ``choice`` (N,) int attack index per image for mIoU,
    ``accuracy_choice`` (N,) int per-image choice for aAcc, ``rounds`` (int) greedy rounds run.
    Host-side NumPy; works on statistics gathered from any number of batches and hosts.
    """
    if not isinstance(statistics, metrics.PerImageStatistics):
        statistics = stack_statistics(list(statistics))
    correct, labelled, intersection, union = (np.asarray(a).astype(np.int64) for a in statistics)
    if intersection.ndim != 3 or correct.shape != intersection.shape[:2]:
        raise ValueError(
            "worst_case expects statistics stacked as (A, N) counts and (A, N, K) intersections/unions; got "
            f"correct {correct.shape}, intersection {intersection.shape}"
        )
    attacks, count = correct.shape
    images = np.arange(count)
    accuracy = correct / np.maximum(labelled, 1)
    accuracy_choice = np.argmin(accuracy, axis=0)
    total = labelled[0].sum()
    a_acc = float(correct[accuracy_choice, images].sum() / total) if total > 0 else float("nan")

    rng = np.random.default_rng(seed)
    choice, m_iou, rounds = _greedy_search(intersection, union, np.zeros(count, np.int64), rng, max_rounds, tolerance)
    starts = [np.full(count, a, np.int64) for a in range(attacks)] + [accuracy_choice.astype(np.int64)]
    start_scores = [float(_pooled_miou(intersection[s, images].sum(0), union[s, images].sum(0))) for s in starts]
    lowest = int(np.argmin(start_scores))
    if start_scores[lowest] < m_iou:
        choice, m_iou, more = _greedy_search(intersection, union, starts[lowest].copy(), rng, max_rounds, tolerance)
        rounds += more
    return {"aAcc": a_acc, "mIoU": m_iou, "choice": choice, "accuracy_choice": accuracy_choice, "rounds": rounds}


def sea_worst_case(stats_per_attack, *, seed: int = 0) -> dict:
    """SEA's worst case (aAcc, mIoU, choice, ...) over its attacks' stacked per-image statistics, with the
    first attack (``mask-ce-bal``) as the greedy start. See ``worst_case``."""
    return worst_case(stats_per_attack, seed=seed)
