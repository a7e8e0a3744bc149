"""ADE20K SceneParsing (ADEChallengeData2016): 150 classes + "other" (0), stored raw as labels 0..150."""

from __future__ import annotations

import os

import tensorflow_datasets as tfds
from etils import epath

from jaxseg.data.builders.common import read_example, segmentation_features
from jaxseg.data.decode import require_files, require_paths

ROOT = "ADEChallengeData2016"
EXPECTED_PATHS = tuple(
    f"{ROOT}/{kind}/{split}" for split in ("training", "validation") for kind in ("images", "annotations")
)


class Ade20k(tfds.core.GeneratorBasedBuilder):
    """ADE20K ``train`` (20210) and ``validation`` (2000) splits; labels 0..150 (0 = other, a class here)."""

    name = "ade20k"
    VERSION = tfds.core.Version("1.0.0")
    # TFDS derives this from the package and needs `importlib_resources` to do so for installed
    # packages; this module's path is the same answer without that dependency.
    code_path = epath.Path(__file__)
    EXPECTED_PATHS = EXPECTED_PATHS
    RELEASE_NOTES = {"1.0.0": "ADEChallengeData2016 training/validation."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Extract ADEChallengeData2016.zip into the manual directory, giving:\n  " + "\n  ".join(EXPECTED_PATHS)
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="ADE20K scene parsing, 150 classes plus 'other' (label 0), labels stored raw.",
            features=segmentation_features(),
            homepage="http://sceneparsing.csail.mit.edu/",
        )

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        require_paths(root, EXPECTED_PATHS, "ade20k")
        plans = {}
        for split, folder in (("train", "training"), ("validation", "validation")):
            image_dir = os.path.join(root, ROOT, "images", folder)
            label_dir = os.path.join(root, ROOT, "annotations", folder)
            ids = sorted(f[: -len(".jpg")] for f in os.listdir(image_dir) if f.endswith(".jpg"))
            plans[split] = [(i, os.path.join(image_dir, f"{i}.jpg"), os.path.join(label_dir, f"{i}.png")) for i in ids]
            require_files([label for _, _, label in plans[split]], f"ade20k {split} annotations")
        return {split: self._generate_examples(plan) for split, plan in plans.items()}

    def _generate_examples(self, plan):
        for example_id, image_path, label_path in plan:
            yield example_id, read_example(example_id, image_path, label_path)
