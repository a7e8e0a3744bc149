"""PGD with any per-pixel loss, and SegPGD / CosPGD as PGD with their losses (docs/algorithms.md#pgd).

x_{t+1} = P(x_t + α sign(∇ L(x_t))) for Linf, P(x_t + α ∇L / ‖∇L‖_2) for L2, P = projection onto the eps-ball
∩ [0, 1]. The whole loop is one ``lax.fori_loop`` inside one compiled program; per image it keeps the iterate
with the highest loss (``keep="loss"``), the lowest pixel accuracy (``keep="accuracy"``; ties go to the later
iterate; targeted: the most pixels at the target) or the last one (``keep="last"``).

Defaults, and where they come from:

- ``pgd``: α = eps / 4, random start, the lowest-accuracy iterate (``keep="accuracy"``) — jaxseg's
  evaluation baseline, not one paper's protocol.
- ``segpgd`` (Gu, Zhao, Tresp, Torr, "SegPGD: An Effective and Efficient Adversarial Attack for Evaluating
  and Boosting Segmentation Robustness", ECCV 2022): loss weights λ_t = t / (2T) with 0-based t (the paper's
  (t - 1) / (2T) for t = 1..T; ``losses.segpgd_loss``), a uniform random start in the Linf ball, α = 0.01
  (the Linf setting with eps = 8/255 ≈ 0.03) and the last iterate x_T, as the paper's Algorithm 1 and
  experiments describe; the CosPGD authors' code below runs SegPGD exactly so. The paper is Linf only; for
  L2 the default α is CosPGD's 0.1.
- ``cospgd`` (Agnihotri, Jung, Keuper, "CosPGD: an efficient white-box adversarial attack for pixel-wise
  prediction tasks", ICML 2024): per-pixel CE weighted by stop_grad(cos(ψ(logits), one-hot)), ψ = sigmoid
  (paper) or softmax (``activation="softmax"``, the authors' code); α = 0.01 for Linf and 0.1 for L2, random
  start, last iterate. Sources in the authors' code (github.com/shashankskagnihotri/cospgd, the PyPI package
  ``cospgd`` 0.1.3 is its ``cospgd/`` folder): ``unet_backbones/shell/all_attacks.sh`` runs cospgd, segpgd
  and pgd with alphas "0.01" / epsilons "0.03" for Linf and alphas "0.1 0.2" / epsilons "0.251 0.502" for
  L2 (``unet_backbones/attack.py`` defaults to alpha 0.01); ``unet_backbones/backbones_unet/utils/trainer.py``
  (the attack loop) starts every PGD-family attack with ``functions.init_linf`` / ``init_l2`` (uniform noise
  in the ball, clipped to [0, 1]), passes the 0-based loop index t to ``segpgd_scale`` and scores the model
  on the final iterate.

The stronger variants stay reachable: ``keep="accuracy"``, ``step_size=...``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxseg import metrics
from jaxseg.attacks import common, threat
from jaxseg.attacks.common import AttackResult, LossSpec
from jaxseg.validation import DEFAULT_IGNORE_INDEX


def iterate(evaluate, start: jax.Array, update, update_state, labels, *, iterations: int, keep: str,
            ignore_index) -> AttackResult:
    """The attacks' first-order loop (``common.keep_best_loop``): ``iterations`` steps of
    ``x, state = update(x, grad, state)``.

    evaluate: ``(x, t) -> Evaluation``. Keeps per image the iterate chosen by ``keep`` among x_0 .. x_T
    (x_T is evaluated once more after the loop) and returns it with its statistics.
    """
    def choose(evaluation, best_value):
        if keep == "loss":
            return evaluation.loss > best_value, evaluation.loss
        if keep == "accuracy":
            return evaluation.score <= best_value, evaluation.score
        return jnp.ones_like(best_value, bool), best_value

    initial_value = jnp.full((start.shape[0],), -jnp.inf if keep == "loss" else jnp.inf, jnp.float32)
    best_x, _, best_prediction, (loss_history, accuracy_history), final = common.keep_best_loop(
        evaluate, start, lambda x, evaluation, state: update(x, evaluation.grad, state), update_state,
        iterations=iterations, choose=choose, initial_value=initial_value,
        recorded=lambda evaluation: (evaluation.loss, evaluation.accuracy), num_recorded=2,
        kept_with=lambda evaluation: evaluation.prediction, kept_initial=jnp.zeros(start.shape[:3], jnp.int32))
    statistics = metrics.per_image_statistics(best_prediction, labels, final.num_classes, ignore_index)
    return AttackResult(best_x, statistics, loss_history, accuracy_history)


def _pgd_core(variables, images, labels, key, eps, step_size, mask, target, class_weights, *, logits_fn,
              spec: LossSpec, iterations: int, norm: str, keep: str, random_start: bool, compute_dtype):
    images = images.astype(jnp.float32)
    forward = common.make_forward(logits_fn, variables, compute_dtype)
    evaluate = common.make_evaluator(forward, labels, spec, target=target, class_weights=class_weights,
                                     iterations=iterations)
    start = threat.random_start(key, images, eps, norm, mask) if random_start else images

    def update(x, grad, state):
        return threat.project(threat.step(x, grad, step_size, norm, mask), images, eps, norm, mask), state

    return iterate(evaluate, start, update, (), labels, iterations=iterations, keep=keep,
                   ignore_index=spec.ignore_index)


_STATIC = ("logits_fn", "spec", "iterations", "norm", "keep", "random_start", "compute_dtype")
_pgd_jit = jax.jit(_pgd_core, static_argnames=_STATIC)


def pgd(logits_fn, images, labels, key, *, eps, iterations: int = 10, step_size=None, norm: str = "linf",
        loss: str = "ce", keep: str = "accuracy", random_start: bool = True, mask=None, target=None,
        class_weights=None, ignore_index: int | None = DEFAULT_IGNORE_INDEX, activation: str = "sigmoid",
        variables=None, compute_dtype=None) -> AttackResult:
    """Projected gradient ascent on per-image loss ``loss`` (summed over the batch for the gradient).

    Args:
      logits_fn: ``images -> logits`` (B, H, W, K), or ``(variables, images) -> logits`` with ``variables``.
      images: (B, H, W, 3) float in [0, 1]. labels: (B, H, W) int in [0, K) or ``ignore_index``.
      key: PRNG key for the random start.
      eps: radius on the [0, 1] scale (scalar or (B,)). step_size: α, default eps / 4.
      iterations: number of gradient steps T (T + 1 forward passes).
      norm: "linf" or "l2". loss: a name of ``jaxseg.attacks.losses`` (e.g. "ce", "segpgd", "cospgd").
      keep: "accuracy" (default) | "loss" | "last", which iterate to return per image (module docstring).
      random_start: start uniformly in the ball (Linf) / on its sphere (L2); False starts at the clean images.
      mask: optional (B, H, W[, 1]) bool/0-1, only these pixels may change. target: optional (B, H, W) int map
        for a targeted attack. class_weights: (K,) or (B, K) for "mask-ce-bal".
      activation: ψ of "cospgd". compute_dtype: e.g. ``jnp.bfloat16`` for the model; losses and projection
        stay float32.
    Returns: ``AttackResult`` with (T, B) loss and accuracy histories of the iterates x_0 .. x_{T-1}.
    """
    common.check_loop(keep, iterations)
    common.validate_inputs(images, labels, eps, norm, mask=mask, target=target, class_weights=class_weights,
                           loss_names=(loss,), activation=activation)
    threat.validate_step_size(step_size)
    step_size = jnp.asarray(eps, jnp.float32) / 4 if step_size is None else step_size
    static = dict(logits_fn=logits_fn, spec=LossSpec(loss, None, ignore_index, activation), iterations=iterations,
                  norm=norm, keep=keep, random_start=random_start, compute_dtype=common.normalise_dtype(compute_dtype))
    args = (variables, images, labels, key, eps, step_size, mask, target, class_weights)
    return common.run(_pgd_jit, _pgd_core, args, static, labels=labels, ignore_index=ignore_index, target=target,
                      class_weights=class_weights, num_classes_of=lambda out: out.statistics.intersection.shape[-1])


PAPER_STEP_SIZES = {"linf": 0.01, "l2": 0.1}  # SegPGD / CosPGD α per norm (module docstring)


def segpgd(logits_fn, images, labels, key, *, step_size=None, keep: str = "last", norm: str = "linf",
           **options) -> AttackResult:
    """SegPGD (Gu et al., ECCV 2022): ``pgd`` with loss "segpgd" (λ_t = t / (2T), t = 0 .. T-1).

    Paper defaults (module docstring): α = ``PAPER_STEP_SIZES[norm]`` (0.01 for Linf), uniform random start,
    the last iterate (``keep="last"``). Other options as for ``pgd``; ``keep="accuracy"`` is the stronger
    best-iterate variant.
    """
    step_size = PAPER_STEP_SIZES.get(norm) if step_size is None else step_size
    return pgd(logits_fn, images, labels, key, loss="segpgd", step_size=step_size, keep=keep, norm=norm, **options)


def cospgd(logits_fn, images, labels, key, *, step_size=None, keep: str = "last", norm: str = "linf",
           **options) -> AttackResult:
    """CosPGD (Agnihotri, Jung, Keuper, ICML 2024): ``pgd`` with loss "cospgd" (ψ = ``activation``, default
    "sigmoid" as in the paper; "softmax" as in the authors' code).

    Paper / code defaults (module docstring): α = ``PAPER_STEP_SIZES[norm]`` (0.01 Linf, 0.1 L2), uniform
    random start, the last iterate (``keep="last"``). Other options as for ``pgd``.
    """
    step_size = PAPER_STEP_SIZES.get(norm) if step_size is None else step_size
    return pgd(logits_fn, images, labels, key, loss="cospgd", step_size=step_size, keep=keep, norm=norm, **options)
