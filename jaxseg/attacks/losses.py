"""Per-pixel losses: the cross-entropy with an ignore index that training, the attacks and PAG share
(``pixel_cross_entropy``, ``segmentation_cross_entropy``), and the attack losses by name
(docs/sea_evaluation.md and the papers named per loss), all to be *maximised* by an attack.

Every attack loss maps logits (..., K) and integer labels (...) to per-pixel values (...) float32; for segmentation
that is (B, H, W, K) → (B, H, W), for a classifier (B, K) → (B,). Pixels outside ``validation.valid_mask`` (label
``ignore_index`` or outside [0, K)) contribute 0. ``image_loss`` reduces to one value per image: the mean over *all* pixels, so
masked-out and ignored pixels stay in the denominator; attacks sum that over the batch for the gradient.

Masks such as "pixel still correct" are computed from the current logits and are stop-gradient.

Targeted variants: with ``target`` (a label map like ``labels``) every loss turns into the negated loss
toward the target, so maximising it pulls pixels to the target class; the "still to attack" mask becomes
"not yet predicted as the target" (for ``segpgd`` the weights (1-λ) / λ go to not-yet-target / already-target
pixels, i.e. the untargeted weights swapped onto the target's success mask). Pixels whose target is ignored
contribute 0.

Names: ``ce``, ``mask-ce``, ``mask-ce-bal``, ``js``, ``mask-sph``, ``segpgd``, ``cospgd``, ``cos``, ``dlr``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxseg.validation import DEFAULT_IGNORE_INDEX, valid_mask

COSPGD_ACTIVATIONS = ("sigmoid", "softmax")


class LossInputs(NamedTuple):
    """What a loss formula sees. Arrays share the leading (pixel) shape S = (...) of the labels.

    logits: (S..., K) float32. reference: (S...) int, the label (untargeted) or the target class (targeted),
    always in [0, K). labels: (S...) int true labels in [0, K). pending: (S...) bool, pixel still to attack
    (correct, or not yet at the target), stop-gradient. targeted: static bool. class_weights: (K,) or (B, K)
    float or None. segpgd_lambda: scalar λ_t. activation: ψ of CosPGD.
    """

    logits: jax.Array
    reference: jax.Array
    labels: jax.Array
    pending: jax.Array
    targeted: bool
    class_weights: jax.Array | None
    segpgd_lambda: jax.Array
    activation: str


def _take(values: jax.Array, index: jax.Array) -> jax.Array:
    return jnp.take_along_axis(values, index[..., None], axis=-1)[..., 0]


def _cross_entropy(logits: jax.Array, index: jax.Array) -> jax.Array:
    return jax.nn.logsumexp(logits, axis=-1) - _take(logits, index)


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array,
                        ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> jax.Array:
    """Per-pixel cross-entropy -log softmax(logits)_y, 0 at pixels outside ``valid_mask`` (label
    ``ignore_index`` or outside [0, K)). logits (..., K) float, labels (...) int → (...) float32."""
    logits = logits.astype(jnp.float32)
    valid = valid_mask(labels, logits.shape[-1], ignore_index)
    return jnp.where(valid, _cross_entropy(logits, jnp.where(valid, labels, 0)), 0.0)


def segmentation_cross_entropy(logits: jax.Array, labels: jax.Array,
                               ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> jax.Array:
    """The training loss: mean ``pixel_cross_entropy`` over the labelled pixels (unlabelled ones are excluded
    from sum and count; 0 without any). logits (B, H, W, K) float, labels (B, H, W) int → () float32."""
    valid = valid_mask(labels, logits.shape[-1], ignore_index)
    return jnp.sum(pixel_cross_entropy(logits, labels, ignore_index)) / jnp.maximum(jnp.sum(valid), 1)


def _sign(inputs: LossInputs) -> float:
    return -1.0 if inputs.targeted else 1.0


def cross_entropy(inputs: LossInputs) -> jax.Array:
    """CE = -log p_y (targeted: -CE toward the target)."""
    return _sign(inputs) * _cross_entropy(inputs.logits, inputs.reference)


def masked_cross_entropy(inputs: LossInputs) -> jax.Array:
    """1[correct] * CE (SEA's L_MCE): pixels already fooled stop pulling the gradient."""
    return _sign(inputs) * inputs.pending * _cross_entropy(inputs.logits, inputs.reference)


def balanced_masked_cross_entropy(inputs: LossInputs) -> jax.Array:
    """w_y * 1[correct] * CE (SEA's L_MCE-Bal), w from ``class_weights`` (see ``balanced_class_weights``)."""
    weights = inputs.class_weights
    if weights.ndim == 1:
        pixel_weight = weights[inputs.reference]
    else:  # (B, K): per-image weights
        flat = inputs.reference.reshape(inputs.reference.shape[0], -1)
        pixel_weight = jnp.take_along_axis(weights, flat, axis=1).reshape(inputs.reference.shape)
    return _sign(inputs) * pixel_weight * inputs.pending * _cross_entropy(inputs.logits, inputs.reference)


def jensen_shannon(inputs: LossInputs) -> jax.Array:
    """JS(p ‖ e_y) = 0.5 KL(p‖m) + 0.5 KL(e_y‖m), m = (p + e_y)/2, in [0, log 2].

    With q = p_y the sum over classes has the closed form
    0.5 [(1 - q) log 2 + q log(2q / (1 + q)) + log(2 / (1 + q))]; q log q is taken as 0 at q = 0.
    """
    log_q = -_cross_entropy(inputs.logits, inputs.reference)
    q = jnp.exp(log_q)
    log2 = jnp.log(2.0)
    q_log_q = jnp.where(q > 0, q * log_q, 0.0)
    value = 0.5 * ((1 - q) * log2 + q * log2 + q_log_q - q * jnp.log1p(q) + log2 - jnp.log1p(q))
    return _sign(inputs) * jnp.maximum(value, 0.0)


def _l2(values: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(values), axis=-1) + 1e-20)


