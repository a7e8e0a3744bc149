"""Attacks against peer oracles: PyTorch's AMSGrad (PAdam's published optimiser, Halmosi et al. ECCV 2024) and
the CosPGD authors' ``cospgd`` package (its SegPGD / CosPGD loss scaling and attack steps), plus checks that
the published defaults are what the attacks do when called without options.

The model is a fixed linear per-pixel map (a 1x1 convolution), written once in JAX and once in torch with
the same weights, so both frameworks attack the same function.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg import attacks
from jaxseg.attacks import losses, threat
from jaxseg.attacks.padam import adam_init, amsgrad_update

K = 4
EPS = 8 / 255
LR = 2 / 255


def _linear_problem(seed=0, shape=(2, 5, 6)):
    """(images NHWC, labels, W, b): labels agree with the clean prediction on about half the pixels."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, shape + (3,)).astype(np.float32)
    weights = rng.normal(0, 2, (3, K)).astype(np.float32)
    bias = rng.normal(0, 0.5, (K,)).astype(np.float32)
    predicted = (images @ weights + bias).argmax(-1)
    labels = np.where(rng.uniform(size=shape) < 0.5, predicted, rng.integers(0, K, shape)).astype(np.int32)
    return images, labels, weights, bias


def linear_logits(variables, x):
    """The JAX model as ``(variables, images) -> logits``: one function object, so attacks on problems of the
    same shape reuse their compiled programs across tests."""
    weights, bias = variables
    return x @ weights + bias


def _jax_model(weights, bias):
    variables = (jnp.asarray(weights), jnp.asarray(bias))
    return lambda x: linear_logits(variables, x)


def _torch_model(weights, bias):
    import torch

    weights, bias = torch.from_numpy(weights), torch.from_numpy(bias)
    return lambda x: x @ weights + bias  # NHWC in, (B, H, W, K) out


def _gradient_sequence(shape=(3, 4, 5)):
    """Gradients for the optimiser parity: large, small, zero, tiny (below Adam's eps) and mixed steps."""
    rng = np.random.default_rng(1)
    normal = lambda scale: (scale * rng.normal(size=shape)).astype(np.float32)  # noqa: E731
    mixed = normal(1.0) * (rng.uniform(size=shape) < 0.5)
    return [normal(1.0), normal(1e-3), np.zeros(shape, np.float32), normal(1e-9), normal(5.0), mixed,
            normal(1e-6), normal(1e-10), normal(0.3), np.zeros(shape, np.float32), normal(2.0)]


def _torch_amsgrad_trajectory(start, grads, foreach):
    import torch

    param = torch.tensor(start, requires_grad=True)
    optimizer = torch.optim.Adam([param], lr=LR, amsgrad=True, maximize=True, foreach=foreach)
    trajectory = []
    for grad in grads:
        param.grad = torch.from_numpy(grad)
        optimizer.step()
        trajectory.append(param.detach().numpy().copy())
    return np.stack(trajectory)


@pytest.mark.torch
@pytest.mark.parametrize("foreach", [False, True])
def test_amsgrad_update_matches_torch_adam(foreach):
    pytest.importorskip("torch")
    grads = _gradient_sequence()
    start = np.random.default_rng(2).uniform(0.2, 0.8, grads[0].shape).astype(np.float32)
    expected = _torch_amsgrad_trajectory(start, grads, foreach)

    update = jax.jit(amsgrad_update)
    params, state, trajectory = jnp.asarray(start), adam_init(jnp.asarray(start)), []
    for grad in grads:
        step, state = update(state, jnp.asarray(grad), LR)
        params = params + step
        trajectory.append(np.asarray(params))
    trajectory = np.stack(trajectory)
    np.testing.assert_allclose(trajectory, expected, rtol=1e-6, atol=0)
    # The steps themselves (not only the parameters) agree, including those driven by tiny gradients.
    np.testing.assert_allclose(np.diff(trajectory, axis=0), np.diff(expected, axis=0), rtol=1e-4, atol=1e-9)
    assert int(state.count) == len(grads)


