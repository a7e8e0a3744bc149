"""PIR-AT on ADE20K: UPerNet + ConvNeXt-T or -S with ConvStem, 32 epochs (Croce et al. 2024).

``pirat_ade20k`` (T), ``pirat_ade20k:s``, ``pirat_ade20k:clean-init`` (AT from a clean init, 128 epochs),
``:quick`` for a CPU smoke run. ``model.init_from``: a converted Linf-robust ImageNet ConvNeXt + ConvStem.
Recipe as ``pirat_voc`` with crop 512 from base 520, 20 warm-up epochs, 151 classes (0 = "other" is a class),
SEA protocol at 512 with nothing ignored.
"""

from jaxseg.config import apply_quick, default_config, parse_config_args

TRAIN_IMAGES = 20210


def get_config(arg: str = ""):
    options = parse_config_args(arg, {"t", "s", "clean-init", "quick"}, "pirat_ade20k")
    size = "s" if "s" in options else "t"
    config = default_config()
    config.model.name = f"upernet_convnext_{size}_cvst"
    config.model.num_classes = 151
    config.model.drop_path_rate = 0.3 if size == "s" else 0.4
    config.model.init_from = "" if "clean-init" in options else f"converted/convnext_{size}_cvst_linf4"
    config.data.name = "ade20k"
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    config.data.crop_size = 512
    config.data.base_size = 520
    config.data.eval_protocol = "sea"
    config.data.eval_size = 512
    config.train.recipe = "pgd-at"
    config.train.batch_size = 128
    epochs = 128 if "clean-init" in options else 32
    config.train.steps = epochs * TRAIN_IMAGES // 128
    config.train.warmup_steps = 20 * TRAIN_IMAGES // 128
    config.train.eval_every = 1000
    config.train.checkpoint_every = 500
    config.attack.eps = 4 / 255
    config.attack.step_size = 0.01
    config.attack.steps = 2
    config.evaluate.eps = (4 / 255, 8 / 255, 12 / 255)
    if "quick" in options:
        apply_quick(config)
    return config
