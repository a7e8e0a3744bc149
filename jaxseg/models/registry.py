"""Models by name: ``create_model(name, num_classes, **options)`` and ``init_variables``.

Model families register factories with ``register_model``; each factory takes ``num_classes`` and keyword
options and returns a Flax module. Unknown names and options raise ``ValueError``. ``create_model`` also picks the
convolution kernels for the platform, once (``kernels``; see ``jaxseg.models.kernels``), and hands the concrete
choice to factories that take a ``kernels`` option.
"""

from __future__ import annotations

import inspect
from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxseg.models.kernels import resolve_kernels

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str = ""):
    """Decorator registering ``factory(num_classes, **options) -> nn.Module`` under ``name``."""

    def decorator(factory):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = factory
        _DESCRIPTIONS[name] = description or (factory.__doc__ or "").strip().splitlines()[0]
        return factory

    return decorator


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def describe_model(name: str) -> str:
    """One-line description of a registered model."""
    _check_name(name)
    return _DESCRIPTIONS[name]


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")


def create_model(name: str, num_classes: int, *, kernels: str = "auto", devices: Iterable[jax.Device] | None = None,
                 **options) -> nn.Module:
    """Build the registered model ``name`` with ``num_classes`` outputs.

    Options depend on the family (see each factory), e.g. ``drop_path_rate``, ``normalize`` (bool: ImageNet
    mean/std inside the model), ``dtype`` (compute dtype such as ``jnp.bfloat16``; parameters stay float32),
    ``depthwise`` ('auto' | 'shift' | 'conv'; 'auto' follows ``kernels``).

    ``kernels`` picks the convolution kernels: ``'cpu'`` (explicit-gradient convolutions, Winograd 3x3, shifted
    depthwise: fast on XLA:CPU), ``'xla'`` (plain ``lax`` convolutions, for GPU/TPU), or ``'auto'``: ``'cpu'``
    when the model will run on CPU — ``devices``' platform if given, else ``jax.default_backend()`` — and
    ``'xla'`` otherwise. It is resolved here, once, and the modules store the concrete choice (e.g.
    ``model.backbone.kernels``); values, parameters and checkpoints do not depend on it, so it is a property of
    the run, not of the model, and checkpoint metadata do not record it.
    """
    _check_name(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
    factory = _REGISTRY[name]
    accepted = set(inspect.signature(factory).parameters) - {"num_classes"}
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(
            f"model {name!r} does not take option(s) {sorted(unknown)}; it accepts {sorted(accepted)}"
        )
    kernels = resolve_kernels(kernels, devices)
    if "kernels" in accepted:
        options["kernels"] = kernels
    if isinstance(options.get("dtype"), str):
        options["dtype"] = jnp.dtype(options["dtype"])
    return factory(num_classes, **options)


def init_variables(model: nn.Module, key: jax.Array, input_shape: tuple[int, ...]) -> dict:
    """Initialise all variables (``params``, ``batch_stats``) for float32 images of ``input_shape`` (B, H, W, 3).

    Runs the model in training mode (under ``jit``) so that training-only parts such as auxiliary heads get
    parameters too. Only the image shape matters: use batch 1 and the training crop size.
    """
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (B, H, W, C); got {input_shape}")
    params_key, dropout_key = jax.random.split(key)

    @jax.jit
    def init(params_key, dropout_key):
        return model.init({"params": params_key, "dropout": dropout_key}, jnp.zeros(input_shape, jnp.float32), train=True)

    return dict(init(params_key, dropout_key))


def count_parameters(tree) -> int:
    """Total number of scalars in a pytree of arrays (e.g. ``variables['params']``)."""
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(tree))