@pytest.mark.torch
def test_optax_amsgrad_is_not_torch_amsgrad():
    """optax.amsgrad maxes the bias-corrected second moment, so the parity test above would catch it."""
    pytest.importorskip("torch")
    grads = _gradient_sequence()
    start = np.random.default_rng(2).uniform(0.2, 0.8, grads[0].shape).astype(np.float32)
    expected = _torch_amsgrad_trajectory(start, grads, foreach=False)

    optimizer = optax.amsgrad(LR)
    params = jnp.asarray(start)
    state, trajectory = optimizer.init(params), []
    for grad in grads:
        updates, state = optimizer.update(-jnp.asarray(grad), state, params)
        params = params + updates
        trajectory.append(np.asarray(params))
    trajectory = np.stack(trajectory)
    assert not np.allclose(trajectory, expected, rtol=1e-6, atol=0)
    assert np.max(np.abs(trajectory - expected) / np.abs(expected)) > 1e-4


def _torch_padam(images, labels, start, weights, bias, loss_name, iterations):
    """The reference PAdam loop (rse/attacks.py ``padam``, restated) on the linear model."""
    import torch
    import torch.nn.functional as F

    model = _torch_model(weights, bias)
    x, y = torch.from_numpy(images), torch.from_numpy(labels).long()
    if loss_name == "ce":
        loss_fn = lambda z, t: F.cross_entropy(z.permute(0, 3, 1, 2), t, reduction="none")  # noqa: E731
    else:
        loss_fn = lambda z, t: 1 - F.cosine_similarity(z, F.one_hot(t, K).float(), dim=-1)  # noqa: E731
    delta = torch.from_numpy(start - images)
    adam = torch.optim.Adam([delta], lr=LR, amsgrad=True, maximize=True)
    with torch.no_grad():
        for _ in range(iterations):
            with torch.enable_grad():
                delta.requires_grad = True
                loss = loss_fn(model(x + delta), y).mean()
                delta.grad = torch.autograd.grad(loss, delta)[0]
                adam.step()
            delta.clamp_(-EPS, EPS)
            delta.copy_((x + delta).clamp(0, 1) - x)
    return (x + delta).detach().numpy()


@pytest.mark.torch
@pytest.mark.parametrize("loss_name", ["ce", "cos"])
def test_padam_matches_the_reference_loop(loss_name):
    pytest.importorskip("torch")
    images, labels, weights, bias = _linear_problem()
    key = jax.random.PRNGKey(4)
    # The reference draws its start with torch's RNG; both loops start from jaxseg's draw here.
    start = np.array(threat.random_start(key, jnp.asarray(images), EPS, "linf"))
    expected = _torch_padam(images, labels, start, weights, bias, loss_name, iterations=4)
    result = attacks.padam(linear_logits, images, labels, key, eps=EPS, iterations=4, loss=loss_name,
                           variables=(weights, bias))
    np.testing.assert_allclose(np.asarray(result.adversarial), expected, atol=2e-6, rtol=0)
    assert np.abs(expected - images).max() > EPS / 2  # the attack moved


def test_padam_returns_the_last_iterate_by_default():
    images, labels, weights, bias = _linear_problem(seed=3)
    logits_fn = _jax_model(weights, bias)
    key, iterations = jax.random.PRNGKey(5), 4
    x = threat.random_start(key, jnp.asarray(images), EPS, "linf")
    state = adam_init(x)

    @jax.jit
    def manual_step(x, state):
        def mean_loss(x):  # the reference's objective: mean over batch and pixels
            return jnp.mean(losses.pixel_loss("ce", logits_fn(x), jnp.asarray(labels)))

        step, state = amsgrad_update(state, jax.grad(mean_loss)(x), LR)
        return threat.project(x + step, jnp.asarray(images), EPS, "linf"), state

    for _ in range(iterations):
        x, state = manual_step(x, state)
    default = attacks.padam(linear_logits, images, labels, key, eps=EPS, iterations=iterations,
                            variables=(weights, bias))
    np.testing.assert_allclose(np.asarray(default.adversarial), np.asarray(x), atol=1e-6, rtol=0)
    predicted = np.asarray(logits_fn(default.adversarial)).argmax(-1)
    np.testing.assert_array_equal(np.asarray(default.statistics.correct), (predicted == labels).sum((1, 2)))
    best = attacks.padam(linear_logits, images, labels, key, eps=EPS, iterations=iterations, keep="accuracy",
                         variables=(weights, bias))
    assert np.all(np.asarray(best.statistics.pixel_accuracy) <= np.asarray(default.statistics.pixel_accuracy))


