"""PyTorch → Flax weight conversion: ``convert_checkpoint(src)`` → ``(variables, metadata)``.

One module per source family, each with a mapping table (``jaxseg.convert.common.Rule``): ``timm_convnext``,
``revisiting_at`` (robust ConvNeXt + ConvStem), ``pirat_upernet``, ``pirat_segmenter``, ``resnet`` (torchvision /
RobustBench ResNet-50 and PSPNet) and ``vit`` (timm ViT-S/16). The family is detected from the keys unless
given. The resulting variables are exactly those of ``jaxseg.models.create_model(metadata['model'],
metadata['num_classes'], **metadata['options'])`` and can be saved with ``jaxseg.checkpoint.save_variables``.
"""

from __future__ import annotations

from pathlib import Path

import jax

from jaxseg.convert import pirat_segmenter, pirat_upernet, resnet, revisiting_at, timm_convnext, vit
from jaxseg.convert.common import (
    Family, apply_table, load_state_dict, sha256_of, split_normalization, strip_wrapper_prefixes,
)
from jaxseg.models import create_model, init_variables

# Order matters: the more specific layouts first (revisiting_at before timm_convnext, pspnet before resnet).
FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        pirat_upernet.FAMILY,
        pirat_segmenter.FAMILY,
        resnet.PSPNET_FAMILY,
        revisiting_at.FAMILY,
        timm_convnext.FAMILY,
        vit.FAMILY,
        resnet.RESNET_FAMILY,
    )
}
ABSTRACT_INPUT_SHAPE = (1, 64, 64, 3)  # only fixes the variable shapes; valid for every registered family


def list_families() -> dict[str, str]:
    """{family name: description of its source layout}."""
    return {name: family.description for name, family in FAMILIES.items()}


def detect_family(state_dict_keys) -> str:
    """Name of the source family whose layout the keys follow (wrapper prefixes such as ``module.`` ignored).

    Raises ``ValueError`` naming the known families when none matches.
    """
    keys = set(strip_wrapper_prefixes(dict.fromkeys(state_dict_keys)))
    for name, family in FAMILIES.items():
        if family.detect(keys):
            return name
    sample = ", ".join(sorted(keys)[:8])
    raise ValueError(
        f"cannot tell which model family these {len(keys)} keys belong to (first: {sample}); known families: "
        + "; ".join(f"{name}: {family.description}" for name, family in FAMILIES.items())
    )


def convert_checkpoint(
    src: str | Path,
    family: str | None = None,
    model: str | None = None,
    num_classes: int | None = None,
    normalize: bool | None = None,
) -> tuple[dict, dict]:
    """Convert a PyTorch checkpoint file to Flax variables for a registered jaxseg model.

    Args:
      src: ``.safetensors`` or ``.pt/.pth/.bin/.ckpt`` file (the latter read with ``weights_only=True``).
      family, model, num_classes, normalize: as in ``convert_state_dict``.

    Returns:
      ``(variables, metadata)`` as ``convert_state_dict``, with ``source`` (absolute path) and ``sha256`` of the
      file added to the metadata.

    Raises:
      FileNotFoundError: ``src`` does not exist.
      ValueError: unreadable or refused file, unknown family or model, or a key/shape mismatch (all listed).
    """
    path = Path(src)
    variables, metadata = convert_state_dict(load_state_dict(path), family, model, num_classes, normalize, name=str(path))
    metadata.update(source=str(path.resolve()), sha256=sha256_of(path))
    return variables, metadata


def convert_state_dict(
    state_dict,
    family: str | None = None,
    model: str | None = None,
    num_classes: int | None = None,
    normalize: bool | None = None,
    name: str = "state dict",
) -> tuple[dict, dict]:
    """Convert a {PyTorch key: numpy array} state dict to Flax variables for a registered jaxseg model.

    Args:
      state_dict: the tensors, keys possibly wrapped in ``module.`` / ``base_model.`` / ``model.`` prefixes.
      family: source layout (see ``list_families``); detected from the keys when None.
      model: registry name to convert to; inferred from the keys and shapes when None (e.g. the ConvNeXt size
        from depths and dims, ConvStem from the key names).
      num_classes: expected number of classes; inferred from the classifier shape, and an error if they differ.
      normalize: whether the model normalises inputs with ImageNet mean/std; by default True when the
        checkpoint carries ``normalize.mean/std`` buffers, else the family's convention (False for PIR-AT).
      name: how error messages refer to the checkpoint.

    Returns:
      ``(variables, metadata)``: ``{'params': ..., 'batch_stats': ...}`` float32 numpy pytrees, and a JSON-ready
      dict with ``model``, ``num_classes``, ``options`` (for ``create_model``) and ``family``.
    """
    state_dict = strip_wrapper_prefixes(state_dict)
    if family is None:
        family = detect_family(state_dict)
    elif family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known families: {', '.join(FAMILIES)}")
    source = FAMILIES[family]
    hint = _detected_hint(state_dict, family)
    state_dict, has_normalization = split_normalization(state_dict)
    try:
        spec = source.infer(state_dict)
    except ValueError as error:
        raise ValueError(f"{name} does not look like a {family} checkpoint: {error}{hint}") from error
    if model is not None:
        spec.model = model
    if num_classes is not None and num_classes != spec.num_classes:
        raise ValueError(f"{name} has a {spec.num_classes}-class classifier, but num_classes={num_classes} was asked for")
    if normalize is None:
        normalize = has_normalization or source.normalize
    options = {"normalize": bool(normalize), **spec.options}
    module = create_model(spec.model, spec.num_classes, **options)
    expected = jax.eval_shape(lambda: init_variables(module, jax.random.key(0), ABSTRACT_INPUT_SHAPE))
    context = f"{name} (family {family}) to model {spec.model!r} with {spec.num_classes} classes{hint}"
    variables = apply_table(state_dict, source.table, expected, context)
    return variables, {"model": spec.model, "num_classes": spec.num_classes, "options": options, "family": family}


def _detected_hint(state_dict, family: str) -> str:
    try:
        detected = detect_family(state_dict)
    except ValueError:
        return ""
    return f" (its keys look like family {detected!r})" if detected != family else ""


__all__ = ["FAMILIES", "convert_checkpoint", "convert_state_dict", "detect_family", "list_families"]


def convert_to_directory(src: str | Path, out: str | Path, *, family: str | None = None, model: str | None = None,
                         num_classes: int | None = None, normalize: bool | None = None) -> str:
    """``jaxseg convert``: convert ``src`` (``convert_checkpoint``) and save it as a variables checkpoint in the new
    or empty directory ``out`` (checked before anything is read); returns a one-line description."""
    from jaxseg import arguments
    from jaxseg.checkpoint import save_variables
    from jaxseg.models import count_parameters

    arguments.check_new_dir(out)
    variables, metadata = convert_checkpoint(src, family=family, model=model, num_classes=num_classes,
                                             normalize=normalize)
    directory = save_variables(out, variables, metadata)
    return (f"converted {src} ({metadata['family']}) to {metadata['model']} with {metadata['num_classes']} classes, "
            f"{count_parameters(variables['params']):,} parameters, options {metadata['options']}: {directory}")
