"""PAdam (Halmosi, Mohos, Jelasity, "Evaluating the Adversarial Robustness of Semantic Segmentation: Trying
Harder Pays Off", ECCV 2024, arXiv 2407.09150; docs/algorithms.md#padam): projected Adam (AMSGrad) ascent, as
published.

The reference implementation is ``padam`` in ``rse/attacks.py`` of github.com/szegedai/Robust-Segmentation-Evaluation
(commit 3e0d1fb); its attack list is ``build_attacks`` in ``rse/__init__.py``. What it does, and where jaxseg
follows it:

- random start: delta ~ U(-eps, eps), then x + delta clipped to [0, 1] (``rse/attacks.py`` lines 9-12;
  ``threat.random_start``). ``random_start=False`` starts at the clean images.
- optimiser: ``torch.optim.Adam([delta], lr, amsgrad=True, maximize=True)`` with PyTorch's defaults
  betas = (0.9, 0.999), eps = 1e-8 (line 13). PyTorch's AMSGrad keeps the running maximum of the *raw* second
  moment and bias-corrects afterwards; ``amsgrad_update`` below is that update (``optax.amsgrad`` maxes the
  bias-corrected moment instead and takes different steps).
- objective: ``loss_fn(model(x + delta), y).mean()``, the mean over batch and pixels (line 18), so the gradient
  Adam sees is 1/B times the gradient of the per-image losses summed over the batch. Adam is invariant to
  that scale except through its eps = 1e-8, which is why it is kept.
- projection after every step: delta clipped to [-eps, eps], then x + delta to [0, 1] (lines 21-22;
  ``threat.project``).
- result: the final iterate x + delta_T (line 23): ``keep="last"`` is the default. ``keep="accuracy"``
  (the lowest-accuracy iterate per image) or ``keep="loss"`` are stronger, non-published options.
- defaults: learning rate 2/255 and 200 iterations for both losses ``ce`` and ``cos`` (``rse/__init__.py``
  lines 16-17, attacks 'padam-ce' and 'padam-cos' of ``ATTACKS``, line 7). ``cos`` is 1 - cos(logits,
  one-hot label) on raw logits, ``ce`` the pixel cross-entropy. The paper takes the worst case of the two per
  image (``jaxseg.attacks.sea.worst_case`` does that over stacked statistics).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxseg.attacks import common, threat
from jaxseg.attacks.common import AttackResult, LossSpec
from jaxseg.attacks.pgd import iterate
from jaxseg.validation import DEFAULT_IGNORE_INDEX

# PyTorch's torch.optim.Adam defaults, which the reference uses.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class AdamState(NamedTuple):
    """AMSGrad state, each moment shaped like the parameters.

    m: first moment. v: second moment (raw, not bias-corrected). vmax: running maximum of the raw v.
    count: number of updates taken so far (int32 scalar).
    """

    m: jax.Array
    v: jax.Array
    vmax: jax.Array
    count: jax.Array


def adam_init(params: jax.Array) -> AdamState:
    zeros = jnp.zeros_like(params, jnp.float32)
    return AdamState(zeros, zeros, zeros, jnp.zeros((), jnp.int32))


def _one_minus_power(beta: float, t: jax.Array) -> jax.Array:
    """1 - beta**t in float32 without the cancellation of rounding beta to float32 first (PyTorch computes
    it in float64): -expm1(t log beta) with log beta taken in float64."""
    return -jnp.expm1(t * jnp.float32(math.log(beta)))


def amsgrad_update(state: AdamState, grad: jax.Array, learning_rate, *, b1: float = ADAM_BETAS[0],
                   b2: float = ADAM_BETAS[1], eps: float = ADAM_EPS) -> tuple[jax.Array, AdamState]:
    """One step of ``torch.optim.Adam(amsgrad=True, maximize=True)``: returns (ascent step, new state).

    With g the gradient of the objective to *maximise* and t the 1-based step count:
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g²;  vmax = max(vmax, v);
    step = lr / (1 - b1^t) · m / (sqrt(vmax) / sqrt(1 - b2^t) + eps).
    The new parameters are ``params + step``. ``learning_rate`` is a scalar or broadcasts against ``grad``;
    b1, b2, eps are Python floats (static).
    """
    grad = grad.astype(jnp.float32)
    count = state.count + 1
    t = count.astype(jnp.float32)
    m = state.m + (1.0 - b1) * (grad - state.m)  # PyTorch's lerp form of b1 m + (1 - b1) g
    v = b2 * state.v + (1.0 - b2) * grad * grad
    vmax = jnp.maximum(state.vmax, v)
    denominator = jnp.sqrt(vmax) / jnp.sqrt(_one_minus_power(b2, t)) + eps
    step_size = jnp.asarray(learning_rate, jnp.float32) / _one_minus_power(b1, t)
    return step_size * (m / denominator), AdamState(m, v, vmax, count)


def _padam_core(variables, images, labels, key, eps, learning_rate, mask, target, class_weights, *, logits_fn,
                spec: LossSpec, iterations: int, norm: str, keep: str, random_start: bool, compute_dtype):
    images = images.astype(jnp.float32)
    batch = images.shape[0]
    forward = common.make_forward(logits_fn, variables, compute_dtype)
    evaluate = common.make_evaluator(forward, labels, spec, target=target, class_weights=class_weights,
                                     iterations=iterations)
    start = threat.random_start(key, images, eps, norm, mask) if random_start else images
    learning_rate = jnp.asarray(learning_rate, jnp.float32)
    if learning_rate.ndim == 1:  # one rate per image
        learning_rate = learning_rate[:, None, None, None]

    def update(x, grad, state):
        # evaluate() differentiates the per-image losses summed over the batch; the reference's objective is
        # their mean over the batch.
        step, state = amsgrad_update(state, grad / batch, learning_rate)
        return threat.project(x + step, images, eps, norm, mask), state

    return iterate(evaluate, start, update, adam_init(start), labels, iterations=iterations, keep=keep,
                   ignore_index=spec.ignore_index)


_STATIC = ("logits_fn", "spec", "iterations", "norm", "keep", "random_start", "compute_dtype")
_padam_jit = jax.jit(_padam_core, static_argnames=_STATIC)


def padam(logits_fn, images, labels, key, *, eps, iterations: int = 200, learning_rate=2 / 255,
          norm: str = "linf", loss: str = "ce", keep: str = "last", random_start: bool = True, mask=None,
          target=None, class_weights=None, ignore_index: int | None = DEFAULT_IGNORE_INDEX,
          activation: str = "sigmoid", variables=None, compute_dtype=None) -> AttackResult:
    """Projected AMSGrad ascent of ``loss`` ("ce" or "cos" in the paper; any registered loss works).

    Defaults follow the reference implementation (module docstring): ``iterations`` 200, ``learning_rate``
    2/255 (Adam's fixed lr on the [0, 1] scale, scalar or (B,)), random start, ``keep="last"`` (the final
    iterate). ``keep="accuracy"`` returns the lowest-accuracy iterate per image instead. Other arguments as
    for ``jaxseg.attacks.pgd``. The whole loop is one compiled program.
    """
    common.check_loop(keep, iterations)
    common.validate_inputs(images, labels, eps, norm, mask=mask, target=target, class_weights=class_weights,
                           loss_names=(loss,), activation=activation)
    static = dict(logits_fn=logits_fn, spec=LossSpec(loss, None, ignore_index, activation), iterations=iterations,
                  norm=norm, keep=keep, random_start=random_start, compute_dtype=common.normalise_dtype(compute_dtype))
    threat.validate_step_size(learning_rate, "learning_rate")
    args = (variables, images, labels, key, eps, learning_rate, mask, target, class_weights)
    return common.run(_padam_jit, _padam_core, args, static, labels=labels, ignore_index=ignore_index, target=target,
                      class_weights=class_weights, num_classes_of=lambda out: out.statistics.intersection.shape[-1])
