"""Cityscapes fine annotations, labelIds mapped to the 19 evaluation train ids (everything else 255)."""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxseg.data.builders.common import read_example, segmentation_features
from jaxseg.data.decode import require_files, require_paths
from jaxseg.validation import DEFAULT_IGNORE_INDEX

EXPECTED_PATHS = ("leftImg8bit/train", "leftImg8bit/val", "gtFine/train", "gtFine/val")

# labelId → trainId of the official cityscapesScripts `labels.py`; ids not listed are ignored.
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


def train_id_table() -> np.ndarray:
    """uint8 (256,) lookup table: ``table[label_id]`` is the train id, 255 where ignored."""
    table = np.full(256, DEFAULT_IGNORE_INDEX, np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table


# TFDS ships its own (lazily registered) `cityscapes` builder; if it was loaded before this module, ours
# stays unregistered instead of failing the import (jaxseg reads prepared data without the registry).
_NAME_TAKEN = "cityscapes" in tfds.core.registered._DATASET_REGISTRY


class Cityscapes(tfds.core.GeneratorBasedBuilder, skip_registration=_NAME_TAKEN):
    """Cityscapes ``train`` (2975) and ``validation`` (500) splits; 19 classes, 255 ignored."""

    name = "cityscapes"
    VERSION = tfds.core.Version("1.0.0")
    # TFDS derives this from the package and needs `importlib_resources` to do so for installed
    # packages; this module's path is the same answer without that dependency.
    code_path = epath.Path(__file__)
    EXPECTED_PATHS = EXPECTED_PATHS
    RELEASE_NOTES = {"1.0.0": "leftImg8bit + gtFine labelIds → 19 train ids."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Extract leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip into the manual directory, giving:\n  "
        + "\n  ".join(f"{p}/CITY/*" for p in EXPECTED_PATHS)
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Cityscapes fine segmentation, 19 train-id classes, 255 = ignored.",
            features=segmentation_features(),
            homepage="https://www.cityscapes-dataset.com/",
        )

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        require_paths(root, EXPECTED_PATHS, "cityscapes")
        plans = {}
        for split, folder in (("train", "train"), ("validation", "val")):
            plan = []
            image_root = os.path.join(root, "leftImg8bit", folder)
            for city in sorted(os.listdir(image_root)):
                for file_name in sorted(os.listdir(os.path.join(image_root, city))):
                    if not file_name.endswith("_leftImg8bit.png"):
                        continue
                    stem = file_name[: -len("_leftImg8bit.png")]
                    label_path = os.path.join(root, "gtFine", folder, city, f"{stem}_gtFine_labelIds.png")
                    plan.append((stem, os.path.join(image_root, city, file_name), label_path))
            require_files([label for _, _, label in plan], f"cityscapes {split} gtFine labelIds")
            plans[split] = plan
        return {split: self._generate_examples(plan) for split, plan in plans.items()}

    def _generate_examples(self, plan):
        table = train_id_table()
        for example_id, image_path, label_path in plan:
            yield example_id, read_example(example_id, image_path, label_path, label_map=table)
