"""PASCAL VOC 2012 segmentation, with the SBD-augmented training set (``train_aug``, 10582 images) when SBD is
present.

Evaluation needs only the VOC 2012 archive (``train`` and ``validation``); ``train_aug`` additionally needs SBD's
``benchmark.tgz`` (1.4 GB), which only training on ``train_aug`` uses. A VOC-only directory prepares
``train``/``validation``; to add ``train_aug`` later, extract SBD beside VOC, delete the prepared
``voc2012_seg`` directory and prepare again.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds
from etils import epath

from jaxseg.data.builders.common import read_example, segmentation_features
from jaxseg.data.decode import read_ids, require_files, require_paths

VOC_ROOT = "VOCdevkit/VOC2012"
SBD_ROOT = "benchmark_RELEASE/dataset"
EXPECTED_PATHS = (
    f"{VOC_ROOT}/JPEGImages",
    f"{VOC_ROOT}/SegmentationClass",
    f"{VOC_ROOT}/ImageSets/Segmentation/train.txt",
    f"{VOC_ROOT}/ImageSets/Segmentation/val.txt",
)
SBD_PATHS = (f"{SBD_ROOT}/cls", f"{SBD_ROOT}/train.txt", f"{SBD_ROOT}/val.txt")


class Voc2012Seg(tfds.core.GeneratorBasedBuilder):
    """VOC 2012 ``train`` (1464), ``validation`` (1449) and, with SBD, ``train_aug`` (10582) splits; 21 classes.

    Labels: 0 background, 1..20 objects, 255 boundary/void (VOC PNGs only; SBD has no boundary label).
    ``train_aug`` = (SBD train ∪ SBD val ∪ VOC train) minus VOC val. Images come from VOC's JPEGImages
    (SBD's own ``img/`` when VOC lacks one); labels from VOC's PNG where VOC has one (VOC train ids), else
    from SBD's ``cls/ID.mat``.
    """

    name = "voc2012_seg"
    VERSION = tfds.core.Version("1.0.0")
    # TFDS derives this from the package and needs `importlib_resources` to do so for installed
    # packages; this module's path is the same answer without that dependency.
    code_path = epath.Path(__file__)
    EXPECTED_PATHS = EXPECTED_PATHS
    RELEASE_NOTES = {"1.0.0": "VOC 2012 train/val and the SBD-augmented train_aug split."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Extract VOCtrainval_11-May-2012.tar into the manual directory, giving:\n  " + "\n  ".join(EXPECTED_PATHS)
        + "\nand, for the train_aug split only, SBD's benchmark.tgz beside it, giving:\n  " + "\n  ".join(SBD_PATHS)
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="PASCAL VOC 2012 semantic segmentation (21 classes, 255 = boundary) with SBD train_aug.",
            features=segmentation_features(),
            homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        )

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        require_paths(root, EXPECTED_PATHS, "voc2012_seg")
        voc, sbd = os.path.join(root, VOC_ROOT), os.path.join(root, SBD_ROOT)
        voc_train = read_ids(os.path.join(voc, "ImageSets/Segmentation/train.txt"))
        voc_val = read_ids(os.path.join(voc, "ImageSets/Segmentation/val.txt"))
        voc_train_set = set(voc_train)

        def image_path(example_id: str) -> str:
            path = os.path.join(voc, "JPEGImages", f"{example_id}.jpg")
            sbd_path = os.path.join(sbd, "img", f"{example_id}.jpg")
            return path if os.path.isfile(path) or not os.path.isfile(sbd_path) else sbd_path

        def voc_plan(ids):
            return [(i, image_path(i), os.path.join(voc, "SegmentationClass", f"{i}.png")) for i in ids]

        def aug_label(example_id: str) -> str:
            if example_id in voc_train_set:
                return os.path.join(voc, "SegmentationClass", f"{example_id}.png")
            return os.path.join(sbd, "cls", f"{example_id}.mat")

        plans = {"train": voc_plan(voc_train), "validation": voc_plan(voc_val)}
        if any(os.path.exists(os.path.join(root, path)) for path in SBD_PATHS):  # a partial SBD is an error
            require_paths(root, SBD_PATHS, "voc2012_seg train_aug (SBD)")
            sbd_ids = read_ids(os.path.join(sbd, "train.txt")) + read_ids(os.path.join(sbd, "val.txt"))
            train_aug = sorted((set(sbd_ids) | voc_train_set) - set(voc_val))
            plans["train_aug"] = [(i, image_path(i), aug_label(i)) for i in train_aug]
        for split, plan in plans.items():
            require_files([p for _, image, label in plan for p in (image, label)], f"voc2012_seg {split}")
        return {split: self._generate_examples(plan) for split, plan in plans.items()}

    def _generate_examples(self, plan):
        for example_id, image_path, label_path in plan:
            yield example_id, read_example(example_id, image_path, label_path)