def _random_logits(seed=6, shape=(2, 6, 7)):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, shape + (K,)).astype(np.float32)
    labels = rng.integers(0, K, shape).astype(np.int32)
    target = ((labels + rng.integers(1, K, shape)) % K).astype(np.int32)
    boost = rng.uniform(size=shape) < 0.5  # make about half the pixels correct
    index = labels[..., None]
    np.put_along_axis(logits, index, np.take_along_axis(logits, index, -1) + 4 * boost[..., None], -1)
    return logits, labels, target


@pytest.mark.torch
@pytest.mark.parametrize("iteration", [0, 3, 9])
def test_segpgd_loss_matches_the_cospgd_package(iteration):
    torch = pytest.importorskip("torch")
    cospgd = pytest.importorskip("cospgd")
    import torch.nn.functional as F

    logits, labels, target = _random_logits()
    assert 0.3 < (logits.argmax(-1) == labels).mean() < 0.8
    predictions = torch.from_numpy(logits).permute(0, 3, 1, 2)
    iterations = 10
    for reference, targeted in ((labels, False), (target, True)):
        y = torch.from_numpy(reference).long()
        expected = cospgd.functions.segpgd_scale(predictions, y, F.cross_entropy(predictions, y, reduction="none"),
                                                 iteration, iterations, targeted=targeted)
        options = dict(iteration=iteration, iterations=iterations, target=target if targeted else None)
        ours = jnp.sum(losses.image_loss("segpgd", jnp.asarray(logits), jnp.asarray(labels), **options))
        # The package returns the loss to step along (targeted: step against it); jaxseg returns the loss to
        # maximise, i.e. the negation when targeted. Both: per-image pixel mean, summed over the batch.
        np.testing.assert_allclose(float(ours), (-1 if targeted else 1) * float(expected), rtol=1e-6)


@pytest.mark.torch
def test_cospgd_loss_matches_the_cospgd_package():
    torch = pytest.importorskip("torch")
    cospgd = pytest.importorskip("cospgd")
    import torch.nn.functional as F

    logits, labels, target = _random_logits()
    predictions = torch.from_numpy(logits).permute(0, 3, 1, 2)
    for reference, targeted in ((labels, False), (target, True)):
        y = torch.from_numpy(reference).long()
        ce = F.cross_entropy(predictions, y, reduction="none")
        expected = cospgd.functions.cospgd_scale(predictions, y, ce, num_classes=K, targeted=targeted).numpy()
        ours = losses.pixel_loss("cospgd", jnp.asarray(logits), jnp.asarray(labels), activation="softmax",
                                 target=target if targeted else None)
        # atol: CE = logsumexp - logit cancels for confident pixels (float32 rounding at the logits' scale).
        np.testing.assert_allclose(np.asarray(ours), (-1 if targeted else 1) * expected, rtol=1e-5, atol=1e-6)
        # The paper's ψ = sigmoid, against torch's own cosine similarity (the package only has softmax).
        cosine = F.cosine_similarity(torch.sigmoid(predictions), F.one_hot(y, K).permute(0, 3, 1, 2).float(), dim=1)
        weight = 1 - cosine if targeted else cosine
        ours = losses.pixel_loss("cospgd", jnp.asarray(logits), jnp.asarray(labels), activation="sigmoid",
                                 target=target if targeted else None)
        np.testing.assert_allclose(np.asarray(ours), (-1 if targeted else 1) * (weight * ce).numpy(), rtol=1e-5,
                                   atol=1e-6)
    # image_loss is the pixel mean per image, as the package's attack loop reduces it (up to 1/B).
    mean = losses.image_loss("cospgd", jnp.asarray(logits), jnp.asarray(labels), activation="softmax")
    np.testing.assert_allclose(np.asarray(mean), np.asarray(losses.pixel_loss(
        "cospgd", jnp.asarray(logits), jnp.asarray(labels), activation="softmax")).mean((1, 2)), rtol=1e-6)


def _package_attack(name, images, labels, start, weights, bias, *, eps, alpha, iterations, norm):
    """The CosPGD authors' attack loop (unet_backbones/backbones_unet/utils/trainer.py), restated on the
    linear model with the package's loss scaling and step functions."""
    import torch
    import torch.nn.functional as F
    from cospgd import functions

    model = _torch_model(weights, bias)
    orig, y = torch.from_numpy(images), torch.from_numpy(labels).long()
    x = torch.from_numpy(start)
    for t in range(iterations):
        x.requires_grad = True
        predictions = model(x).permute(0, 3, 1, 2)
        loss = F.cross_entropy(predictions, y, reduction="none")
        if name == "cospgd":
            loss = functions.cospgd_scale(predictions, y, loss, num_classes=K)
        else:
            loss = functions.segpgd_scale(predictions, y, loss, t, iterations)
        loss.mean().backward()
        step = functions.step_inf if norm == "linf" else functions.step_l2
        x = step(perturbed_image=x, epsilon=eps, data_grad=x.grad, orig_image=orig, alpha=alpha, targeted=False)
    return x.detach().numpy()


