"""PAdam (Halmosi, Mohos, Jelasity, ECCV 2024; REFERENCE.md §5): projected Adam (AMSGrad) ascent.

From a random start, AMSGrad with a fixed learning rate (2/255) ascends the per-image loss; after every step
the iterate is projected onto the eps-ball ∩ [0, 1]. The paper runs it with losses ``ce`` and ``cos`` and
takes the worst case per image (``jaxseg.attacks.sea.worst_case`` does that over stacked statistics).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxseg import metrics
from jaxseg.attacks import common, threat
from jaxseg.attacks.common import AttackResult, LossSpec
from jaxseg.attacks.pgd import iterate

PADAM_LOSSES = ("ce", "cos")


def _padam_core(variables, images, labels, key, eps, learning_rate, mask, target, class_weights, *, logits_fn,
                spec: LossSpec, iterations: int, norm: str, keep: str, random_start: bool, compute_dtype):
    images = images.astype(jnp.float32)
    forward = common.make_forward(logits_fn, variables, compute_dtype)
    evaluate = common.make_evaluator(forward, labels, spec, target=target, class_weights=class_weights,
                                     iterations=iterations)
    start = threat.random_start(key, images, eps, norm, mask) if random_start else images
    optimizer = optax.amsgrad(learning_rate)

    def update(x, grad, state):
        # optax minimises: ascend the loss by descending its negation.
        updates, state = optimizer.update(-grad, state, x)
        return threat.project(x + updates, images, eps, norm, mask), state

    return iterate(evaluate, start, update, optimizer.init(start), labels, iterations=iterations, keep=keep,
                   ignore_index=spec.ignore_index)


_STATIC = ("logits_fn", "spec", "iterations", "norm", "keep", "random_start", "compute_dtype")
_padam_jit = jax.jit(_padam_core, static_argnames=_STATIC)


def padam(logits_fn, images, labels, key, *, eps, iterations: int = 200, learning_rate=2 / 255,
          norm: str = "linf", loss: str = "ce", keep: str = "accuracy", random_start: bool = True, mask=None,
          target=None, class_weights=None, ignore_index: int | None = metrics.DEFAULT_IGNORE_INDEX,
          activation: str = "sigmoid", variables=None, compute_dtype=None) -> AttackResult:
    """Projected AMSGrad ascent of ``loss`` ("ce" or "cos" in the paper; any registered loss works).

    Arguments as for ``jaxseg.attacks.pgd`` except ``learning_rate`` (Adam's fixed lr on the [0, 1] scale,
    default 2/255) and ``keep`` (default "accuracy": the lowest-accuracy iterate per image).
    """
    if keep not in common.KEEP_OPTIONS:
        raise ValueError(f"keep must be one of {common.KEEP_OPTIONS}; got {keep!r}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer; got {iterations!r}")
    common.validate_inputs(images, labels, eps, norm, mask=mask, target=target, class_weights=class_weights,
                           loss_names=(loss,), activation=activation)
    static = dict(logits_fn=logits_fn, spec=LossSpec(loss, None, ignore_index, activation), iterations=iterations,
                  norm=norm, keep=keep, random_start=random_start, compute_dtype=common.normalise_dtype(compute_dtype))
    args = (variables, images, labels, key, eps, learning_rate, mask, target, class_weights)
    return common.run(_padam_jit, _padam_core, args, static, labels=labels, ignore_index=ignore_index, target=target,
                      class_weights=class_weights, num_classes_of=lambda out: out.statistics.intersection.shape[-1])
