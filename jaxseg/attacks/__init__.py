"""Adversarial attacks on segmentation models: PGD, SegPGD, CosPGD, APGD, PAdam and the SEA ensemble.

Every attack is a pure function ``attack(logits_fn, images, labels, key, *, eps, ...)`` compiled once per
input shape (see ``jaxseg.attacks.common`` for the calling convention). Modules: ``losses`` (per-pixel losses
by name), ``threat`` (Linf/L2 start, step, projection), ``pgd``, ``apgd``, ``padam``, ``sea``.
"""

from jaxseg.attacks.apgd import APGDResult, apgd, apgd_checkpoints
from jaxseg.attacks.common import AttackResult, ModelLogits, logits_function
from jaxseg.attacks.losses import balanced_class_weights, get_loss, image_loss, pixel_loss
from jaxseg.attacks.padam import padam
from jaxseg.attacks.pgd import cospgd, pgd, segpgd
from jaxseg.attacks.sea import SEA_LOSSES, SEAResult, sea_attack, worst_case

__all__ = [
    "APGDResult", "AttackResult", "ModelLogits", "SEAResult", "SEA_LOSSES", "apgd", "apgd_checkpoints",
    "balanced_class_weights", "cospgd", "get_loss", "image_loss", "logits_function", "padam", "pgd",
    "pixel_loss", "sea_attack", "segpgd", "worst_case",
]
