"""Models by name. ``create_model(name, num_classes, **options)`` → Flax module; ``init_variables`` → variables.

Importing this package registers every model family.
"""

from jaxseg.models.registry import count_parameters, create_model, describe_model, init_variables, list_models, register_model
from jaxseg.models import convnext_models  # noqa: F401  (registers the ConvNeXt family)
from jaxseg.models import resnet_vit_models  # noqa: F401  (registers ResNet-50/PSPNet and ViT-S/Segmenter)

__all__ = ["count_parameters", "create_model", "describe_model", "init_variables", "list_models", "register_model"]
