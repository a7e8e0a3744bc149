"""Procedural scenes for ``synthetic_shapes``: textured shapes over a cluttered, noisy background.

Classes (``info.SYNTHETIC_SHAPES_CLASSES``): 0 background, 1 disc, 2 square, 3 triangle, 4 ring, 5 bar.
Each class has a preferred colour and texture, but colours are drawn with a wide spread (and 30% of the
time from another class's distribution) and textures are the preferred one only 60% of the time, so
neither colour nor texture alone identifies a class: shape does, and shapes occlude each other, are cut
by the image border, blurred and noisy. The background carries low-frequency colour noise and small
distractors (small blobs, thin lines) coloured like the objects. Object sizes are chosen so that the
five object classes cover similar pixel areas on average.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage

NUM_SHAPE_CLASSES = 5
CLASS_COLOR_MEANS = np.asarray(
    [[0.85, 0.35, 0.30], [0.30, 0.70, 0.35], [0.30, 0.40, 0.85], [0.85, 0.75, 0.25], [0.65, 0.35, 0.75]],
    np.float32,
)  # rows: disc, square, triangle, ring, bar
COLOR_SPREAD = 0.15
FOREIGN_COLOR_PROBABILITY = 0.3
TEXTURES = ("flat", "stripes", "checker", "speckle", "radial")
PREFERRED_TEXTURE = ("radial", "checker", "speckle", "flat", "stripes")  # per class 1..5
PREFERRED_TEXTURE_PROBABILITY = 0.6


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: image uint8 (size, size, 3), label uint8 (size, size) in 0..5.

    Deterministic given the state of ``rng``. Coordinates are fractions of the image side, so a scene
    looks the same at any ``size`` apart from pixelation.
    """
    if size < 8:
        raise ValueError(f"synthetic scene size must be >= 8 pixels, got {size}")
    y, x = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    image = _background(rng, size, y, x)
    label = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(3, 9)):
        mask = _distractor_mask(rng, y, x)
        image[mask] = _fill(rng, int(rng.integers(1, NUM_SHAPE_CLASSES + 1)), y, x, (0.5, 0.5))[mask]
    for _ in range(rng.integers(3, 7)):
        shape_class = int(rng.integers(1, NUM_SHAPE_CLASSES + 1))
        center = rng.uniform(0.1, 0.9, size=2)
        mask = _shape_mask(shape_class, center, rng.uniform(0.1, 0.22), rng.uniform(0, 2 * np.pi), y, x)
        image[mask] = _fill(rng, shape_class, y, x, center)[mask]
        label[mask] = shape_class
    image = scipy.ndimage.gaussian_filter(image, sigma=(0.7, 0.7, 0))
    image += rng.normal(0.0, rng.uniform(0.02, 0.07), image.shape).astype(np.float32)
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8), label


def _background(rng: np.random.Generator, size: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    base = rng.uniform(0.25, 0.75, size=3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = rng.uniform(0.0, 0.25) * ((x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle))
    coarse = rng.normal(0.0, 0.12, size=(5, 5, 3)).astype(np.float32)
    blotches = scipy.ndimage.zoom(coarse, (size / 5, size / 5, 1), order=1, mode="nearest")
    return base + gradient[..., None] + blotches[:size, :size]


def _rotated(center, angle: float, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dx, dy = x - center[0], y - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    return dx * cos + dy * sin, -dx * sin + dy * cos


def _shape_mask(shape_class: int, center, radius: float, angle: float, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Boolean (S, S) mask of a shape of ``shape_class`` (areas ~2.9 radius² for every class)."""
    u, v = _rotated(center, angle, y, x)
    if shape_class == 1:  # disc
        return u * u + v * v <= radius**2
    if shape_class == 2:  # square
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85 * radius
    if shape_class == 3:  # equilateral triangle, inradius 0.75 radius
        edge = np.maximum(u, np.maximum(-0.5 * u + 0.866 * v, -0.5 * u - 0.866 * v))
        return edge <= 0.75 * radius
    if shape_class == 4:  # ring
        outer = 1.15 * radius
        distance2 = u * u + v * v
        return (distance2 <= outer**2) & (distance2 >= (outer * 0.55) ** 2)
    return (np.abs(u) <= 1.6 * radius) & (np.abs(v) <= 0.45 * radius)  # bar


def _distractor_mask(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A small blob or a thin line; it stays background."""
    center = rng.uniform(0.0, 1.0, size=2)
    u, v = _rotated(center, rng.uniform(0, 2 * np.pi), y, x)
    if rng.random() < 0.5:
        return (u / rng.uniform(0.02, 0.06)) ** 2 + (v / rng.uniform(0.02, 0.06)) ** 2 <= 1.0
    return (np.abs(u) <= rng.uniform(0.1, 0.3)) & (np.abs(v) <= rng.uniform(0.008, 0.02))


def _fill(rng: np.random.Generator, shape_class: int, y: np.ndarray, x: np.ndarray, center) -> np.ndarray:
    """A textured colour field (S, S, 3) drawn from ``shape_class``'s (overlapping) distributions."""
    color_class = shape_class
    if rng.random() < FOREIGN_COLOR_PROBABILITY:
        color_class = int(rng.integers(1, NUM_SHAPE_CLASSES + 1))
    color = CLASS_COLOR_MEANS[color_class - 1] + rng.normal(0.0, COLOR_SPREAD, size=3).astype(np.float32)
    if rng.random() < PREFERRED_TEXTURE_PROBABILITY:
        texture = PREFERRED_TEXTURE[shape_class - 1]
    else:
        texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    amplitude = rng.uniform(0.08, 0.2)
    return color + amplitude * _texture(rng, texture, y, x, center)[..., None]


def _texture(rng: np.random.Generator, texture: str, y: np.ndarray, x: np.ndarray, center) -> np.ndarray:
    """A pattern in [-1, 1], shape (S, S)."""
    if texture == "flat":
        return np.zeros_like(x)
    if texture == "speckle":
        return rng.uniform(-1.0, 1.0, size=x.shape).astype(np.float32)
    if texture == "radial":
        u, v = _rotated(center, 0.0, y, x)
        return np.cos(2 * np.pi * rng.uniform(8, 20) * np.sqrt(u * u + v * v))
    u, v = _rotated(center, rng.uniform(0, np.pi), y, x)
    frequency = rng.uniform(8, 20)
    if texture == "stripes":
        return np.sin(2 * np.pi * frequency * u)
    return np.sign(np.sin(2 * np.pi * frequency * u) * np.sin(2 * np.pi * frequency * v))  # checker
