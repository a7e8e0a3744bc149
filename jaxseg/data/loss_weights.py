"""Class weights of SEA's balanced masked cross-entropy (``mask-ce-bal``): published tables and training-split
weights stored with a prepared dataset.

SEA (Croce, Singh, Hein, ECCV 2024) weights each pixel's masked cross-entropy by a fixed per-class weight of
the dataset. For PASCAL VOC and ADE20K the reference implementation ships fixed tables; jaxseg ships them as
package data (``tables/sea_class_weights.json``, with their provenance) and uses them for ``voc2012_seg`` and
``ade20k``. Both tables index classes as jaxseg does (VOC: 0 = background; ADE20K: 0 = "other", then the 150
SceneParsing classes), so class ids map one to one. Every other dataset gets weights of the same kind from the
pixel counts of its training split, w_c ∝ 1 / n_c normalised to sum 1 (classes absent from training get 0),
computed on first use and stored beside the prepared dataset in ``CLASS_WEIGHTS_FILE`` (``jaxseg data stats``
shows them).

The evaluation modes (``jaxseg evaluate --class-weights``): ``dataset`` (the above), ``image`` (each image's
own label frequencies, the attack computes them) or the path of a JSON file with a list of K weights (or an
object with a ``class_weights`` list).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import pathlib

import numpy as np

from jaxseg.data.info import base_name, dataset_info
from jaxseg.data.stats import inverse_frequency_weights, split_statistics
from jaxseg.data.storage import prepared_directory
from jaxseg.validation import valid_mask

PUBLISHED_TABLES = "tables/sea_class_weights.json"
CLASS_WEIGHTS_FILE = "jaxseg_class_weights.json"
MODES = ("dataset", "image")


@dataclasses.dataclass(frozen=True)
class ClassWeights:
    """Weights for ``mask-ce-bal`` and where they come from.

    values: float32 (K,) summing to 1, or None for the per-image mode. mode: "dataset", "image" or "file".
    source: one line saying where the values come from (recorded in results.json).
    """

    values: np.ndarray | None
    mode: str
    source: str

    def to_json_dict(self) -> dict:
        values = None if self.values is None else [float(v) for v in self.values]
        return {"mode": self.mode, "source": self.source, "values": values}


def _published_tables() -> dict:
    text = importlib.resources.files("jaxseg.data").joinpath(PUBLISHED_TABLES).read_text(encoding="utf-8")
    return json.loads(text)


def published_class_weights(name: str) -> np.ndarray | None:
    """The SEA reference's fixed weights of dataset ``name`` (float32 (K,)), or None if it publishes none."""
    table = _published_tables().get(base_name(name))
    return None if table is None else np.asarray(table, np.float32)


def check_class_weights(values, num_classes: int, where: str) -> np.ndarray:
    """``values`` as float32 (K,) after checking length K, finite, >= 0 and a positive sum.

    Raises ValueError naming ``where`` (a file or a dataset) and what is wrong.
    """
    try:
        weights = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"class weights in {where} must be a list of {num_classes} numbers") from None
    if weights.ndim != 1 or weights.shape[0] != num_classes:
        raise ValueError(f"class weights in {where} must be a list of {num_classes} numbers (one per class); "
                         f"got shape {weights.shape}")
    if not np.all(np.isfinite(weights)):
        raise ValueError(f"class weights in {where} must be finite; got {weights.tolist()}")
    if np.any(weights < 0):
        raise ValueError(f"class weights in {where} must be >= 0; negative at classes {np.flatnonzero(weights < 0).tolist()}")
    if not weights.sum() > 0:
        raise ValueError(f"class weights in {where} sum to 0: at least one class needs a positive weight")
    return weights.astype(np.float32)


def load_class_weights_file(path: str | os.PathLike, num_classes: int) -> np.ndarray:
    """Weights from a JSON file: a list of K numbers, or an object with a ``class_weights`` list (or a
    ``class_weights`` object keyed by class name in class order, as ``jaxseg data stats --json`` writes)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class weights file {path} does not exist")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"class weights file {path} is not valid JSON ({error})") from None
    if isinstance(content, dict):
        content = content.get("class_weights")
        if isinstance(content, dict):
            content = list(content.values())
    return check_class_weights(content, num_classes, str(path))


def stored_class_weights(name: str, data_dir=None) -> ClassWeights:
    """The training-split weights stored beside prepared dataset ``name``, computed and stored on first use
    (a read-only data directory gets them computed each time instead).

    Raises FileNotFoundError when the dataset is not prepared.
    """
    info = dataset_info(name)
    path = prepared_directory(name, data_dir) / CLASS_WEIGHTS_FILE
    source = f"inverse pixel frequencies of the {info.train_split!r} split of {name} ({path})"
    if path.is_file():
        return ClassWeights(load_class_weights_file(path, info.num_classes), "dataset", source)
    statistics = split_statistics(name, info.train_split, data_dir=data_dir)
    weights = inverse_frequency_weights(statistics.pixel_counts)
    record = {
        "dataset": name, "split": info.train_split, "rule": "w_c = (1 / n_c) / sum_k (1 / n_k); 0 for absent classes",
        "pixel_counts": [int(c) for c in statistics.pixel_counts], "class_weights": [float(w) for w in weights],
    }
    temporary = path.with_name(f"{CLASS_WEIGHTS_FILE}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        source += ", not stored: the directory is not writable"
    return ClassWeights(weights, "dataset", source)


def dataset_class_weights(name: str, data_dir=None) -> ClassWeights:
    """The ``mask-ce-bal`` weights SEA uses on dataset ``name``: the published table where the reference has
    one (VOC, ADE20K), else the stored training-split weights (``stored_class_weights``)."""
    published = published_class_weights(name)
    if published is not None:
        return ClassWeights(published, "dataset",
                            f"SEA reference table for {base_name(name)} (nmndeep/Robust-Segmentation, semseg/utils/utils.py)")
    return stored_class_weights(name, data_dir)


def resolve_class_weights(spec: str, num_classes: int, *, dataset: str | None = None, data_dir=None,
                          labels: np.ndarray | None = None) -> ClassWeights:
    """What ``--class-weights spec`` means for one evaluation.

    spec: "dataset" (``dataset_class_weights``; for in-memory ``labels`` without a dataset: inverse pixel
    frequencies of those labels), "image" (None: per-image frequencies) or a JSON file path.
    num_classes: K, checked against the weights. Raises ValueError / FileNotFoundError with the cause.
    """
    if spec == "image":
        return ClassWeights(None, "image", "each image's own label frequencies")
    if spec == "dataset":
        if dataset is not None:
            weights = dataset_class_weights(dataset, data_dir)
            return dataclasses.replace(weights, values=check_class_weights(weights.values, num_classes, weights.source))
        if labels is None:
            raise ValueError("class weights 'dataset' need a dataset or labels to count")
        labels = np.asarray(labels)
        counts = np.bincount(labels[valid_mask(labels, num_classes, None)].ravel(), minlength=num_classes)
        return ClassWeights(inverse_frequency_weights(counts), "dataset", "inverse pixel frequencies of the evaluated labels")
    if spec.endswith(".json") or os.path.exists(spec):
        return ClassWeights(load_class_weights_file(spec, num_classes), "file", os.path.abspath(spec))
    raise ValueError(f"class weights must be one of {MODES} or a .json file; got {spec!r}")

