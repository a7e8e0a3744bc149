"""APGD (Croce & Hein, ICML 2020) as in AutoAttack's ``autopgd_base.py``, for segmentation (docs/algorithms.md#apgd).

Per image: step size η = 2·eps, momentum 0.75 (1 on the first step),
z = P(x_k + η·step(g)), x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1})). At the checkpoints of
``apgd_checkpoints`` η is halved where the loss oscillated or where the best loss did not improve since the
previous checkpoint (unless η was just halved there); a halved image jumps back to its best-loss point and
reuses that point's gradient. The gradient comes from the attack loss; the halving rules and the best-loss
point from the *track* loss (SEA: unmasked CE). The returned adversarial point is, per image, the iterate with
the lowest pixel accuracy (ties to the later iterate). With ``red_eps`` the radius shrinks 2·eps → 1.5·eps → eps
over 30% / 30% / 40% of the iterations, each stage starting from the previous stage's best point projected
into the new ball. A stage stops early once every image has pixel accuracy 0.

The rules are pure functions (``apgd_checkpoints``, ``oscillation``, ``no_improvement``,
``update_step_size_control``, ``simulate_step_sizes``) so they can be checked on constructed loss sequences.
All per-image state lives in (B, ...) arrays updated with masks inside one ``lax.while_loop``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxseg import metrics
from jaxseg.attacks import common, threat
from jaxseg.attacks.common import LossSpec
from jaxseg.validation import DEFAULT_IGNORE_INDEX, check_iterations

MOMENTUM = 0.75
OSCILLATION_THRESHOLD = 0.75
RED_EPS_FACTORS = (2.0, 1.5, 1.0)


def _window_schedule(iterations: int) -> tuple[int, int, int]:
    """(first window, decrement, minimum window) of AutoAttack for ``iterations`` steps."""
    return max(int(0.22 * iterations), 1), max(int(0.03 * iterations), 1), max(int(0.06 * iterations), 1)


def apgd_checkpoints(iterations: int) -> list[int]:
    """Iteration counts (1-based) after which APGD checks its step size: running sums of the windows
    k_0 = max(int(0.22 N), 1), k_{j+1} = max(k_j - max(int(0.03 N), 1), max(int(0.06 N), 1)) that fit in N.

    ``apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]``.
    """
    window, decrement, minimum = _window_schedule(iterations)
    points, total = [], window
    while total <= iterations:
        points.append(total)
        window = max(window - decrement, minimum)
        total += window
    return points


def oscillation(increase_count: jax.Array, window, threshold: float = OSCILLATION_THRESHOLD) -> jax.Array:
    """Condition 1: at most ``threshold * window`` of the window's steps increased the loss. (B,) bool."""
    return increase_count <= threshold * window


def no_improvement(reduced_last_check: jax.Array, loss_best_last_check: jax.Array, loss_best: jax.Array) -> jax.Array:
    """Condition 2: η was not halved at the previous checkpoint and the best loss did not improve since. (B,) bool."""
    return ~reduced_last_check & (loss_best_last_check >= loss_best)


class StepSizeControl(NamedTuple):
    """Per-image (B,) state of the step-size rule.

    step_size: η. loss_best: best track loss so far. loss_previous: track loss of the previous iterate (0
    before the first, as in AutoAttack, whose first window compares step 0 with an unfilled zero entry).
    increase_count: steps in the current window whose loss exceeded the previous one. loss_best_last_check,
    reduced_last_check: values at the previous checkpoint (the flag starts True, so condition 2 cannot fire
    at the first checkpoint).
    """

    step_size: jax.Array
    loss_best: jax.Array
    loss_previous: jax.Array
    increase_count: jax.Array
    loss_best_last_check: jax.Array
    reduced_last_check: jax.Array


