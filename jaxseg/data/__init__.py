"""Datasets: TFDS builders (ArrayRecord, no TensorFlow needed), Grain pipelines, label statistics.

Names: ``voc2012_seg``, ``ade20k``, ``cityscapes`` (prepared from the official archives in a manual
directory) and ``synthetic_shapes`` (the built-in default, generated). Typical use::

    from jaxseg import data
    data.prepare("synthetic_shapes")                         # once; ~/tensorflow_datasets or $JAXSEG_DATA_DIR
    batches = data.train_iterator("synthetic_shapes", "train", data_dir=None, batch_size=16,
                                  crop_size=64, base_size=64, seed=0)
    for batch in data.eval_batches("synthetic_shapes", "validation", data_dir=None, batch_size=16,
                                   protocol="standard", image_size=64): ...
"""

from jaxseg.data.info import (
    DatasetInfo,
    colorize,
    dataset_info,
    dataset_names,
    label_colormap,
)
from jaxseg.data.loss_weights import ClassWeights, dataset_class_weights, resolve_class_weights
from jaxseg.data.pipeline import default_eval_view, eval_batches, load_split_arrays, train_iterator
from jaxseg.data.stats import SplitStatistics, class_weights, split_statistics
from jaxseg.data.storage import open_split, prepare, resolve_data_dir, resolve_name
from jaxseg.data.visualize import save_example_grid

__all__ = [
    "ClassWeights",
    "DatasetInfo",
    "SplitStatistics",
    "class_weights",
    "colorize",
    "dataset_class_weights",
    "dataset_info",
    "dataset_names",
    "default_eval_view",
    "eval_batches",
    "label_colormap",
    "load_split_arrays",
    "open_split",
    "prepare",
    "resolve_class_weights",
    "resolve_data_dir",
    "resolve_name",
    "save_example_grid",
    "split_statistics",
    "train_iterator",
]
