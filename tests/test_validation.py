import numpy as np
import pytest

from jaxseg.validation import validate_images, validate_labels


def test_valid_inputs_pass():
    validate_images(np.random.rand(2, 8, 8, 3).astype(np.float32))
    validate_labels(np.array([[[0, 4], [255, 2]]]), num_classes=5)


def test_image_values_outside_unit_interval_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\].*255"):
        validate_images(np.full((1, 4, 4, 3), 255.0, np.float32))


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.zeros((4, 4), np.int32), "shape"),
        (np.zeros((1, 4, 4), np.float32), "integers"),
        (np.array([[[0, 5]]]), r"\[0, 5\).*\[5\]"),
        (np.array([[[-1, 0]]]), r"\[-1\]"),
    ],
)
def test_bad_labels_are_rejected(labels, message):
    with pytest.raises(ValueError, match=message):
        validate_labels(labels, num_classes=5)


def test_ignore_index_can_be_disabled():
    with pytest.raises(ValueError):
        validate_labels(np.array([[[255]]]), num_classes=5, ignore_index=None)
