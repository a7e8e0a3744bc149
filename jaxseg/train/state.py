"""Training state and optimiser: AdamW/SGD, poly schedule with linear warm-up, encoder/decoder learning-rate
ratio and a weight-decay mask (docs/algorithms.md#adversarial-training; the recipes' values are in configs/)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

# Parameters that are never weight-decayed besides biases and normalisation scales (all 1-D arrays).
NO_DECAY_NAMES = frozenset({"pos_embed", "cls_token", "cls_emb", "gamma"})


@flax.struct.dataclass
class TrainState:
    """Everything a training step changes. ``params`` are float32 whatever the compute dtype."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any

    @property
    def variables(self) -> dict:
        return {"params": self.params, "batch_stats": self.batch_stats}


def learning_rate_schedule(peak: float, total_steps: int, warmup_steps: int, power: float = 1.0) -> optax.Schedule:
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then poly decay ``(1 - t/T)^power`` to 0."""
    if total_steps <= 0:
        raise ValueError(f"train.steps must be positive; got {total_steps}")
    warmup_steps = min(warmup_steps, total_steps - 1) if total_steps > 1 else 0
    decay = optax.polynomial_schedule(peak, 0.0, power, max(total_steps - warmup_steps, 1))
    if warmup_steps == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), decay], [warmup_steps])


def weight_decay_mask(params) -> Any:
    """True for parameters that get weight decay: kernels and embeddings, not biases, norms or layer scales."""

    def decays(path, leaf) -> bool:
        name = getattr(path[-1], "key", str(path[-1]))
        return leaf.ndim >= 2 and name not in NO_DECAY_NAMES

    return jax.tree_util.tree_map_with_path(decays, params)


def _optimizer(train_config, schedule) -> optax.GradientTransformation:
    if train_config.optimizer == "adamw":
        return optax.adamw(schedule, b1=0.9, b2=0.999, weight_decay=train_config.weight_decay, mask=weight_decay_mask)
    if train_config.optimizer == "sgd":
        return optax.chain(
            optax.add_decayed_weights(train_config.weight_decay, weight_decay_mask),
            optax.sgd(schedule, momentum=train_config.momentum),
        )
    raise ValueError(f"train.optimizer must be 'adamw' or 'sgd'; got {train_config.optimizer!r}")


def create_optimizer(train_config) -> optax.GradientTransformation:
    """The optimiser of a ``config.train`` section.

    The backbone (``params['backbone']``) learns at ``encoder_lr_ratio`` times the decoder's rate, as in
    recipes that fine-tune a pre-trained encoder more gently.
    """
    schedule = learning_rate_schedule(
        train_config.learning_rate, train_config.steps, train_config.warmup_steps, train_config.schedule_power
    )
    ratio = float(train_config.encoder_lr_ratio)
    if ratio == 1.0:
        return _optimizer(train_config, schedule)
    encoder = _optimizer(train_config, lambda step: ratio * schedule(step))
    decoder = _optimizer(train_config, schedule)

    def labels(params):
        return {key: jax.tree_util.tree_map(lambda _: "encoder" if key == "backbone" else "decoder", value)
                for key, value in params.items()}

    return optax.multi_transform({"encoder": encoder, "decoder": decoder}, labels)


def create_train_state(variables: dict, optimizer: optax.GradientTransformation) -> TrainState:
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=optimizer.init(params),
    )