def initial_step_size_control(eps, loss: jax.Array) -> StepSizeControl:
    """State at the start point x_0 with track loss ``loss`` (B,): η = 2·eps."""
    batch = loss.shape[0]
    return StepSizeControl(
        step_size=jnp.broadcast_to(2.0 * jnp.asarray(eps, jnp.float32), (batch,)),
        loss_best=loss,
        loss_previous=jnp.zeros_like(loss),
        increase_count=jnp.zeros((batch,), jnp.int32),
        loss_best_last_check=loss,
        reduced_last_check=jnp.ones((batch,), bool),
    )


def update_step_size_control(control: StepSizeControl, loss: jax.Array, at_checkpoint, window):
    """Account for one iterate with track loss ``loss`` (B,); at a checkpoint of ``window`` steps decide halving.

    Returns ``(control, improved, halved)``: ``improved`` (B,) marks a new best loss (the caller stores the
    iterate and its gradient), ``halved`` (B,) marks images whose η was halved (the caller jumps back to the
    best-loss point). Both are False off checkpoints / without improvement.
    """
    improved = loss > control.loss_best
    loss_best = jnp.where(improved, loss, control.loss_best)
    increase_count = control.increase_count + (loss > control.loss_previous).astype(jnp.int32)
    halve = oscillation(increase_count, window) | no_improvement(
        control.reduced_last_check, control.loss_best_last_check, loss_best
    )
    halved = halve & at_checkpoint
    control = StepSizeControl(
        step_size=jnp.where(halved, control.step_size / 2, control.step_size),
        loss_best=loss_best,
        loss_previous=loss,
        increase_count=jnp.where(at_checkpoint, 0, increase_count),
        loss_best_last_check=jnp.where(at_checkpoint, loss_best, control.loss_best_last_check),
        reduced_last_check=jnp.where(at_checkpoint, halve, control.reduced_last_check),
    )
    return control, improved, halved


class _Schedule(NamedTuple):
    """Scalar checkpoint bookkeeping shared by the batch: steps since the last checkpoint and the window."""

    counter: jax.Array
    window: jax.Array


def _advance_schedule(schedule: _Schedule, decrement, minimum):
    """One step of the checkpoint bookkeeping: (at a checkpoint now, the next schedule); the window shrinks by
    ``decrement`` at each checkpoint down to ``minimum`` (``_window_schedule``)."""
    counter = schedule.counter + 1
    at_checkpoint = counter == schedule.window
    return at_checkpoint, _Schedule(
        jnp.where(at_checkpoint, 0, counter),
        jnp.where(at_checkpoint, jnp.maximum(schedule.window - decrement, minimum), schedule.window),
    )


def simulate_step_sizes(losses: jax.Array, initial_loss: jax.Array, eps) -> tuple[jax.Array, jax.Array]:
    """Run the step-size rule on a given track-loss sequence ``losses`` (N, B) from ``initial_loss`` (B,).

    Returns (step sizes after each iteration (N, B), halved flags (N, B)) — what APGD would do if its
    iterates had these losses (the rule only sees losses, so this is exact).
    """
    first_window, decrement, minimum = _window_schedule(losses.shape[0])
    schedule = _Schedule(jnp.zeros((), jnp.int32), jnp.asarray(first_window, jnp.int32))

    def body(carry, loss):
        control, schedule = carry
        at_checkpoint, next_schedule = _advance_schedule(schedule, decrement, minimum)
        control, _, halved = update_step_size_control(control, loss, at_checkpoint, schedule.window)
        return (control, next_schedule), (control.step_size, halved)

    _, (step_sizes, halved) = jax.lax.scan(body, (initial_step_size_control(eps, initial_loss), schedule), losses)
    return step_sizes, halved


