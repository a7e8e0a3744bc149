"""3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, CVPR 2016).

A direct 3x3 convolution spends 9 multiply-adds per output pixel and channel pair; F(2x2, 3x3) computes each
2x2 output tile from a 4x4 input tile with 16, i.e. 2.25x fewer. The input tiles and the kernel are transformed
(``B^T d B``, ``G g G^T``: additions only), the 16 transformed positions are 16 independent matrix products
(tiles x I) @ (I x O) — one batched ``einsum`` — and the inverse transform ``A^T m A`` adds the products back
into 2x2 outputs. Everything is written in ``jnp`` slices, additions and one ``einsum``, so JAX differentiates it
into the same kind of program (the input gradient is again a Winograd-form product with the transposed kernel
transform, the kernel gradient a product contracted over tiles), and nothing in it is a convolution that XLA:CPU
would run slowly inside a ``lax`` loop.

On XLA:CPU this is about 2x faster than the library convolution for the wide 3x3 convolutions of segmentation
heads (UPerNet's 2048 → 512 fusion convolution; benchmarks/RESULTS.md, "Attacks"), and slower for narrow ones,
where the transforms' memory traffic dominates: ``jaxseg.models.kernels.conv_general_dilated`` (the CPU kernel set)
uses it only when ``worthwhile``. Values agree with ``lax.conv_general_dilated`` to float32 rounding (relative error
~1e-7 for unit-scale data: the transforms' coefficients are 0, ±1/2, ±1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Pads = tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right)) zero padding

# F(2x2, 3x3): output tile Y = A^T [(G g G^T) * (B^T d B)] A for a 4x4 input tile d and 3x3 kernel g; B^T and
# A^T (entries 0, ±1) are applied as the additions in _input_transform and _output_transform.
KERNEL_TRANSFORM = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)  # G

# Below this many (input x output) channel pairs the transforms cost as much as the saved multiplications or
# more (forward + input gradient in a fori_loop on the 2-core CPU, ms, direct / Winograd: 128→128 at 16², batch 8:
# 6.4-7.5 / 8.7-10; 512→128 at 16²: 24.1-24.7 / 23.6-23.7; 256→256 at 32², batch 2: 25.9-28.4 / 22.5-23.0;
# 512→512 at 128², batch 2: 1882-1937 / 1135-1137; 2048→512 at 64², batch 1: 907-920 / 478-483).
MIN_CHANNEL_PAIRS = 256 * 256


def worthwhile(x: jax.Array, kernel: jax.Array, strides, dilation) -> bool:
    """Whether the convolution of NHWC ``x`` with HWIO ``kernel`` at ``strides`` and kernel ``dilation`` takes this
    path: 3x3, stride 1, no dilation, at least ``MIN_CHANNEL_PAIRS`` channel pairs, float32 operands (in bfloat16
    the transformed tiles would be rounded to 8 bits of mantissa before the products)."""
    height, width, inputs, outputs = kernel.shape
    return ((height, width) == (3, 3) and tuple(strides) == (1, 1) and tuple(dilation) == (1, 1)
            and inputs * outputs >= MIN_CHANNEL_PAIRS and x.dtype == kernel.dtype == jnp.float32)


def _input_transform(r0, r1, r2, r3):
    """Rows of B^T d for the four rows (or columns) r0..r3 of 4x4 input tiles."""
    return r0 - r2, r1 + r2, r2 - r1, r1 - r3


def _output_transform(m0, m1, m2, m3):
    """Rows of A^T m: the two outputs of a tile from its four transformed positions."""
    return m0 + m1 + m2, m1 - m2 - m3


def conv3x3(x: jax.Array, kernel: jax.Array, pads: Pads, precision=None,
            preferred_element_type=None) -> jax.Array:
    """x (B, H, W, I) * kernel (3, 3, I, O), stride 1, zero padding ``pads`` = ((top, bottom), (left, right))
    → (B, H + top + bottom - 2, W + left + right - 2, O): ``lax.conv_general_dilated`` with NHWC/HWIO.

    Memory: the transformed input (4, 4, B, H'/2, W'/2, I) is about 4x the input. Forming and multiplying the 16
    positions one at a time instead used more memory in whole models, not less, and was 1.4x slower (XLA keeps
    the 16 strided slices of the input alive side by side).
    """
    if kernel.shape[:2] != (3, 3):
        raise ValueError(f"Winograd F(2x2, 3x3) needs a 3x3 kernel; got {kernel.shape[:2]}")
    batch, height, width, _ = x.shape
    (top, bottom), (left, right) = pads
    out_height, out_width = height + top + bottom - 2, width + left + right - 2
    tiles_h, tiles_w = -(-out_height // 2), -(-out_width // 2)  # ceil: the last tile may overhang (cropped)
    padded = jnp.pad(x, ((0, 0), (top, 2 * tiles_h + 2 - height - top), (left, 2 * tiles_w + 2 - width - left),
                         (0, 0)))
    # Tile (t, s) starts at padded pixel (2t, 2s): row i of every tile is the strided slice i::2.
    rows = _input_transform(*(padded[:, i:i + 2 * tiles_h:2] for i in range(4)))
    transformed = jnp.stack([jnp.stack(_input_transform(*(r[:, :, j:j + 2 * tiles_w:2] for j in range(4))))
                             for r in rows])  # (4, 4, B, tiles_h, tiles_w, I)
    g = jnp.asarray(KERNEL_TRANSFORM)
    kernel_transformed = jnp.einsum("ai,ijco,bj->abco", g, kernel.astype(jnp.float32), g).astype(x.dtype)
    products = jnp.einsum("abnhwc,abco->abnhwo", transformed, kernel_transformed, precision=precision,
                          preferred_element_type=preferred_element_type)
    rows = _output_transform(*products)  # each (4, B, tiles_h, tiles_w, O)
    tiles = jnp.stack([jnp.stack(_output_transform(*r), axis=3) for r in rows], axis=2)  # (B, th, 2, tw, 2, O)
    return tiles.reshape(batch, 2 * tiles_h, 2 * tiles_w, -1)[:, :out_height, :out_width]
