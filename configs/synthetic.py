"""The built-in default: UPerNet + ConvNeXt-atto on synthetic_shapes, trainable on a laptop CPU.

``synthetic`` trains clean; ``synthetic:pgd-at`` adversarially (PGD-AT, eps 4/255, 2 steps);
``synthetic:quick`` (or ``pgd-at,quick``) shrinks everything to a smoke-test budget.
"""

from jaxseg.config import default_config


def get_config(arg: str = ""):
    options = set(filter(None, arg.split(",")))
    unknown = options - {"clean", "pgd-at", "segpgd-at", "quick"}
    if unknown:
        raise ValueError(f"synthetic config: unknown arg(s) {sorted(unknown)}; use clean, pgd-at, segpgd-at, quick")
    config = default_config()
    config.train.recipe = next((o for o in ("pgd-at", "segpgd-at") if o in options), "clean")
    config.train.steps = 600
    config.train.batch_size = 16
    config.train.warmup_steps = 30
    if config.train.recipe == "segpgd-at":
        config.attack.loss = "segpgd"
        config.attack.eps = 8 / 255
        config.attack.steps = 3
    if "quick" in options:
        config.train.steps = 4
        config.train.batch_size = 8
        config.train.warmup_steps = 1
        config.train.log_every = 1
        config.train.eval_every = 2
        config.train.checkpoint_every = 2
        config.train.eval_examples = 8
        config.train.robust_eval_iterations = 2
        config.data.crop_size = 32
        config.data.base_size = 32
        config.data.eval_size = 32
        config.evaluate.iterations = 4
        config.evaluate.batch_size = 8
    return config