def masked_spherical(inputs: LossInputs) -> jax.Array:
    """-1[correct] u_y / ‖u‖_2 (targeted: +1[not at target] u_t / ‖u‖_2)."""
    normalised = _take(inputs.logits, inputs.reference) / _l2(inputs.logits)
    return -_sign(inputs) * inputs.pending * normalised


def segpgd_loss(inputs: LossInputs) -> jax.Array:
    """[(1 - λ) 1[correct] + λ 1[wrong]] * CE with λ = t / (2T) (Gu et al. 2022)."""
    lam = inputs.segpgd_lambda
    weight = jnp.where(inputs.pending, 1.0 - lam, lam)
    return _sign(inputs) * weight * _cross_entropy(inputs.logits, inputs.reference)


def cospgd_loss(inputs: LossInputs) -> jax.Array:
    """stop_grad(cos(ψ(u), e_y)) * CE, ψ = sigmoid (paper) or softmax (official code).

    Targeted: -stop_grad(1 - cos(ψ(u), e_t)) * CE toward t: pixels far from the target weigh most.
    """
    psi = jax.nn.sigmoid(inputs.logits) if inputs.activation == "sigmoid" else jax.nn.softmax(inputs.logits, -1)
    cosine = jax.lax.stop_gradient(_take(psi, inputs.reference) / _l2(psi))
    weight = 1.0 - cosine if inputs.targeted else cosine
    return _sign(inputs) * weight * _cross_entropy(inputs.logits, inputs.reference)


def cosine_loss(inputs: LossInputs) -> jax.Array:
    """1 - cos(u, e_y) on raw logits (PAdam's ``cos``)."""
    return _sign(inputs) * (1.0 - _take(inputs.logits, inputs.reference) / _l2(inputs.logits))


def difference_of_logits_ratio(inputs: LossInputs) -> jax.Array:
    """DLR (Croce & Hein 2020): -(u_y - max_{i≠y} u_i) / (u_π1 - u_π3 + 1e-12); needs K >= 3.

    Targeted (K >= 4): -(u_y - u_t) / (u_π1 - (u_π3 + u_π4)/2 + 1e-12).
    """
    logits = inputs.logits
    ordered = -jnp.sort(-logits, axis=-1)  # descending
    true_logit = _take(logits, inputs.labels)
    if inputs.targeted:
        scale = ordered[..., 0] - 0.5 * (ordered[..., 2] + ordered[..., 3]) + 1e-12
        return -(true_logit - _take(logits, inputs.reference)) / scale
    top_is_true = jnp.argmax(logits, -1) == inputs.labels
    best_other = jnp.where(top_is_true, ordered[..., 1], ordered[..., 0])
    return -(true_logit - best_other) / (ordered[..., 0] - ordered[..., 2] + 1e-12)


LOSSES: dict[str, Callable[[LossInputs], jax.Array]] = {
    "ce": cross_entropy,
    "mask-ce": masked_cross_entropy,
    "mask-ce-bal": balanced_masked_cross_entropy,
    "js": jensen_shannon,
    "mask-sph": masked_spherical,
    "segpgd": segpgd_loss,
    "cospgd": cospgd_loss,
    "cos": cosine_loss,
    "dlr": difference_of_logits_ratio,
}


