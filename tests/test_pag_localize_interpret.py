"""Localisation from constructed saliency maps, ROAR/KAR sign conventions with an oracle trainer, the built-in
trainer, and the gradient-alignment score."""

import numpy as np
import pytest
from attack_models import NUM_CLASSES, make_data

from jaxseg.pag import interpret, localize


def blob_saliency(seed: int, size: int = 32):
    """A noisy saliency map with a bright ellipse (the object) and a weaker, smaller distractor."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    object_mask = ((y - 12) / 6.0) ** 2 + ((x - 18) / 8.0) ** 2 <= 1.0
    distractor = (y - 27) ** 2 + (x - 4) ** 2 <= 2
    saliency = rng.uniform(0, 0.15, (size, size)) + 0.9 * object_mask + 0.5 * distractor
    return saliency.astype(np.float32), object_mask


def test_localization_recovers_a_known_object():
    maps, objects = zip(*(blob_saliency(seed) for seed in range(3)))
    maps, objects = np.stack(maps), np.stack(objects)
    found = localize.localize(maps)
    true_boxes = localize.boxes_from_masks(objects)
    np.testing.assert_array_equal(true_boxes[0], [6, 10, 19, 27])
    assert np.all(localize.box_iou(found.boxes, true_boxes) > 0.7)
    assert localize.localization_accuracy(found.boxes, true_boxes) == 1.0
    assert not found.masks[:, 27, 4].any()  # the distractor is a separate, smaller component
    assert localize.pointing_game(maps, objects).all()
    shifted = np.roll(objects, 14, axis=1)  # rows 20..31 and 0..1: disjoint from the object
    assert not localize.pointing_game(maps, shifted).any()
    flat = localize.localize(np.zeros((1, 8, 8)))
    assert not flat.masks.any() and np.all(flat.boxes == 0)


def test_box_iou_values_and_errors():
    a = np.array([[0, 0, 4, 4], [0, 0, 2, 2], [0, 0, 0, 0]])
    b = np.array([[2, 2, 6, 6], [0, 0, 2, 2], [0, 0, 0, 0]])
    np.testing.assert_allclose(localize.box_iou(a, b), [4 / 28, 1.0, 0.0])
    assert localize.localization_accuracy(a, b) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="paired"):
        localize.box_iou(a, b[:2])
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        localize.localize(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="threshold"):
        localize.localize(np.zeros((1, 8, 8)), threshold=1.5)
    with pytest.raises(ValueError, match="match the saliency shape"):
        localize.pointing_game(np.zeros((1, 8, 8)), np.zeros((1, 4, 4), bool))


def test_degrade_replaces_exactly_the_ranked_fraction():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 10, 10, 3)).astype(np.float32)
    saliency = rng.uniform(size=(2, 10, 10))
    fill = np.array([0.5, 0.25, 0.75], np.float32)
    removed = interpret.degrade(images, saliency, 0.3, fill)
    kept = interpret.degrade(images, saliency, 0.3, fill, keep=True)
    changed = np.all(removed == fill, axis=-1)
    assert changed.sum(axis=(1, 2)).tolist() == [30, 30]
    assert all(saliency[i][changed[i]].min() >= saliency[i][~changed[i]].max() for i in range(2))
    np.testing.assert_array_equal(np.all(kept == fill, axis=-1), ~changed)
    with pytest.raises(ValueError, match="saliency must have shape"):
        interpret.degrade(images, saliency[:, :5], 0.3, fill)


def test_roar_and_kar_reward_an_attribution_that_finds_the_informative_pixels():
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(6, 12, 12, 3)).astype(np.float32)
    informative = np.zeros((6, 12, 12), bool)
    informative[:, 3:9, 2:8] = True  # 25% of the pixels
    labels = informative.astype(np.int32)
    fill = np.array([-1.0, -1.0, -1.0], np.float32)  # marks replaced pixels for the oracle

    def oracle_train_fn(train_images, train_labels):
        def evaluate_fn(test_images, test_labels):  # score = share of informative pixels still visible
            visible = np.any(test_images != fill, axis=-1)
            return float(np.mean(visible[test_labels == 1]))

        return evaluate_fn

    good = informative + 0.01 * rng.uniform(size=informative.shape)
    arguments = (images, labels, good, images, labels, good, oracle_train_fn)
    roar = interpret.remove_and_retrain(*arguments, mode="roar", fill=fill)
    kar = interpret.remove_and_retrain(*arguments, mode="kar", fill=fill)
    np.testing.assert_allclose(roar.scores, [0.6, 0.0, 0.0, 0.0, 0.0], atol=0.02)
    np.testing.assert_allclose(roar.random_scores, 1 - roar.fractions, atol=0.15)
    assert roar.area > 0.2 and kar.area > 0.2
    worst = interpret.remove_and_retrain(images, labels, -good, images, labels, -good, oracle_train_fn, mode="roar",
                                         fill=fill, random_scores=roar.random_scores)
    assert worst.area < 0 and np.array_equal(worst.random_scores, roar.random_scores)
    with pytest.raises(ValueError, match="increasing"):
        interpret.remove_and_retrain(*arguments, fractions=(0.5, 0.1))
    with pytest.raises(ValueError, match="unknown retraining mode"):
        interpret.remove_and_retrain(*arguments, mode="drop")
    with pytest.raises(ValueError, match="must return a callable"):
        interpret.remove_and_retrain(images, labels, good, images, labels, good, lambda x, y: 0.5)


def test_simple_trainer_learns_an_easy_task():
    train_images, train_labels = make_data(0, 64)
    test_images, test_labels = make_data(1, 16)
    evaluate = interpret.simple_trainer(NUM_CLASSES, steps=150, learning_rate=1e-2)(train_images, train_labels)
    assert evaluate(test_images, test_labels) > 0.8


def test_gradient_alignment_is_a_per_image_cosine():
    rng = np.random.default_rng(2)
    gradients = rng.normal(size=(3, 4, 4, 3))
    reference = np.stack([gradients[0] * 2.0, -gradients[1], np.zeros((4, 4, 3))])
    np.testing.assert_allclose(interpret.gradient_alignment(gradients, reference), [1.0, -1.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="reference must have the gradients' shape"):
        interpret.gradient_alignment(gradients, reference[:2])
