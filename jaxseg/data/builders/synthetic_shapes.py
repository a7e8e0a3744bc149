"""The built-in default dataset: procedurally generated shape scenes (see ``jaxseg.data.shapes``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxseg.data.builders.common import segmentation_features
from jaxseg.data.shapes import render_scene

SPLITS = ("train", "validation", "test")
DEFAULT_SPLIT_SIZES = {"train": 2048, "validation": 256, "test": 256}


@dataclasses.dataclass(eq=False)
class SyntheticShapesConfig(tfds.core.BuilderConfig):
    """Image side in pixels, examples per split and the generation seed."""

    image_size: int = 64
    num_train: int = DEFAULT_SPLIT_SIZES["train"]
    num_validation: int = DEFAULT_SPLIT_SIZES["validation"]
    num_test: int = DEFAULT_SPLIT_SIZES["test"]
    seed: int = 0


def synthetic_config(
    image_size: int = 64,
    num_train: int = DEFAULT_SPLIT_SIZES["train"],
    num_validation: int = DEFAULT_SPLIT_SIZES["validation"],
    num_test: int = DEFAULT_SPLIT_SIZES["test"],
    seed: int = 0,
) -> SyntheticShapesConfig:
    """The config for these options, named ``{size}px`` (plus ``-n..-seed..`` when counts/seed differ)."""
    for key, value in (
        ("image_size", image_size),
        ("num_train", num_train),
        ("num_validation", num_validation),
        ("num_test", num_test),
    ):
        if not isinstance(value, (int, np.integer)) or value < (8 if key == "image_size" else 1):
            raise ValueError(f"synthetic_shapes: {key} must be a positive int (image_size >= 8), got {value!r}")
    name = f"{image_size}px"
    counts = (num_train, num_validation, num_test)
    if counts != tuple(DEFAULT_SPLIT_SIZES.values()) or seed != 0:
        name += f"-n{num_train}-{num_validation}-{num_test}-seed{seed}"
    return SyntheticShapesConfig(
        name=name,
        description=f"{image_size}x{image_size} scenes, {num_train}/{num_validation}/{num_test} examples, seed {seed}",
        image_size=int(image_size),
        num_train=int(num_train),
        num_validation=int(num_validation),
        num_test=int(num_test),
        seed=int(seed),
    )


class SyntheticShapes(tfds.core.GeneratorBasedBuilder):
    """Background + 5 shape classes; example i of split s is rendered from ``default_rng([seed, s, i])``."""

    name = "synthetic_shapes"
    VERSION = tfds.core.Version("1.0.0")
    # TFDS derives this from the package and needs `importlib_resources` to do so for installed
    # packages; this module's path is the same answer without that dependency.
    code_path = epath.Path(__file__)
    RELEASE_NOTES = {"1.0.0": "Textured discs, squares, triangles, rings and bars on cluttered backgrounds."}
    BUILDER_CONFIGS = [synthetic_config(64), synthetic_config(96), synthetic_config(32)]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Synthetic segmentation scenes: background, disc, square, triangle, ring, bar.",
            features=segmentation_features(self.builder_config.image_size),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download or read
        config = self.builder_config
        counts = (config.num_train, config.num_validation, config.num_test)
        return {
            split: self._generate_examples(index, split, count)
            for index, (split, count) in enumerate(zip(SPLITS, counts, strict=True))
        }

    def _generate_examples(self, split_index: int, split: str, count: int):
        config = self.builder_config
        for index in range(count):
            image, label = render_scene(np.random.default_rng([config.seed, split_index, index]), config.image_size)
            example_id = f"{split}-{index:06d}"
            yield example_id, {"image": image, "label": label, "id": example_id}
