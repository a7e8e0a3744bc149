"""SegPGD-AT (Gu, Zhao, Tresp & Torr, ECCV 2022, arXiv 2207.12391): PSPNet + dilated ResNet-50 on VOC 2012 (+SBD).

The recipe of the paper's Sec. 3.3 "Segmentation Adversarial Training with SegPGD": each batch is split in
halves, one half attacked with SegPGD and one kept clean (the 50% clean / 50% adversarial split is also how
Croce, Singh & Hein, ECCV 2024, App. 0.B.2, describe SegPGD-AT), and the training objective is the sum of the two
parts, L = L_clean + L_adv (``attack.segpgd_at_loss = "sum"``: each part a per-pixel mean over its half, with the
auxiliary head at 0.4). SegPGD starts from a uniform random point of the eps-ball, x_0 = x + U(-eps, eps), as in
the paper's Algorithm 1 (``attack.random_start = True``; PGD-AT/PIR-AT configs start at delta = 0). Attack:
eps 8/255, step 0.01, 3 steps (``:7`` for 7 steps). SGD momentum 0.9, lr 0.01, wd 5e-4, poly 0.9, batch 16, 20k
steps, crop 512, ImageNet normalisation inside the model. ``model.init_from`` may point at a converted (clean or
robust) ImageNet ResNet-50. ``:quick`` for a CPU smoke run.
"""

from jaxseg.config import apply_quick, default_config, parse_config_args


def get_config(arg: str = ""):
    options = parse_config_args(arg, {"3", "7", "quick"}, "segpgd_at_voc")
    config = default_config()
    config.model.name = "pspnet_resnet50"
    config.model.num_classes = 21
    config.model.normalize = True
    config.data.name = "voc2012_seg"
    config.data.train_split = "train_aug"
    config.data.crop_size = 512
    config.data.base_size = 512
    config.data.eval_protocol = "standard"
    config.data.eval_size = 512
    config.train.recipe = "segpgd-at"
    config.train.optimizer = "sgd"
    config.train.learning_rate = 0.01
    config.train.weight_decay = 5e-4
    config.train.schedule_power = 0.9
    config.train.batch_size = 16
    config.train.steps = 20000
    config.train.warmup_steps = 0
    config.attack.loss = "segpgd"
    config.attack.eps = 8 / 255
    config.attack.step_size = 0.01
    config.attack.steps = 7 if "7" in options else 3
    config.attack.random_start = True  # Gu et al. 2022, Algorithm 1: x_0 = x + U(-eps, eps)
    config.attack.segpgd_at_loss = "sum"  # Gu et al. 2022, Sec. 3.3: L = L_clean + L_adv
    config.evaluate.eps = (4 / 255, 8 / 255)
    if "quick" in options:
        apply_quick(config)
    return config
