"""The built-in default: UPerNet + ConvNeXt-atto on synthetic_shapes, trainable on a laptop CPU.

``synthetic`` trains clean; ``synthetic:pgd-at`` adversarially (PGD-AT, eps 4/255, 2 steps);
``synthetic:quick`` (or ``pgd-at,quick``) shrinks everything to a smoke-test budget.
"""

from jaxseg.config import apply_quick, default_config, parse_config_args


def get_config(arg: str = ""):
    options = parse_config_args(arg, {"clean", "pgd-at", "segpgd-at", "quick"}, "synthetic")
    config = default_config()
    config.train.recipe = next((o for o in ("pgd-at", "segpgd-at") if o in options), "clean")
    config.train.steps = 600
    config.train.batch_size = 16
    config.train.warmup_steps = 30
    if config.train.recipe == "segpgd-at":
        config.attack.loss = "segpgd"
        config.attack.eps = 8 / 255
        config.attack.steps = 3
        config.attack.random_start = True  # as segpgd_at_voc: SegPGD's uniform random start (Gu et al. 2022)
    if "quick" in options:
        apply_quick(config, size=32)
        config.data.name = "synthetic_shapes/32px"  # the 32 px scenes, not 64 px ones cropped
    return config
