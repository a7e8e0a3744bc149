"""Compiled training and evaluation steps: clean, PGD-AT (PIR-AT), SegPGD-AT.

The training attack runs inside the same jitted step on the model in eval mode (BatchNorm frozen, no dropout);
the update then runs the model in training mode on the attacked batch with per-part loss
CE(main) + auxiliary_weight * CE(aux) (CE = ``attacks.segmentation_cross_entropy``, the mean over the part's
labelled pixels).

- ``pgd-at`` (PGD-AT / PIR-AT, Croce, Singh & Hein, ECCV 2024, arXiv 2306.12941, Sec. 4 and App. 0.B.2; reference
  code github.com/nmndeep/Robust-Segmentation ``semseg/val.py`` ``Pgd_Attack``): every image attacked, PGD from
  delta = 0 (``attack.random_start = False``), the loss above on the whole batch.
- ``segpgd-at`` (Gu, Zhao, Tresp & Torr, ECCV 2022, arXiv 2207.12391, Sec. 3.3 "Segmentation Adversarial
  Training with SegPGD"): the first half of the batch is attacked with SegPGD started from a uniform random point
  of the eps-ball (their Algorithm 1, ``attack.random_start = True``), the second half stays clean, and the
  objective is the sum of the clean-half and adversarial-half losses, L = L_clean + L_adv
  (``attack.segpgd_at_loss = "sum"``; ``"mean"`` = one CE over the concatenated batch, (L_clean + L_adv) / 2 when
  both halves have as many labelled pixels). One forward pass over the concatenated batch, so BatchNorm
  statistics are those of the mixed batch, as in the published implementations.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import flax.linen as nn
import optax

from jaxseg import metrics
from jaxseg.attacks import apgd, pgd, segmentation_cross_entropy
from jaxseg.train.state import TrainState

RECIPES = ("clean", "pgd-at", "segpgd-at")
SEGPGD_AT_LOSSES = ("sum", "mean")


def adversarial_batch(
    model: nn.Module, variables: dict, images: jax.Array, labels: jax.Array, key: jax.Array, attack_config,
) -> jax.Array:
    """The training attack (PGD with ``attack_config.loss``) on the model in eval mode.

    It starts from delta = 0 (the clean images) unless ``attack_config.random_start`` (a uniform point of the
    eps-ball, clipped to [0, 1]; ``key`` draws it) and returns the last iterate. Every option is passed to
    ``pgd`` explicitly, so the recipe does not follow changes of ``pgd``'s defaults.
    Returns adversarial images (B, H, W, 3) in the ``attack_config.eps`` ball, gradient-stopped.
    """
    def logits_fn(x):
        return model.apply(variables, x, train=False)

    # Configs saved before ``attack.random_start`` existed (resumed runs) get the PGD-AT/PIR-AT start, delta = 0.
    random_start = bool(attack_config.get("random_start", False))
    result = pgd(
        logits_fn, images, labels, key,
        eps=attack_config.eps, step_size=attack_config.step_size, iterations=int(attack_config.steps),
        norm=attack_config.norm, loss=attack_config.loss, random_start=random_start, keep="last",
    )
    return jax.lax.stop_gradient(result.adversarial)


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation, config) -> Callable:
    """``step(state, batch, key) -> (state, step_metrics)`` for ``config.train.recipe``; jit it at the call site.

    batch: {"image": (B, H, W, 3) float in [0, 1], "label": (B, H, W) int}. step_metrics: scalars ``loss``,
    ``main_loss``, ``auxiliary_loss``, ``pixel_accuracy`` (on the batch the model was trained on; for SegPGD-AT
    with ``attack.segpgd_at_loss = "sum"`` the losses are clean-half + adversarial-half sums).
    """
    recipe = config.train.recipe
    if recipe not in RECIPES:
        raise ValueError(f"train.recipe must be one of {RECIPES}; got {recipe!r}")
    auxiliary_weight = float(config.train.auxiliary_weight)
    segpgd_at_loss = config.attack.get("segpgd_at_loss", "sum")
    if recipe == "segpgd-at" and segpgd_at_loss not in SEGPGD_AT_LOSSES:
        raise ValueError(f"attack.segpgd_at_loss must be one of {SEGPGD_AT_LOSSES}; got {segpgd_at_loss!r}")
    split_loss = recipe == "segpgd-at" and segpgd_at_loss == "sum"

    def step(state: TrainState, batch: dict, key: jax.Array):
        attack_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
        images, labels = batch["image"], batch["label"]
        half = images.shape[0] // 2
        if recipe == "pgd-at":
            images = adversarial_batch(model, state.variables, images, labels, attack_key, config.attack)
        elif recipe == "segpgd-at":
            if half == 0:
                raise ValueError("segpgd-at needs a batch of at least 2 images (half attacked, half clean)")
            # Gu et al. 2022, Sec. 3.3: the first half attacked (SegPGD), the second half clean.
            attacked = adversarial_batch(model, state.variables, images[:half], labels[:half], attack_key, config.attack)
            images = jnp.concatenate([attacked, images[half:]], axis=0)

        def cross_entropy(outputs):
            if split_loss:  # SegPGD-AT, Gu et al. 2022 Sec. 3.3: L = L_adv (first half) + L_clean (second half)
                return (segmentation_cross_entropy(outputs[:half], labels[:half])
                        + segmentation_cross_entropy(outputs[half:], labels[half:]))
            return segmentation_cross_entropy(outputs, labels)

        def loss_fn(params):
            (logits, auxiliary), updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats}, images, train=True,
                mutable=["batch_stats"], rngs={"dropout": dropout_key},
            )
            main = cross_entropy(logits)
            aux = cross_entropy(auxiliary) if auxiliary is not None else jnp.zeros(())
            return main + auxiliary_weight * aux, (main, aux, logits, updates["batch_stats"])

        (loss, (main, aux, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        accuracy = metrics.pixel_accuracy(jnp.argmax(logits, -1), labels, axis=None, empty=0.0)
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
            result = apgd(
                logits_fn, images, labels, key, eps=robust_eps, norm=robust_norm, iterations=robust_iterations,
                loss="ce",
            )
            predictions = jnp.argmax(logits_fn(result.adversarial), -1)
            out["robust_confusion"] = metrics.confusion_matrix(predictions, labels, num_classes)
        return out

    return eval_step
