"""PIR-AT on PASCAL VOC 2012 (+SBD): UPerNet + ConvNeXt-T or -S with ConvStem, 50 epochs (Croce et al. 2024).

``pirat_voc`` (ConvNeXt-T), ``pirat_voc:s`` (ConvNeXt-S), ``pirat_voc:clean-init`` (AT from a clean/random
backbone for 300 epochs, the baseline PIR-AT beats), ``:quick`` for a CPU smoke run.
``model.init_from`` must point at a converted Linf-robust (4/255) ImageNet ConvNeXt + ConvStem, e.g. made with
``jaxseg convert convnext_t_cvst_robust.pt --out converted/convnext_t_cvst_linf4``.
Recipe (REFERENCE.md §6): AdamW (0.9, 0.999) lr 1e-3, wd 1e-2, poly 1.0 with 5 warm-up epochs, global batch
128, crop 473 from base size 512, scale 0.5-2, flip, blur, drop path 0.4 (T) / 0.3 (S); PGD eps 4/255, step
0.01, 2 steps from delta = 0, in eval mode; loss = main + 0.4 aux. Evaluation: SEA protocol, short side 473.
"""

from jaxseg.config import apply_quick, default_config, parse_config_args

TRAIN_IMAGES = 10582  # VOC 2012 train + SBD ("train_aug")


def get_config(arg: str = ""):
    options = parse_config_args(arg, {"t", "s", "clean-init", "quick"}, "pirat_voc")
    size = "s" if "s" in options else "t"
    config = default_config()
    config.model.name = f"upernet_convnext_{size}_cvst"
    config.model.num_classes = 21
    config.model.drop_path_rate = 0.3 if size == "s" else 0.4
    config.model.init_from = "" if "clean-init" in options else f"converted/convnext_{size}_cvst_linf4"
    config.data.name = "voc2012_seg"
    config.data.train_split = "train_aug"
    config.data.eval_split = "validation"
    config.data.crop_size = 473
    config.data.base_size = 512
    config.data.eval_protocol = "sea"
    config.data.eval_size = 473
    config.train.recipe = "pgd-at"
    config.train.batch_size = 128
    epochs = 300 if "clean-init" in options else 50
    config.train.steps = epochs * TRAIN_IMAGES // 128
    config.train.warmup_steps = 5 * TRAIN_IMAGES // 128
    config.train.learning_rate = 1e-3
    config.train.weight_decay = 1e-2
    config.train.eval_every = 1000
    config.train.checkpoint_every = 500
    config.attack.eps = 4 / 255
    config.attack.step_size = 0.01
    config.attack.steps = 2
    config.evaluate.eps = (4 / 255, 8 / 255, 12 / 255)
    if "quick" in options:
        apply_quick(config)
    return config