def check_loss_name(name: str) -> None:
    """Raise ``ValueError`` naming the registered losses unless ``name`` is one."""
    if name not in LOSSES:
        raise ValueError(f"unknown attack loss {name!r}; available losses: {', '.join(LOSSES)}")


def balanced_class_weights(pixel_counts) -> jax.Array:
    """Class weights of ``mask-ce-bal``: w_c ∝ 1/N_c over classes with N_c > 0 (absent classes get 0), sum 1.

    pixel_counts: (..., K) pixel frequencies (training set, or one image per row) → (..., K) float32.
    """
    counts = jnp.asarray(pixel_counts, jnp.float32)
    inverse = jnp.where(counts > 0, 1.0 / jnp.maximum(counts, 1e-12), 0.0)
    return inverse / jnp.maximum(jnp.sum(inverse, axis=-1, keepdims=True), 1e-12)


def segpgd_lambda(iteration, iterations) -> jax.Array:
    """SegPGD's λ_t = t / (2T) for the 0-based iteration t of T."""
    return jnp.asarray(iteration, jnp.float32) / (2.0 * iterations)


def pixel_loss(
    name: str,
    logits: jax.Array,
    labels: jax.Array,
    *,
    target: jax.Array | None = None,
    class_weights: jax.Array | None = None,
    iteration=0,
    iterations: int = 1,
    activation: str = "sigmoid",
    ignore_index: int | None = DEFAULT_IGNORE_INDEX,
) -> jax.Array:
    """Per-pixel value of loss ``name`` (to maximise); ignored pixels are 0.

    Args:
      logits: (..., K) float; labels: (...) int; target: optional (...) int target map (targeted variant).
      class_weights: (K,) or (B, K) weights for ``mask-ce-bal``; None = per-image inverse label frequencies.
      iteration, iterations: t (0-based) and T for SegPGD's λ_t = t/(2T).
      activation: ψ of ``cospgd``, "sigmoid" (default) or "softmax".
    Returns: (...) float32.
    """
    check_loss_name(name)
    if activation not in COSPGD_ACTIVATIONS:
        raise ValueError(f"cospgd activation must be one of {COSPGD_ACTIVATIONS}; got {activation!r}")
    logits = logits.astype(jnp.float32)
    num_classes = logits.shape[-1]
    valid = valid_mask(labels, num_classes, ignore_index)
    safe_labels = jnp.where(valid, labels, 0)
    prediction = jax.lax.stop_gradient(jnp.argmax(logits, -1))
    if target is None:
        reference, pending = safe_labels, prediction == safe_labels
    else:
        valid &= valid_mask(target, num_classes, ignore_index)
        reference = jnp.where(valid, target, 0)
        pending = prediction != reference
    if name == "mask-ce-bal" and class_weights is None:
        class_weights = per_image_class_weights(reference, valid, num_classes)
    inputs = LossInputs(
        logits, reference, safe_labels, pending, target is not None,
        None if class_weights is None else jnp.asarray(class_weights, jnp.float32),
        segpgd_lambda(iteration, iterations), activation,
    )
    return jnp.where(valid, LOSSES[name](inputs), 0.0)


def per_image_class_weights(labels: jax.Array, valid: jax.Array, num_classes: int) -> jax.Array:
    """(B, K) ``balanced_class_weights`` from each image's own label frequencies (labels (B, ...))."""
    flat = labels.reshape(labels.shape[0], -1)
    counts = jax.vmap(lambda row, keep: jnp.zeros(num_classes).at[row].add(keep))(
        flat, valid.reshape(flat.shape).astype(jnp.float32)
    )
    return balanced_class_weights(counts)


def image_loss(name: str, logits: jax.Array, labels: jax.Array, **options) -> jax.Array:
    """(B,) per-image loss: ``pixel_loss`` averaged over all non-batch positions (ignored pixels count 0)."""
    values = pixel_loss(name, logits, labels, **options)
    return jnp.mean(values.reshape(values.shape[0], -1), axis=1)


def get_loss(name: str) -> Callable[..., jax.Array]:
    """The per-pixel loss ``name`` as ``fn(logits, labels, **options) -> (...)``; see ``pixel_loss``.

    Raises ``ValueError`` listing the available names for an unknown one.
    """
    check_loss_name(name)

    def loss(logits, labels, **options):
        return pixel_loss(name, logits, labels, **options)

    loss.__name__ = f"loss_{name.replace('-', '_')}"
    return loss
