"""A tiny trained segmentation model for the attack tests.

Task: images of 4x4-pixel colour blocks; a pixel's class is its strongest colour channel (3 classes). A
3-layer conv net learns it to ~98% pixel accuracy in a few hundred Adam steps (a few seconds on CPU), so
attacks have something real to break: the decision boundary is the plane where two channels are equal.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

NUM_CLASSES = 3


class TinySegNet(nn.Module):
    """(B, H, W, 3) in [0, 1] → logits (B, H, W, NUM_CLASSES); ``train`` is accepted and ignored."""

    features: int = 16

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = nn.relu(nn.Conv(self.features, (3, 3))(images))
        x = nn.relu(nn.Conv(self.features, (3, 3))(x))
        return nn.Conv(NUM_CLASSES, (1, 1))(x)


def make_data(seed: int, count: int, size: int = 16, block: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, S, S, 3) float32 in [0, 1], labels (N, S, S) int32)."""
    rng = np.random.default_rng(seed)
    cells = rng.uniform(0.0, 1.0, (count, size // block, size // block, 3)).astype(np.float32)
    images = np.repeat(np.repeat(cells, block, axis=1), block, axis=2)
    return images, np.argmax(images, -1).astype(np.int32)


@functools.lru_cache(maxsize=None)
def train_tiny_model(steps: int = 300, seed: int = 0):
    """Train ``TinySegNet`` on ``make_data``; returns (model, variables). Cached per process (not on disk)."""
    model = TinySegNet()
    images, labels = make_data(seed + 1, 256)
    variables = model.init(jax.random.PRNGKey(seed), images[:1])
    optimizer = optax.adam(1e-2)
    state = optimizer.init(variables)

    @jax.jit
    def update(variables, state, batch_images, batch_labels):
        def loss_fn(v):
            logits = model.apply(v, batch_images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch_labels).mean()

        grads = jax.grad(loss_fn)(variables)
        updates, state = optimizer.update(grads, state, variables)
        return optax.apply_updates(variables, updates), state

    for step in range(steps):
        index = (np.arange(32) + 32 * step) % images.shape[0]
        variables, state = update(variables, state, images[index], labels[index])
    return model, variables
