"""Label statistics of a prepared split: pixel counts per class and the balanced-loss class weights."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxseg.data.info import dataset_info
from jaxseg.data.storage import open_split


@dataclasses.dataclass(frozen=True, eq=False)
class SplitStatistics:
    """Counts over the stored (unresized) label maps of a split.

    Attributes:
      num_examples: examples counted.
      pixel_counts: int64 (K,) pixels per class.
      ignored_pixels: pixels with the ignore label (255).
      unknown_pixels: pixels with any other value outside [0, K) (0 for well-formed data).
      min_size, max_size: smallest and largest (height, width) seen.
    """

    name: str
    split: str
    num_examples: int
    pixel_counts: np.ndarray
    ignored_pixels: int
    unknown_pixels: int
    min_size: tuple[int, int]
    max_size: tuple[int, int]

    @property
    def frequencies(self) -> np.ndarray:
        """float64 (K,) share of each class among the labelled (non-ignored, known) pixels."""
        return self.pixel_counts / max(int(self.pixel_counts.sum()), 1)

    def to_json_dict(self) -> dict:
        """Plain-Python form for JSON: counts and frequencies keyed by class name."""
        names = dataset_info(self.name).class_names
        return {
            "name": self.name,
            "split": self.split,
            "num_examples": self.num_examples,
            "ignored_pixels": self.ignored_pixels,
            "unknown_pixels": self.unknown_pixels,
            "min_size": list(self.min_size),
            "max_size": list(self.max_size),
            "pixel_counts": {n: int(c) for n, c in zip(names, self.pixel_counts, strict=True)},
            "frequencies": {n: float(f) for n, f in zip(names, self.frequencies, strict=True)},
        }


def split_statistics(name: str, split: str, *, data_dir=None, num_examples: int | None = None) -> SplitStatistics:
    """Counts the labels of the first ``num_examples`` (None or 0: all) examples of a prepared split."""
    info = dataset_info(name)
    source = open_split(name, split, data_dir)
    total = len(source) if not num_examples else min(int(num_examples), len(source))
    histogram = np.zeros(256, np.int64)
    heights, widths = [], []
    for index in range(total):
        label = source[index]["label"]
        histogram += np.bincount(label.ravel(), minlength=256)
        heights.append(label.shape[0])
        widths.append(label.shape[1])
    if total == 0:
        raise ValueError(f"{name} split {split!r} has no examples")
    # The ignore label (255) lies above every class range, so it is inside histogram[K:]: take it out.
    unknown = histogram[info.num_classes :].sum() - histogram[info.ignore_index]
    return SplitStatistics(
        name=name,
        split=split,
        num_examples=total,
        pixel_counts=histogram[: info.num_classes].copy(),
        ignored_pixels=int(histogram[info.ignore_index]),
        unknown_pixels=int(unknown),
        min_size=(min(heights), min(widths)),
        max_size=(max(heights), max(widths)),
    )


def inverse_frequency_weights(pixel_counts: np.ndarray) -> np.ndarray:
    """float32 (K,) weights w_c ∝ 1 / N_c normalised to sum 1; classes with N_c = 0 get weight 0."""
    counts = np.asarray(pixel_counts, np.float64)
    inverse = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    total = inverse.sum()
    if total == 0:
        raise ValueError("no labelled pixels: class weights are undefined")
    return (inverse / total).astype(np.float32)


def class_weights(name: str, split: str, *, data_dir=None, num_examples: int | None = None) -> np.ndarray:
    """Inverse-frequency class weights (the kind SEA's ``mask-ce-bal`` uses) of a split: float32 (K,), sum 1.

    w_c ∝ 1 / N_c with N_c the number of pixels of class c in the stored label maps of the first
    ``num_examples`` examples (None: all); ignored pixels (255) count for no class. A class with no pixels
    gets weight 0 (it cannot be attacked there anyway), and the others are normalised to sum 1.
    """
    statistics = split_statistics(name, split, data_dir=data_dir, num_examples=num_examples)
    return inverse_frequency_weights(statistics.pixel_counts)
