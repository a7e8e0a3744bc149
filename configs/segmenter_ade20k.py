"""PIR-AT Segmenter + ViT-S/16 on ADE20K (Croce et al. 2024; Segmenter of Strudel et al. 2021).

``model.init_from``: a converted Linf-robust ImageNet ViT-S/16. SGD (momentum 0.9) lr 1e-3 with poly decay as
in Segmenter, global batch 128, crop 512, 32 epochs; PGD eps 4/255, step 0.01, 2 steps; ``:quick`` for CPU.
"""

from jaxseg.config import apply_quick, default_config, parse_config_args

TRAIN_IMAGES = 20210


def get_config(arg: str = ""):
    options = parse_config_args(arg, {"quick"}, "segmenter_ade20k")
    config = default_config()
    config.model.name = "segmenter_vit_s"
    config.model.num_classes = 151
    config.model.drop_path_rate = 0.1
    config.model.init_from = "converted/vit_s16_linf4"
    config.data.name = "ade20k"
    config.data.crop_size = 512
    config.data.base_size = 520
    config.data.eval_protocol = "sea"
    config.data.eval_size = 512
    config.train.recipe = "pgd-at"
    config.train.optimizer = "sgd"
    config.train.learning_rate = 1e-3
    config.train.weight_decay = 0.0
    config.train.batch_size = 128
    config.train.steps = 32 * TRAIN_IMAGES // 128
    config.train.warmup_steps = 0
    config.attack.eps = 4 / 255
    config.attack.step_size = 0.01
    config.attack.steps = 2
    config.evaluate.eps = (4 / 255, 8 / 255, 12 / 255)
    if "quick" in options:
        apply_quick(config)
    return config
