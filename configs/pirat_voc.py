"""PIR-AT on PASCAL VOC 2012 (+SBD): UPerNet + ConvNeXt-T or -S with ConvStem, 50 epochs.

Croce, Singh & Hein, "Towards Reliable Evaluation and Fast Training of Robust Semantic Segmentation Models",
ECCV 2024 (arXiv 2306.12941); reference code github.com/nmndeep/Robust-Segmentation.
``pirat_voc`` (ConvNeXt-T), ``pirat_voc:s`` (ConvNeXt-S), ``pirat_voc:clean-init`` (AT from a clean/random
backbone for 300 epochs, the baseline PIR-AT beats), ``pirat_voc:2step`` (2 attack steps instead of 5, the
cheaper variant of the paper's Tab. 3), ``:quick`` for a CPU smoke run; options combine (``pirat_voc:t,2step``).
``model.init_from`` must point at a converted Linf-robust (4/255) ImageNet ConvNeXt + ConvStem, e.g. made with
``jaxseg convert convnext_t_cvst_robust.pt --out converted/convnext_t_cvst_linf4``.
Recipe as released in the reference code's ``configs/pascalvoc_convnext.yaml`` (the config its README names for
PASCAL-VOC adversarial training): PGD with ``N_ITERS: 5`` steps and a ``WARMUP: 10``-epoch linear warm-up for
the 50 epochs (the paper's Tab. 4 lists 5 warm-up epochs; we follow the released code). ``clean-init`` (300
epochs) keeps the code's warm-up ratio, 60 epochs, as its 300-epoch config ``configs/pascalvoc_cvst_clean.yaml``
had before its removal in commit d94583b (Tab. 4 lists 30). Otherwise as the paper's Sec. 4, Tab. 4 and
App. 0.B.2: AdamW (0.9, 0.999) lr 1e-3, wd 1e-2, poly 1.0, global batch 128, crop 473 from base size 512, flip,
blur, drop path 0.4 (T) / 0.3 (S); PGD eps 4/255, step 0.01, from delta = 0 (``semseg/val.py`` ``Pgd_Attack``), on
the model in eval mode, every image attacked; loss = main + 0.4 aux. Evaluation: SEA, short side 473.
"""

from jaxseg.config import apply_quick, default_config, parse_config_args

TRAIN_IMAGES = 10582  # VOC 2012 train + SBD ("train_aug")


def warmup_epochs(epochs: int) -> int:
    """Warm-up epochs of the reference code: 10 for 50 epochs (released), 60 for 300 (clean-init), i.e. 1/5."""
    return epochs // 5


def get_config(arg: str = ""):
    options = parse_config_args(arg, {"t", "s", "clean-init", "2step", "quick"}, "pirat_voc")
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
    config.train.warmup_steps = warmup_epochs(epochs) * TRAIN_IMAGES // 128
    config.train.learning_rate = 1e-3
    config.train.weight_decay = 1e-2
    config.train.eval_every = 1000
    config.train.checkpoint_every = 500
    config.attack.eps = 4 / 255
    config.attack.step_size = 0.01
    config.attack.steps = 2 if "2step" in options else 5
    config.attack.random_start = False  # PGD from delta = 0, as the reference Pgd_Attack
    config.evaluate.eps = (4 / 255, 8 / 255, 12 / 255)
    if "quick" in options:
        apply_quick(config)
    return config
