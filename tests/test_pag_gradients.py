"""Generation, inpainting and saliency on a tiny trained model (class = a pixel's strongest colour channel)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from attack_models import NUM_CLASSES, make_data, train_tiny_model

from jaxseg.attacks import ModelLogits
from jaxseg.pag import generate, inpaint, saliency


@pytest.fixture(scope="module")
def tiny():
    model, variables = train_tiny_model()
    return ModelLogits(model), variables


@pytest.fixture(scope="module")
def data():
    images, labels = make_data(11, 4)
    target = np.roll(labels, 1, axis=0)  # another image's map: the model must change most pixels
    return images, labels, target


def test_generation_reaches_target_within_ball(tiny, data):
    logits_fn, variables = tiny
    _, labels, target = data
    seeds = generate.make_seed("noise", jax.random.key(0), target)
    for norm, eps in (("l2", 6.0), ("linf", 0.5)):
        result = generate.generate(logits_fn, target, seeds, eps=eps, step_size=eps / 10, iterations=40, norm=norm,
                                   variables=variables)
        assert float(result.target_accuracy.mean()) > 0.8
        assert np.all(np.asarray(result.loss) <= np.nanmin(np.asarray(result.loss_history), axis=0) + 1e-6)
        assert np.all(np.asarray(result.loss) < np.asarray(result.loss_history)[0])
        delta = np.asarray(result.images - seeds).reshape(4, -1)
        size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
        assert np.all(size <= eps * (1 + 1e-5))
        assert float(result.images.min()) >= 0.0 and float(result.images.max()) <= 1.0
        predicted = np.asarray(jnp.argmax(logits_fn(variables, result.images), -1))
        np.testing.assert_array_equal(predicted, np.asarray(result.prediction))
    again = generate.generate(logits_fn, target, seeds, eps=0.5, step_size=0.05, iterations=40, norm="linf",
                              variables=variables)
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(result.images))


def test_class_gaussian_seeds_follow_the_target(data):
    train_images, train_labels = make_data(3, 32)
    gaussians = generate.fit_class_gaussians(train_images, train_labels, NUM_CLASSES, downsample=4)
    assert gaussians.mean.shape == (NUM_CLASSES, 48) and gaussians.covariance.shape == (NUM_CLASSES, 48, 48)
    for k in range(NUM_CLASSES):  # class k blocks are those whose strongest channel is k
        colour = gaussians.mean[k].reshape(16, 3).mean(0)
        assert np.argmax(colour) == k
        np.testing.assert_allclose(gaussians.covariance[k], gaussians.covariance[k].T, atol=1e-6)
    _, _, target = data
    seeds = generate.make_seed("class-gaussian", jax.random.key(1), target, gaussians=gaussians)
    assert seeds.shape == target.shape + (3,) and float(seeds.min()) >= 0 and float(seeds.max()) <= 1
    assert np.mean(np.argmax(np.asarray(seeds), -1) == target) > 0.75  # Gaussian tails cross the boundary
    same = generate.make_seed("class-gaussian", jax.random.key(1), target, gaussians=gaussians)
    other = generate.make_seed("class-gaussian", jax.random.key(2), target, gaussians=gaussians)
    np.testing.assert_array_equal(np.asarray(seeds), np.asarray(same))
    assert not np.array_equal(np.asarray(seeds), np.asarray(other))
    mean = generate.make_seed("mean", jax.random.key(0), target, mean_colour=generate.dataset_mean(train_images))
    np.testing.assert_allclose(np.asarray(mean[0, 0, 0]), train_images.mean((0, 1, 2)), atol=1e-6)


def test_class_without_data_and_bad_seed_requests_are_errors(data):
    images, labels = make_data(3, 8)
    labels = np.where(labels == 2, 0, labels)
    gaussians = generate.fit_class_gaussians(images, labels, NUM_CLASSES)
    assert gaussians.counts[2] == 0
    _, _, target = data
    with pytest.raises(ValueError, match=r"class\(es\) \[2\]"):
        generate.make_seed("class-gaussian", jax.random.key(0), target, gaussians=gaussians)
    with pytest.raises(ValueError, match="unknown seed kind"):
        generate.make_seed("gaussian", jax.random.key(0), target)
    with pytest.raises(ValueError, match="mean_colour"):
        generate.make_seed("mean", jax.random.key(0), target)


def test_generation_rejects_targets_out_of_range(tiny, data):
    logits_fn, variables = tiny
    _, _, target = data
    seeds = generate.make_seed("noise", jax.random.key(0), target)
    with pytest.raises(ValueError, match=r"target.*\[0, 3\)"):
        generate.generate(logits_fn, np.where(target == 0, 7, target), seeds, variables=variables)
    with pytest.raises(ValueError, match="target must be an integer label map"):
        generate.generate(logits_fn, target[:, :8], seeds, variables=variables)
    with pytest.raises(ValueError, match="give eps for norm='linf'"):
        generate.generate(logits_fn, target, seeds, norm="linf", variables=variables)


def test_hard_inpainting_never_changes_visible_pixels(tiny, data):
    logits_fn, variables = tiny
    images, labels, _ = data
    mask = np.zeros(labels.shape, bool)
    mask[:, 4:12, 2:14] = True
    result = inpaint.inpaint(logits_fn, images, mask, labels, mode="hard", eps=3.0, step_size=0.3, iterations=40,
                             variables=variables)
    out = np.asarray(result.images)
    np.testing.assert_array_equal(out[~mask], images[~mask])
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.linalg.norm((out - np.asarray(result.corrupted)).reshape(4, -1), axis=1).max() <= 3.0 * (1 + 1e-5)
    corrupted_accuracy = np.mean(np.argmax(np.asarray(logits_fn(variables, result.corrupted)), -1)[mask] == labels[mask])
    assert np.mean(np.asarray(result.prediction)[mask] == labels[mask]) > max(0.9, corrupted_accuracy + 0.2)
    mse, psnr = inpaint.region_error(result.images, images, mask)
    corrupted_mse, _ = inpaint.region_error(result.corrupted, images, mask)
    assert np.all(np.asarray(mse) < np.asarray(corrupted_mse))  # the fill moves toward the true colours
    np.testing.assert_allclose(np.asarray(psnr), 10 * np.log10(1 / np.asarray(mse)), rtol=1e-5)


def test_penalty_inpainting_fills_region_and_anchors_the_rest(tiny, data):
    logits_fn, variables = tiny
    images, labels, _ = data
    mask = np.zeros(labels.shape, bool)
    mask[:, 4:12, 2:14] = True
    result = inpaint.inpaint(logits_fn, images, mask, labels, mode="penalty", eps=3.0, step_size=0.1, iterations=60,
                             variables=variables)
    corrupted = np.asarray(result.corrupted)
    np.testing.assert_array_equal(corrupted[~mask], images[~mask])
    visible_mean = np.stack([images[i][~mask[i]].mean(0) for i in range(4)])
    np.testing.assert_allclose(corrupted[:, 8, 8], visible_mean, rtol=1e-5)
    assert float(result.label_accuracy.mean()) > 0.9
    out = np.asarray(result.images)
    region_change = np.abs(out - corrupted)[mask].mean()
    visible_change = np.abs(out - corrupted)[~mask].mean()
    assert visible_change < 0.5 * region_change


def test_inpainting_rejects_bad_inputs(tiny, data):
    logits_fn, variables = tiny
    images, labels, _ = data
    mask = np.zeros(labels.shape, bool)
    mask[:, 2:5, 2:5] = True
    with pytest.raises(ValueError, match="mask must have the images' size"):
        inpaint.inpaint(logits_fn, images, mask[:, :8], labels, variables=variables)
    empty = mask.copy()
    empty[1] = False
    with pytest.raises(ValueError, match=r"selects no pixel in image\(s\) \[1\]"):
        inpaint.inpaint(logits_fn, images, empty, labels, variables=variables)
    with pytest.raises(ValueError, match=r"labels.*\[0, 3\)"):
        inpaint.inpaint(logits_fn, images, mask, labels + 3, variables=variables)
    with pytest.raises(ValueError, match="unknown inpainting mode"):
        inpaint.inpaint(logits_fn, images, mask, labels, mode="soft", variables=variables)


def test_integrated_gradients_are_complete(tiny, data):
    logits_fn, variables = tiny
    images, _, _ = data
    result = saliency.attribute(logits_fn, images, method="integrated-gradients", class_index=1, steps=128,
                                baseline=0.5, variables=variables)
    total = np.asarray(result.values).sum(axis=(1, 2, 3))
    difference = np.asarray(result.score - result.baseline_score)
    scale = np.abs(np.asarray(result.score)) + np.abs(np.asarray(result.baseline_score))
    np.testing.assert_array_less(np.abs(total - difference), 0.02 * scale + 0.5)


def test_saliency_methods_agree_with_the_gradient(tiny, data):
    logits_fn, variables = tiny
    images, labels, _ = data
    region = np.zeros(labels.shape, bool)
    region[:, :8] = True

    def score(x):
        logits = logits_fn(variables, x)
        return jnp.sum(logits[..., 2] * region)

    expected = np.asarray(jax.grad(score)(jnp.asarray(images)))
    plain = saliency.attribute(logits_fn, images, method="gradient", class_index=2, region=region, variables=variables)
    np.testing.assert_allclose(np.asarray(plain.values), expected, rtol=1e-4, atol=1e-5)
    times_input = saliency.attribute(logits_fn, images, method="gradient-input", class_index=2, region=region,
                                     variables=variables)
    np.testing.assert_allclose(np.asarray(times_input.values), expected * images, rtol=1e-4, atol=1e-5)
    smooth = [saliency.attribute(logits_fn, images, method="smoothgrad", class_index=2, key=jax.random.key(k),
                                 samples=8, variables=variables).values for k in (0, 0, 1)]
    np.testing.assert_array_equal(np.asarray(smooth[0]), np.asarray(smooth[1]))
    assert not np.array_equal(np.asarray(smooth[0]), np.asarray(smooth[2]))
    ce = saliency.attribute(logits_fn, images, method="gradient", objective="ce", labels=labels, variables=variables)
    maps = saliency.saliency_map(ce.values)
    assert maps.shape == labels.shape and maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1.0)


def test_saliency_rejects_bad_requests(tiny, data):
    logits_fn, variables = tiny
    images, labels, _ = data
    with pytest.raises(ValueError, match=r"class_index must lie in \[0, 3\)"):
        saliency.attribute(logits_fn, images, class_index=3, variables=variables)
    with pytest.raises(ValueError, match="exactly one of"):
        saliency.attribute(logits_fn, images, class_index=0, labels=labels, variables=variables)
    with pytest.raises(ValueError, match="region must have the images' size"):
        saliency.attribute(logits_fn, images, class_index=0, region=np.ones((4, 8, 8), bool), variables=variables)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        saliency.attribute(logits_fn, images, method="smoothgrad", class_index=0, variables=variables)
