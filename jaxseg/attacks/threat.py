"""Threat models: Linf and L2 balls of radius eps around clean images, intersected with the [0, 1] box.

Images are float (B, H, W, C) in [0, 1]; eps is on that scale (4/255 ...), a scalar or one radius per image
(B,). An optional perturbation ``mask`` (B, H, W) or (B, H, W, 1), bool or 0/1, restricts the attack to a
region: the perturbation is multiplied by the mask before and after projection (and the L2 norm is taken
over the masked perturbation), so pixels outside the mask never change. All functions are jit-able.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

NORMS = ("linf", "l2")
_TINY = 1e-12


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown threat model norm {norm!r}; expected one of {NORMS}")


def validate_threat(images, eps, norm: str) -> None:
    """Raise ``ValueError`` for an unknown norm, a negative or non-finite eps, or images not (B, H, W, C) float.

    Value checks of eps run only when it is concrete (not inside ``jit``).
    """
    check_norm(norm)
    if getattr(images, "ndim", None) != 4 or not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(
            f"images must be a float (B, H, W, C) array; got shape {getattr(images, 'shape', None)} "
            f"dtype {getattr(images, 'dtype', None)}"
        )
    if not isinstance(eps, jax.core.Tracer):
        values = np.asarray(eps, np.float64)
        if values.ndim > 1 or (values.ndim == 1 and values.shape[0] != images.shape[0]):
            raise ValueError(f"eps must be a scalar or have shape (B,) = ({images.shape[0]},); got {values.shape}")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"eps must be finite and >= 0 (on the [0, 1] image scale); got {eps}")
        if norm == "linf" and np.any(values > 1):
            warnings.warn(f"Linf eps {float(values.max()):g} is above 1, larger than the whole [0, 1] image range: "
                          "radii are on the [0, 1] scale (4/255, not 4)", stacklevel=3)


def validate_step_size(value, name: str = "step_size") -> None:
    """Raise ``ValueError`` unless a step size (scalar or (B,)) is finite and > 0; checked when concrete."""
    if value is None or isinstance(value, jax.core.Tracer):
        return
    values = np.asarray(value, np.float64)
    if values.ndim > 1 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"{name} must be finite and > 0 (a scalar or one per image); got {value}")


def _per_image(value, ndim: int) -> jax.Array:
    """Scalar or (B,) → broadcastable against (B, ...) of rank ``ndim``."""
    value = jnp.asarray(value, jnp.float32)
    return value.reshape(value.shape + (1,) * (ndim - value.ndim)) if value.ndim == 1 else value


def _mask(mask, images: jax.Array) -> jax.Array | None:
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.ndim == images.ndim - 1:
        mask = mask[..., None]
    return mask.astype(images.dtype)


def _l2_norm(values: jax.Array) -> jax.Array:
    """Per-image L2 norm, shape (B, 1, 1, 1)."""
    return jnp.sqrt(jnp.sum(jnp.square(values), axis=tuple(range(1, values.ndim)), keepdims=True))


def _masked(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    return values if mask is None else values * mask


def random_start(key: jax.Array, images: jax.Array, eps, norm: str, mask=None) -> jax.Array:
    """A random point of the threat set: uniform in the Linf ball, or Gaussian noise rescaled to L2 norm eps;
    then clipped to [0, 1]. Returns float (B, H, W, C)."""
    check_norm(norm)
    mask = _mask(mask, images)
    radius = _per_image(eps, images.ndim)
    if norm == "linf":
        delta = jax.random.uniform(key, images.shape, images.dtype, -1.0, 1.0) * radius
    else:
        noise = _masked(jax.random.normal(key, images.shape, images.dtype), mask)
        delta = noise / (_l2_norm(noise) + _TINY) * radius
    return jnp.clip(images + _masked(delta, mask), 0.0, 1.0)


def project(adv: jax.Array, images: jax.Array, eps, norm: str, mask=None) -> jax.Array:
    """Project ``adv`` onto {x : ‖x - images‖ <= eps} ∩ [0, 1] (and onto the mask's support).

    Linf clips each coordinate of the perturbation; L2 rescales it to norm min(‖δ‖, eps) as AutoAttack does.
    Clipping to [0, 1] afterwards only shrinks coordinates, so the norm bound still holds.
    """
    check_norm(norm)
    mask = _mask(mask, images)
    radius = _per_image(eps, images.ndim)
    delta = _masked(adv - images, mask)
    if norm == "linf":
        delta = jnp.clip(delta, -radius, radius)
    else:
        length = _l2_norm(delta)
        delta = delta / (length + _TINY) * jnp.minimum(radius, length)
    return jnp.clip(images + _masked(delta, mask), 0.0, 1.0)


def step(adv: jax.Array, grad: jax.Array, step_size, norm: str, mask=None) -> jax.Array:
    """One ascent step, not projected: adv + α sign(g) (Linf) or adv + α g / ‖g‖_2 per image (L2).

    step_size α: scalar or (B,). The gradient is masked first, so the step stays on the mask's support.
    """
    check_norm(norm)
    grad = _masked(grad, _mask(mask, adv))
    alpha = _per_image(step_size, adv.ndim)
    if norm == "linf":
        return adv + alpha * jnp.sign(grad)
    return adv + alpha * grad / (_l2_norm(grad) + _TINY)

