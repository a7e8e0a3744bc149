"""Adversarial attacks on segmentation models: PGD, SegPGD, CosPGD, APGD, PAdam and the SEA ensemble.

Every attack is a pure function ``attack(logits_fn, images, labels, key, *, eps, ...)`` compiled once per
input shape (see ``jaxseg.attacks.common`` for the calling convention; ``make_forward`` turns a ``logits_fn``
into the checked ``images -> logits`` function). Modules: ``losses`` (the cross-entropy with an ignore index
and the per-pixel attack losses by name), ``threat`` (Linf/L2 start, step, projection), ``pgd``, ``apgd``,
``padam``, ``sea``. What is exported here (and the ``threat`` module) is the public API the other rooms use.
"""

from jaxseg.attacks.apgd import APGDResult, apgd, apgd_checkpoints
from jaxseg.attacks.common import (
    AttackResult, ModelLogits, keep_best_loop, logits_function, make_forward, normalise_dtype,
)
from jaxseg.attacks.losses import (
    balanced_class_weights, get_loss, image_loss, pixel_cross_entropy, pixel_loss, segmentation_cross_entropy,
)
from jaxseg.attacks.padam import padam
from jaxseg.attacks.pgd import cospgd, pgd, segpgd
from jaxseg.attacks.sea import SEA_LOSSES, SEAResult, sea_attack, worst_case

__all__ = [
    "APGDResult", "AttackResult", "ModelLogits", "SEAResult", "SEA_LOSSES", "apgd", "apgd_checkpoints",
    "balanced_class_weights", "cospgd", "get_loss", "image_loss", "keep_best_loop", "logits_function",
    "make_forward", "normalise_dtype", "padam", "pgd", "pixel_cross_entropy", "pixel_loss", "sea_attack",
    "segmentation_cross_entropy", "segpgd", "worst_case",
]
