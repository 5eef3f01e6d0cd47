"""Noise corruptions: gaussian, shot (Poisson), impulse (salt and pepper), speckle."""
from __future__ import annotations

import numpy as np

from flowaug.data.corruptions._common import register, to_uint8, to_unit


@register("gaussian_noise")
def gaussian_noise(images: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """x + N(0, c) on [0, 1], clipped."""
    x = to_unit(images)
    return to_uint8(x + rng.normal(scale=c, size=x.shape))


@register("shot_noise")
def shot_noise(images: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """poisson(x * c) / c on [0, 1], clipped."""
    x = to_unit(images)
    return to_uint8(rng.poisson(x * c) / c)


@register("impulse_noise")
def impulse_noise(images: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper (``skimage.util.random_noise(mode="s&p")``): each value flips with
    probability ``c`` to 1 or 0 with equal odds, per channel."""
    x = to_unit(images)
    flipped = rng.random(x.shape) < c
    salted = rng.random(x.shape) < 0.5
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return to_uint8(x)


@register("speckle_noise")
def speckle_noise(images: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """x + x * N(0, c) on [0, 1], clipped."""
    x = to_unit(images)
    return to_uint8(x + x * rng.normal(scale=c, size=x.shape))
