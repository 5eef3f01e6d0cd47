"""Registry, input validation and the shared float/uint8 conversions of the corruptions."""
from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from flowaug.data.cifar_c import SEVERITIES
from flowaug.data.corruptions.params import PARAMS

CorruptionFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
REGISTRY: dict[str, CorruptionFn] = {}


def check_inputs(images: np.ndarray, severity: int, rng: np.random.Generator) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``images`` is uint8 (B,H,W,3), severity 1..5, rng a Generator."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise TypeError(f"images must be a uint8 numpy array, got {type(images).__name__} "
                        f"of dtype {getattr(images, 'dtype', None)}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (B, H, W, 3) (HWC RGB), got {images.shape}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")


def register(name: str) -> Callable[[Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]], CorruptionFn]:
    """Register ``impl(images, c, rng)`` (``c`` = the official parameter) as ``fn(images, severity, rng)``."""

    def decorate(impl: Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]) -> CorruptionFn:
        @functools.wraps(impl)
        def corruption(images: np.ndarray, severity: int, rng: np.random.Generator, **options: Any) -> np.ndarray:
            check_inputs(images, severity, rng)
            return impl(images, PARAMS[name][severity - 1], rng, **options)

        REGISTRY[name] = corruption
        return corruption

    return decorate


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 (B,H,W,3) -> float64 in [0, 1] (``x / 255.`` as the official code)."""
    return images / 255.0


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8 by clipping and truncation (``np.uint8(np.clip(x, 0, 1) * 255)``)."""
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def gaussian_hw(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """``skimage.filters.gaussian`` per image: separable gaussian over axes 1, 2 of (B,H,W[,C]).

    ``mode`` is scipy's border mode ("nearest" is skimage's default); a zero sigma is the identity.
    """
    if sigma <= 0:
        return x
    out = ndimage.gaussian_filter1d(x, sigma, axis=1, mode=mode, truncate=truncate)
    return ndimage.gaussian_filter1d(out, sigma, axis=2, mode=mode, truncate=truncate)


def reflect101(index: np.ndarray, size: int) -> np.ndarray:
    """Map integer indices into [0, size) by mirroring without repeating the edge (OpenCV REFLECT_101)."""
    period = 2 * size - 2
    index = np.mod(index, period)
    return np.where(index >= size, period - index, index)


def symmetric(index: np.ndarray, size: int) -> np.ndarray:
    """Map integer indices into [0, size) by mirroring with the edge repeated (scipy "reflect")."""
    index = np.mod(index, 2 * size)
    return np.where(index >= size, 2 * size - 1 - index, index)


def bilinear_sample(
    x: np.ndarray, rows: np.ndarray, cols: np.ndarray, border: Callable[[np.ndarray, int], np.ndarray]
) -> np.ndarray:
    """Bilinear lookup of x (B,H,W,C) at float positions rows, cols (B,H,W); ``border`` maps indices."""
    b = np.arange(x.shape[0])[:, None, None]
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
    ra, rb = border(r0, x.shape[1]), border(r0 + 1, x.shape[1])
    ca, cb = border(c0, x.shape[2]), border(c0 + 1, x.shape[2])
    top = x[b, ra, ca] * (1 - fc) + x[b, ra, cb] * fc
    bottom = x[b, rb, ca] * (1 - fc) + x[b, rb, cb] * fc
    return top * (1 - fr) + bottom * fr
