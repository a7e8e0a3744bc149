"""Pieces shared by the attacks: the result type, the model/loss evaluation of an iterate, input checks and
the compile-once dispatch.

Calling convention: ``attack(logits_fn, images, labels, key, *, eps, ...)``. ``logits_fn`` maps
images (B, H, W, 3) in [0, 1] to logits (B, H, W, K). For large models pass a pure function of
``(variables, images)`` together with ``variables=...``: the variables are then an argument of the compiled
attack rather than constants baked into it, and the compiled attack is reused for every batch of the same
shape as long as the *same* ``logits_fn`` object is passed (``logits_function(model)`` builds one that compares
equal for equal models). ``logits_fn`` is a static argument: a new lambda per call means a new compilation.
Inside an outer ``jit`` (e.g. a training step) the attack is traced inline into the caller's program.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg import metrics
from jaxseg.attacks import losses, threat
from jaxseg.validation import DEFAULT_IGNORE_INDEX, check_iterations, is_traced, valid_mask, validate_images, validate_labels

KEEP_OPTIONS = ("loss", "accuracy", "last")


def check_loop(keep: str, iterations) -> None:
    """``ValueError`` for a ``keep`` rule not in ``KEEP_OPTIONS`` or a non-positive iteration count."""
    if keep not in KEEP_OPTIONS:
        raise ValueError(f"keep must be one of {KEEP_OPTIONS}; got {keep!r}")
    check_iterations(iterations)


class AttackResult(NamedTuple):
    """What every attack returns.

    adversarial: (B, H, W, C) float32 in [0, 1], within eps of the clean images.
    statistics: ``metrics.PerImageStatistics`` of the model's prediction on ``adversarial``.
    loss_history: (T, B) float32 per-image loss of the iterate at each iteration (NaN where not run).
    accuracy_history: (T, B) float32 per-image pixel accuracy of each iterate (NaN where not run).
    """

    adversarial: jax.Array
    statistics: metrics.PerImageStatistics
    loss_history: jax.Array
    accuracy_history: jax.Array


@dataclasses.dataclass(frozen=True)
class ModelLogits:
    """``(variables, images) -> logits`` of a Flax model in eval mode; equal models give equal (hashable)
    functions, so the compiled attack is reused across calls. Use as ``attack(ModelLogits(model), ...,
    variables=variables)``."""

    model: nn.Module

    def __call__(self, variables, images: jax.Array) -> jax.Array:
        return self.model.apply(variables, images, train=False)


def logits_function(model: nn.Module) -> ModelLogits:
    """The hashable ``(variables, images) -> logits`` function of ``model`` (see ``ModelLogits``)."""
    return ModelLogits(model)


class Evaluation(NamedTuple):
    """The model and losses at one iterate. Shapes: (B,) unless noted.

    loss: attack loss (its sum over the batch is what the gradient ascends). track: the loss used for best-point
    and step-size decisions. prediction: (B, H, W) int32. accuracy: pixel accuracy w.r.t. labels (NaN-free;
    1 for an image without labelled pixels). score: what the attack minimises per image — pixel accuracy,
    or for a targeted attack the fraction of pixels not yet at the target (0 for an image with nothing to
    attack). grad: (B, H, W, C) float32 gradient of the summed attack loss. num_classes: K (a Python int).
    """

    loss: jax.Array
    track: jax.Array
    prediction: jax.Array
    accuracy: jax.Array
    score: jax.Array
    grad: jax.Array
    num_classes: int


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """Static description of an attack objective: loss names and options that do not change per batch.

    ``loss`` is one name, or a tuple of names of which the evaluator's traced ``loss_index`` picks one
    (``lax.switch``): one compiled program then serves every loss of the tuple (SEA's components)."""

    loss: str | tuple[str, ...] = "ce"
    track_loss: str | None = None  # None: track the attack loss itself
    ignore_index: int | None = DEFAULT_IGNORE_INDEX
    activation: str = "sigmoid"


def make_forward(logits_fn: Callable, variables: Any, compute_dtype) -> Callable[[jax.Array], jax.Array]:
    """``forward(images) -> logits`` of the calling convention above: images (B, H, W, 3) float32 → float32 logits
    (B, H, W, K), computing the model in ``compute_dtype`` (e.g. bfloat16) if given; ``ValueError`` for logits
    of another shape. Exported as ``jaxseg.attacks.make_forward`` (PAG uses it too)."""
    if compute_dtype is not None:
        variables = jax.tree_util.tree_map(
            lambda leaf: leaf.astype(compute_dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf, variables
        )

    def forward(images: jax.Array) -> jax.Array:
        if compute_dtype is not None:
            images = images.astype(compute_dtype)
        logits = logits_fn(images) if variables is None else logits_fn(variables, images)
        shape = getattr(logits, "shape", None)
        if shape is None or len(shape) != 4 or tuple(shape[:3]) != tuple(images.shape[:3]):
            raise ValueError(
                f"logits_fn must return logits (B, H, W, K) = {tuple(images.shape[:3])} + (K,) at the input "
                f"resolution, channels last; got shape {shape} for images {tuple(images.shape)}"
            )
        return logits.astype(jnp.float32)

    return forward


def make_evaluator(forward, labels, spec: LossSpec, *, target=None, class_weights=None, iterations: int = 1,
                   loss_index=None):
    """``evaluate(images, iteration) -> Evaluation`` for the objective ``spec`` (iteration feeds SegPGD's λ_t);
    with a tuple of losses in ``spec``, ``loss_index`` (int32 scalar, may be traced) chooses one."""
    options = dict(target=target, class_weights=class_weights, iterations=iterations,
                   activation=spec.activation, ignore_index=spec.ignore_index)

    def attack_loss(logits, iteration):
        if isinstance(spec.loss, str):
            return losses.image_loss(spec.loss, logits, labels, iteration=iteration, **options)
        branches = [lambda lg, t, name=name: losses.image_loss(name, lg, labels, iteration=t, **options)
                    for name in spec.loss]
        return jax.lax.switch(loss_index, branches, logits, iteration)

    def objective(images, iteration):
        logits = forward(images)
        per_image = attack_loss(logits, iteration)
        return jnp.sum(per_image), (per_image, logits)

    gradient = jax.value_and_grad(objective, has_aux=True)

    def evaluate(images: jax.Array, iteration) -> Evaluation:
        (_, (loss, logits)), grad = gradient(images, iteration)
        track = loss
        if spec.track_loss is not None and spec.track_loss != spec.loss:
            track = losses.image_loss(spec.track_loss, logits, labels, iteration=iteration, **options)
        prediction = jnp.argmax(logits, -1).astype(jnp.int32)
        accuracy, score = success_scores(prediction, labels, logits.shape[-1], spec.ignore_index, target)
        return Evaluation(loss, track, prediction, accuracy, score, grad, logits.shape[-1])

    return evaluate


def success_scores(prediction, labels, num_classes: int, ignore_index, target=None):
    """(accuracy, score) per image; see ``Evaluation``."""
    stats = metrics.per_image_statistics(prediction, labels, num_classes, ignore_index)
    if target is None:
        return stats.pixel_accuracy, metrics.accuracy_from_counts(stats.correct, stats.labelled, empty=0.0)
    valid = valid_mask(labels, num_classes, ignore_index) & valid_mask(target, num_classes, ignore_index)
    hits = jnp.sum((prediction == target) & valid, axis=(1, 2))
    return stats.pixel_accuracy, 1.0 - metrics.accuracy_from_counts(hits, jnp.sum(valid, axis=(1, 2)))


def empty_history(iterations: int, batch: int) -> jax.Array:
    return jnp.full((iterations, batch), jnp.nan, jnp.float32)


def keep_best_loop(evaluate, start: jax.Array, update, update_state, *, iterations: int, choose, initial_value,
                   recorded, num_recorded: int, kept_with=lambda ev: (), kept_initial=()):
    """The projected first-order loop that the PGD family, PAdam and PAG's descent share.

    x_0 = ``start`` (B, H, W, C); for t < ``iterations``: ``ev = evaluate(x_t, t)``, per image keep x_t if
    ``choose(ev, best_value)`` → ((B,) bool better, (B,) value) says so, record ``recorded(ev)`` (a tuple of (B,)
    arrays, ``num_recorded`` of them) at row t, then ``x_{t+1}, state = update(x_t, ev, state)``. x_T is
    evaluated and considered once more after the loop (its gradient, unused, is removed by XLA).
    ``kept_with(ev)`` is a per-image pytree kept with the chosen iterate (e.g. its prediction), starting as
    ``kept_initial``; ``initial_value`` (B,) starts the comparison.

    Returns (best x, best value, kept pytree, tuple of (T, B) histories, the final evaluation). One
    ``lax.fori_loop``; call it inside ``jit``.
    """
    batch = start.shape[0]

    def remember(best, x, ev):
        better, value = choose(ev, best[1])
        select = lambda new, old: jnp.where(better.reshape(better.shape + (1,) * (new.ndim - 1)), new, old)
        return (select(x, best[0]), jnp.where(better, value, best[1]),
                jax.tree_util.tree_map(select, kept_with(ev), best[2]))

    def body(t, carry):
        x, state, best, histories = carry
        ev = evaluate(x, t)
        best = remember(best, x, ev)
        histories = tuple(h.at[t].set(v) for h, v in zip(histories, recorded(ev)))
        x, state = update(x, ev, state)
        return x, state, best, histories

    histories = tuple(empty_history(iterations, batch) for _ in range(num_recorded))
    carry = (start, update_state, (start, initial_value, kept_initial), histories)
    x, _, best, histories = jax.lax.fori_loop(0, iterations, body, carry)
    final = evaluate(x, iterations)
    best_x, best_value, best_kept = remember(best, x, final)
    return best_x, best_value, best_kept, histories, final


def normalise_dtype(compute_dtype):
    """None or a dtype-like → a hashable ``numpy.dtype`` (static argument)."""
    if compute_dtype is None:
        return None
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError:
        raise ValueError(f"compute_dtype must be a floating dtype such as bfloat16 or float32; got {compute_dtype!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"compute_dtype must be a floating dtype such as bfloat16; got {compute_dtype!r}")
    return dtype


def validate_inputs(images, labels, eps, norm: str, *, mask=None, target=None, class_weights=None,
                    loss_names=(), activation: str = "sigmoid") -> None:
    """Boundary checks shared by the attacks; ``ValueError`` with what was expected.

    Shapes are always checked; value ranges only for concrete (non-traced) arrays.
    """
    threat.validate_threat(images, eps, norm)
    for name in loss_names:
        losses.check_loss_name(name)
    if activation not in losses.COSPGD_ACTIVATIONS:
        raise ValueError(f"cospgd activation must be one of {losses.COSPGD_ACTIVATIONS}; got {activation!r}")
    validate_images(images, check_range=not is_traced(images))
    expected = tuple(images.shape[:3])
    if getattr(labels, "ndim", None) != 3 or tuple(labels.shape) != expected:
        raise ValueError(f"labels must have shape (B, H, W) = {expected} to match the images; got {getattr(labels, 'shape', None)}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integers; got dtype {labels.dtype}")
    if target is not None and (tuple(target.shape) != expected or not jnp.issubdtype(target.dtype, jnp.integer)):
        raise ValueError(f"target must be an integer label map of shape {expected}; got {target.shape} {target.dtype}")
    if mask is not None and tuple(mask.shape) not in (expected, expected + (1,)):
        raise ValueError(f"mask must have shape {expected} or {expected + (1,)}; got {tuple(mask.shape)}")
    if class_weights is not None and jnp.ndim(class_weights) not in (1, 2):
        raise ValueError(f"class_weights must have shape (K,) or (B, K); got {jnp.shape(class_weights)}")


def validate_label_values(labels, num_classes: int, ignore_index, *, target=None, class_weights=None) -> None:
    """Value checks that need K (known once the model's output shape is): labels and target in range."""
    if is_traced(labels, target):
        return
    validate_labels(labels, num_classes, ignore_index)
    if target is not None:
        try:
            validate_labels(target, num_classes, ignore_index)
        except ValueError as error:
            raise ValueError(f"target: {error}") from None
    if class_weights is not None and jnp.shape(class_weights)[-1] != num_classes:
        raise ValueError(f"class_weights must have {num_classes} entries per row (one per class); got {jnp.shape(class_weights)}")


def run(jitted, core, args: tuple, static: dict, *, labels, num_classes_of, ignore_index, target=None, class_weights=None):
    """Run an attack core: inline when called under a trace, else the cached ``jitted`` version after checking
    label values against K from the (cached) abstract evaluation, so repeated shapes never retrace."""
    if is_traced(args):
        return core(*args, **static)
    shapes = jitted.eval_shape(*args, **static)
    validate_label_values(labels, num_classes_of(shapes), ignore_index, target=target, class_weights=class_weights)
    return jitted(*args, **static)
