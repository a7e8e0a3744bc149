"""What all segmentation builders share: the feature spec and the example reader."""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from jaxseg.data.decode import check_same_size, read_label_png, read_rgb, read_sbd_mat


def segmentation_features(image_size: int | None = None) -> tfds.features.FeaturesDict:
    """Features ``image`` uint8 (H, W, 3), ``label`` uint8 (H, W), ``id`` text.

    ``image_size=None`` stores variable sizes (zlib-compressed, which TFDS needs for several unknown
    dimensions); an int fixes H = W = image_size.
    """
    if image_size is None:
        image_shape, encoding = (None, None, 3), "zlib"
    else:
        image_shape, encoding = (image_size, image_size, 3), "none"
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=image_shape, dtype=np.uint8, encoding=encoding),
            "label": tfds.features.Tensor(shape=image_shape[:2], dtype=np.uint8, encoding=encoding),
            "id": tfds.features.Text(),
        }
    )


def read_example(example_id: str, image_path: str, label_path: str, label_map: np.ndarray | None = None) -> dict:
    """Decodes one image and its label file (PNG, or SBD ``.mat``) into an example dict.

    ``label_map`` (uint8 (256,)) optionally maps raw label values (Cityscapes labelIds → train ids).
    Errors name the offending file.
    """
    image = read_rgb(image_path)
    if os.path.splitext(label_path)[1].lower() == ".mat":
        label = read_sbd_mat(label_path)
    else:
        label = read_label_png(label_path)
    check_same_size(image, label, image_path, label_path)
    if label_map is not None:
        label = label_map[label]
    return {"image": image, "label": label, "id": example_id}
