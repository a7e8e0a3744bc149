"""Compiled training and evaluation steps: clean, PGD-AT (PIR-AT), SegPGD-AT (REFERENCE.md §6).

The training attack runs inside the same jitted step on the model in eval mode (BatchNorm frozen, no dropout);
the update then uses the adversarial batch in training mode with loss = CE(main) + auxiliary_weight * CE(aux).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import flax.linen as nn
import optax

from jaxseg import metrics
from jaxseg.train.state import TrainState

RECIPES = ("clean", "pgd-at", "segpgd-at")


def segmentation_cross_entropy(logits: jax.Array, labels: jax.Array, ignore_index: int = metrics.DEFAULT_IGNORE_INDEX) -> jax.Array:
    """Mean per-pixel cross-entropy over labelled pixels (ignored pixels excluded from sum and count).

    logits (B, H, W, K) float, labels (B, H, W) int → scalar float32.
    """
    valid = labels != ignore_index
    safe_labels = jnp.where(valid, labels, 0)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe_labels)
    return jnp.sum(jnp.where(valid, losses, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def adversarial_batch(
    model: nn.Module, variables: dict, images: jax.Array, labels: jax.Array, key: jax.Array, attack_config,
) -> jax.Array:
    """The training attack (PGD with ``attack_config.loss``) on the model in eval mode, from delta = 0.

    Returns adversarial images (B, H, W, 3) in the ``attack_config.eps`` ball, gradient-stopped.
    """
    from jaxseg.attacks import pgd

    def logits_fn(x):
        return model.apply(variables, x, train=False)

    result = pgd(
        logits_fn, images, labels, key,
        eps=attack_config.eps, step_size=attack_config.step_size, iterations=attack_config.steps,
        norm=attack_config.norm, loss=attack_config.loss, random_start=False, keep="last",
    )
    return jax.lax.stop_gradient(result.adversarial)


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation, config) -> Callable:
    """``step(state, batch, key) -> (state, step_metrics)`` for ``config.train.recipe``; jit it at the call site.

    batch: {"image": (B, H, W, 3) float in [0, 1], "label": (B, H, W) int}. step_metrics: scalars ``loss``,
    ``main_loss``, ``auxiliary_loss``, ``pixel_accuracy`` (on the batch the model was trained on).
    """
    recipe = config.train.recipe
    if recipe not in RECIPES:
        raise ValueError(f"train.recipe must be one of {RECIPES}; got {recipe!r}")
    auxiliary_weight = float(config.train.auxiliary_weight)

    def step(state: TrainState, batch: dict, key: jax.Array):
        attack_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
        images, labels = batch["image"], batch["label"]
        if recipe == "pgd-at":
            images = adversarial_batch(model, state.variables, images, labels, attack_key, config.attack)
        elif recipe == "segpgd-at":
            half = images.shape[0] // 2
            attacked = adversarial_batch(model, state.variables, images[:half], labels[:half], attack_key, config.attack)
            images = jnp.concatenate([attacked, images[half:]], axis=0)

        def loss_fn(params):
            (logits, auxiliary), updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, images, train=True,
                mutable=["batch_stats"], rngs={"dropout": dropout_key},
            )
            main = segmentation_cross_entropy(logits, labels)
            aux = segmentation_cross_entropy(auxiliary, labels) if auxiliary is not None else jnp.zeros(())
            return main + auxiliary_weight * aux, (main, aux, logits, updates["batch_stats"])

        (loss, (main, aux, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        valid = labels != metrics.DEFAULT_IGNORE_INDEX
        accuracy = jnp.sum((jnp.argmax(logits, -1) == labels) & valid) / jnp.maximum(jnp.sum(valid), 1)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
        return new_state, {"loss": loss, "main_loss": main, "auxiliary_loss": aux, "pixel_accuracy": accuracy}

    return step


def make_eval_step(
    model: nn.Module, num_classes: int, robust_eps: float = 0.0, robust_norm: str = "linf", robust_iterations: int = 0,
) -> Callable:
    """``eval_step(variables, batch, key) -> dict`` of summable per-batch counts.

    Returns ``clean_confusion`` (K, K) and, if ``robust_iterations`` > 0, ``robust_confusion`` after an APGD-CE
    attack of radius ``robust_eps`` — the short robustness check run during training. Pixels of padded examples
    carry the ignore label and never count.
    """

    def eval_step(variables: dict, batch: dict, key: jax.Array) -> dict:
        images, labels = batch["image"], batch["label"]

        def logits_fn(x):
            return model.apply(variables, x, train=False)

        out = {"clean_confusion": metrics.confusion_matrix(jnp.argmax(logits_fn(images), -1), labels, num_classes)}
        if robust_iterations > 0:
            from jaxseg.attacks import apgd

            result = apgd(
                logits_fn, images, labels, key, eps=robust_eps, norm=robust_norm, iterations=robust_iterations,
                loss="ce",
            )
            predictions = jnp.argmax(logits_fn(result.adversarial), -1)
            out["robust_confusion"] = metrics.confusion_matrix(predictions, labels, num_classes)
        return out

    return eval_step