@pytest.mark.torch
@pytest.mark.parametrize("name,norm", [("segpgd", "linf"), ("cospgd", "linf"), ("cospgd", "l2")])
def test_segpgd_and_cospgd_steps_match_the_cospgd_package(name, norm):
    pytest.importorskip("torch")
    pytest.importorskip("cospgd")
    images, labels, weights, bias = _linear_problem(seed=8)
    eps, alpha, iterations = (EPS, 0.01, 3) if norm == "linf" else (0.5, 0.1, 3)
    key = jax.random.PRNGKey(9)
    # The package draws its start with torch's RNG; the loop here starts from jaxseg's draw.
    start = np.array(threat.random_start(key, jnp.asarray(images), eps, norm))
    expected = _package_attack(name, images, labels, start, weights, bias, eps=eps, alpha=alpha,
                               iterations=iterations, norm=norm)
    attack = {"segpgd": attacks.segpgd, "cospgd": attacks.cospgd}[name]
    options = dict(activation="softmax") if name == "cospgd" else {}  # the package's ψ
    # Defaults only: α (0.01 Linf, 0.1 L2), random start and the last iterate come from the attack itself.
    result = attack(linear_logits, images, labels, key, eps=eps, iterations=iterations, norm=norm,
                    variables=(weights, bias), **options)
    np.testing.assert_allclose(np.asarray(result.adversarial), expected, atol=1e-6, rtol=0)
    assert np.abs(expected - start).max() > alpha / 2  # the steps moved


@pytest.mark.parametrize("name", ["segpgd", "cospgd"])
def test_segpgd_and_cospgd_defaults_are_the_papers(name):
    """Without options: random start, α = 0.01 and the last iterate, against a hand-written loop."""
    images, labels, weights, bias = _linear_problem(seed=10)
    logits_fn = _jax_model(weights, bias)
    key, iterations = jax.random.PRNGKey(11), 3
    images_j, labels_j = jnp.asarray(images), jnp.asarray(labels)

    @jax.jit
    def manual_step(x, t):
        def total(x):
            return jnp.sum(losses.image_loss(name, logits_fn(x), labels_j, iteration=t, iterations=iterations))

        return threat.project(x + 0.01 * jnp.sign(jax.grad(total)(x)), images_j, EPS, "linf")

    x = threat.random_start(key, images_j, EPS, "linf")
    for t in range(iterations):
        x = manual_step(x, t)
    attack = {"segpgd": attacks.segpgd, "cospgd": attacks.cospgd}[name]
    variables = (weights, bias)
    result = attack(linear_logits, images, labels, key, eps=EPS, iterations=iterations, variables=variables)
    np.testing.assert_allclose(np.asarray(result.adversarial), np.asarray(x), atol=1e-7, rtol=0)
    explicit = attack(linear_logits, images, labels, key, eps=EPS, iterations=iterations, step_size=0.01,
                      keep="last", random_start=True, variables=variables)
    np.testing.assert_array_equal(np.asarray(result.adversarial), np.asarray(explicit.adversarial))


def test_pgd_defaults_are_eps_over_4_and_the_lowest_accuracy_iterate():
    images, labels, weights, bias = _linear_problem(seed=12)
    key, variables = jax.random.PRNGKey(13), (weights, bias)
    default = attacks.pgd(linear_logits, images, labels, key, eps=EPS, iterations=4, variables=variables)
    explicit = attacks.pgd(linear_logits, images, labels, key, eps=EPS, iterations=4, step_size=jnp.float32(EPS) / 4,
                           keep="accuracy", random_start=True, variables=variables)
    np.testing.assert_array_equal(np.asarray(default.adversarial), np.asarray(explicit.adversarial))
    accuracy = np.asarray(default.statistics.pixel_accuracy)
    assert np.all(accuracy <= np.asarray(default.accuracy_history).min(0) + 1e-7)