class APGDResult(NamedTuple):
    """``AttackResult`` fields plus APGD's extras.

    adversarial: (B, H, W, C) lowest-accuracy iterate (of the last red-eps stage). statistics: its
    ``PerImageStatistics``. loss_history, accuracy_history: (N, B) track loss and pixel accuracy of each
    iterate (NaN after an early stop). best_loss_point: (B, H, W, C) the highest-track-loss iterate.
    step_size: (B,) final η.
    """

    adversarial: jax.Array
    statistics: metrics.PerImageStatistics
    loss_history: jax.Array
    accuracy_history: jax.Array
    best_loss_point: jax.Array
    step_size: jax.Array


class _Carry(NamedTuple):
    """Loop state. ``pending`` is the point the next loop step evaluates; ``x``/``grad`` the current iterate and
    its gradient; ``step`` counts evaluations (0: the start point)."""

    step: jax.Array
    pending: jax.Array
    schedule: _Schedule
    x: jax.Array
    x_previous: jax.Array
    grad: jax.Array
    control: StepSizeControl
    x_best_loss: jax.Array
    grad_best_loss: jax.Array
    x_best: jax.Array
    score_best: jax.Array
    prediction_best: jax.Array
    loss_history: jax.Array
    accuracy_history: jax.Array


def _select(flags: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    return jnp.where(flags.reshape(flags.shape + (1,) * (new.ndim - 1)), new, old)


class _StagePlan(NamedTuple):
    """One red-eps stage, as arrays so that every stage runs the same traced loop: radius factor, iterations,
    and the checkpoint windows of ``_window_schedule(iterations)``. Stacked: (S,) each."""

    factor: jax.Array
    iterations: jax.Array
    first_window: jax.Array
    decrement: jax.Array
    minimum: jax.Array


def _stage_plans(stages: list[tuple[float, int]]) -> _StagePlan:
    """The stacked plans of ``red_eps_stages``' (factor, iterations) list."""
    rows = [(factor, count, *_window_schedule(count)) for factor, count in stages]
    factor, *integers = zip(*rows)
    return _StagePlan(jnp.asarray(factor, jnp.float32), *(jnp.asarray(v, jnp.int32) for v in integers))


def _initial_carry(start: jax.Array, radius, history_length: int, first_window) -> _Carry:
    """The loop state before step 0 for a (B, H, W, C) ``start``: every iterate at ``start``, no gradient yet,
    the step-size control at its start (set properly at step 0), empty (history_length, B) histories."""
    batch = start.shape[0]
    no_history = common.empty_history(history_length, batch)
    return _Carry(
        step=jnp.zeros((), jnp.int32), pending=start,
        schedule=_Schedule(jnp.zeros((), jnp.int32), jnp.asarray(first_window, jnp.int32)),
        x=start, x_previous=start, grad=jnp.zeros_like(start),
        control=initial_step_size_control(radius, jnp.zeros((batch,), jnp.float32)),
        x_best_loss=start, grad_best_loss=jnp.zeros_like(start),
        x_best=start, score_best=jnp.full((batch,), jnp.inf, jnp.float32),
        prediction_best=jnp.zeros(start.shape[:-1], jnp.int32),
        loss_history=no_history, accuracy_history=no_history,
    )


def _stage(evaluate, images, start, radius, plan: _StagePlan, *, history_length: int, norm: str, mask,
           early_stop: bool) -> _Carry:
    """One APGD run of ``plan.iterations`` steps in the ball of ``radius`` from ``start``; returns the final
    carry (histories of ``history_length`` rows, NaN after the stage's last iteration).

    All ``iterations + 1`` forward/backward passes, the start point's included, run in the ``while_loop`` body, so
    the program holds one copy of the model's gradient, not two (``upernet_convnext_atto`` at 64², batch 8: first
    call 18 → 13 s; results bit-identical). Loop step 0 evaluates the start point and initialises the state; step
    k ≥ 1 evaluates iterate k and applies AutoAttack's updates; each step then computes the next iterate
    (momentum 0.75, none for the first) as ``pending``.
    """
    iterations = plan.iterations
    carry = _initial_carry(start, radius, history_length, plan.first_window)

    def project(x):
        return threat.project(x, images, radius, norm, mask)

    def initialise(c: _Carry, ev) -> _Carry:
        return c._replace(grad=ev.grad, control=initial_step_size_control(radius, ev.track), grad_best_loss=ev.grad,
                          score_best=ev.score, prediction_best=ev.prediction)

    def update(c: _Carry, ev) -> _Carry:
        x = c.pending
        better = ev.score <= c.score_best
        at_checkpoint, schedule = _advance_schedule(c.schedule, plan.decrement, plan.minimum)
        control, improved, halved = update_step_size_control(c.control, ev.track, at_checkpoint, c.schedule.window)
        x_best_loss = _select(improved, x, c.x_best_loss)
        grad_best_loss = _select(improved, ev.grad, c.grad_best_loss)
        return c._replace(
            schedule=schedule, x=_select(halved, x_best_loss, x), x_previous=c.x,
            grad=_select(halved, grad_best_loss, ev.grad), control=control, x_best_loss=x_best_loss,
            grad_best_loss=grad_best_loss, x_best=_select(better, x, c.x_best),
            score_best=jnp.where(better, ev.score, c.score_best),
            prediction_best=_select(better, ev.prediction, c.prediction_best),
            loss_history=c.loss_history.at[c.step - 1].set(ev.track),
            accuracy_history=c.accuracy_history.at[c.step - 1].set(ev.accuracy),
        )

    def body(c: _Carry) -> _Carry:
        ev = evaluate(c.pending, c.step)
        c = jax.lax.cond(c.step == 0, initialise, update, c, ev)
        a = jnp.where(c.step == 0, 1.0, MOMENTUM)
        z = project(threat.step(c.x, c.grad, c.control.step_size, norm, mask))
        pending = project(c.x + a * (z - c.x) + (1 - a) * (c.x - c.x_previous))
        return c._replace(step=c.step + 1, pending=pending)

    def running(c: _Carry) -> jax.Array:
        unfinished = c.step <= iterations
        if not early_stop:
            return unfinished
        return unfinished & ((c.step == 0) | ~jnp.all(c.score_best <= 0))

    return jax.lax.while_loop(running, body, carry)


def red_eps_stages(iterations: int, red_eps: bool) -> list[tuple[float, int]]:
    """(radius factor, iterations) per stage: [(1, N)] or [(2, int(0.3 N)), (1.5, int(0.3 N)), (1, rest)]."""
    if not red_eps:
        return [(1.0, iterations)]
    first = int(0.3 * iterations)
    counts = (first, first, iterations - 2 * first)
    return [(factor, count) for factor, count in zip(RED_EPS_FACTORS, counts) if count > 0]


def _apgd_core(variables, images, labels, key, eps, mask, target, class_weights, loss_index, *, logits_fn,
               spec: LossSpec,
               iterations: int, norm: str, red_eps: bool, early_stop: bool, random_start: bool, compute_dtype):
    images = images.astype(jnp.float32)
    forward = common.make_forward(logits_fn, variables, compute_dtype)
    stages = red_eps_stages(iterations, red_eps)
    history_length = max(count for _, count in stages)
    first_start = images
    if random_start:
        first_start = threat.random_start(key, images, stages[0][0] * jnp.asarray(eps, jnp.float32), norm, mask)

    def run_stage(point, indexed):
        index, plan = indexed  # one traced stage body: the program holds one copy of the model's gradient
        radius = plan.factor * jnp.asarray(eps, jnp.float32)
        evaluate = common.make_evaluator(forward, labels, spec, target=target, class_weights=class_weights,
                                         iterations=plan.iterations, loss_index=loss_index)
        start = jnp.where(index == 0, first_start, threat.project(point, images, radius, norm, mask))
        carry = _stage(evaluate, images, start, radius, plan, history_length=history_length, norm=norm, mask=mask,
                       early_stop=early_stop)
        final = (carry.x_best_loss, carry.control.step_size, carry.prediction_best)
        return carry.x_best, (final, carry.loss_history, carry.accuracy_history)

    plans = _stage_plans(stages)
    x_best, (finals, loss_rows, accuracy_rows) = jax.lax.scan(run_stage, images, (jnp.arange(len(stages)), plans))
    x_best_loss, step_size, prediction_best = (a[-1] for a in finals)

    num_classes = jax.eval_shape(forward, images).shape[-1]
    statistics = metrics.per_image_statistics(prediction_best, labels, num_classes, spec.ignore_index)
    return APGDResult(
        adversarial=x_best, statistics=statistics,
        loss_history=jnp.concatenate([loss_rows[s, :count] for s, (_, count) in enumerate(stages)]),
        accuracy_history=jnp.concatenate([accuracy_rows[s, :count] for s, (_, count) in enumerate(stages)]),
        best_loss_point=x_best_loss, step_size=step_size,
    )


_STATIC = ("logits_fn", "spec", "iterations", "norm", "red_eps", "early_stop", "random_start", "compute_dtype")
_apgd_jit = jax.jit(_apgd_core, static_argnames=_STATIC)


def apgd(logits_fn, images, labels, key, *, eps, iterations: int = 100, norm: str = "linf",
         loss: str | tuple[str, ...] = "ce", loss_index: int = 0, track_loss: str | None = None, red_eps: bool = False,
         early_stop: bool = True, random_start: bool = True, mask=None, target=None, class_weights=None,
         ignore_index: int | None = DEFAULT_IGNORE_INDEX, activation: str = "sigmoid", variables=None,
         compute_dtype=None) -> APGDResult:
    """APGD on the per-image loss ``loss`` (see the module docstring for the algorithm).

    Args:
      logits_fn: ``images -> logits`` (B, H, W, K), or ``(variables, images) -> logits`` with ``variables``.
      images: (B, H, W, 3) float in [0, 1]. labels: (B, H, W) int in [0, K) or ``ignore_index``. key: PRNG key.
      eps: radius on the [0, 1] scale. iterations: N gradient steps in total (over all red-eps stages).
      norm: "linf" | "l2". loss: attack loss name, or a tuple of names of which ``loss_index`` picks one at run
        time: every loss of the tuple then shares one compiled program (SEA's components do). track_loss: loss for the step-size rule and best-loss point
        (None: ``loss``; SEA uses "ce"). red_eps: progressive radius reduction. early_stop: end a stage when
        every image has pixel accuracy 0 (targeted: every pixel at the target).
      mask, target, class_weights, activation, compute_dtype: as for ``jaxseg.attacks.pgd``.
    Returns: ``APGDResult``.
    """
    check_iterations(iterations)
    names = (loss,) if isinstance(loss, str) else tuple(loss)
    if not names or not 0 <= loss_index < len(names):
        raise ValueError(f"loss_index {loss_index} does not pick one of the {len(names)} losses {names}")
    common.validate_inputs(images, labels, eps, norm, mask=mask, target=target, class_weights=class_weights,
                           loss_names=names + ((track_loss,) if track_loss else ()), activation=activation)
    static = dict(logits_fn=logits_fn, spec=LossSpec(loss if isinstance(loss, str) else names, track_loss,
                                                     ignore_index, activation),
                  iterations=iterations, norm=norm, red_eps=red_eps, early_stop=early_stop,
                  random_start=random_start, compute_dtype=common.normalise_dtype(compute_dtype))
    args = (variables, images, labels, key, eps, mask, target, class_weights, jnp.asarray(loss_index, jnp.int32))
    return common.run(_apgd_jit, _apgd_core, args, static, labels=labels, ignore_index=ignore_index, target=target,
                      class_weights=class_weights, num_classes_of=lambda out: out.statistics.intersection.shape[-1])
