"""Blur corruptions: defocus, glass, motion, zoom, gaussian; plus the motion-blur and
clipped-zoom kernels that ``snow`` reuses."""
from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from flowaug.data.corruptions._common import gaussian_hw, register, to_uint8, to_unit


@functools.lru_cache(maxsize=None)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The official defocus kernel: a 17x17 disk ``x^2 + y^2 <= r^2`` normalised to sum 1,
    smoothed by a 3x3 gaussian of sigma ``alias_blur`` (``cv2.GaussianBlur``), cropped to its
    non-zero support. float64 (k,k), symmetric."""
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    taps = np.exp(-(np.arange(-1, 2) ** 2) / (2 * alias_blur**2))
    taps /= taps.sum()
    kernel = ndimage.correlate1d(ndimage.correlate1d(disk, taps, axis=0, mode="mirror"), taps, axis=1, mode="mirror")
    rows, cols = np.nonzero(kernel)
    return kernel[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


@register("defocus_blur")
def defocus_blur(images: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Correlate with the anti-aliased disk (``cv2.filter2D``, border REFLECT_101). Deterministic."""
    kernel = disk_kernel(*c)
    return to_uint8(ndimage.correlate(to_unit(images), kernel[None, :, :, None], mode="mirror"))


@register("gaussian_blur")
def gaussian_blur(images: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """``skimage.filters.gaussian`` (border "nearest", truncate 4) with sigma ``c``. Deterministic."""
    return to_uint8(gaussian_hw(to_unit(images), c))


def glass_shuffle(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """One pass of the official local pixel shuffle, given its random offsets.

    x: (B,H,W,C); offsets: int (B, H-2, W-2, 2) of (dy, dx), each drawn from
    ``randint(-1, 1)``, i.e. in {-1, 0}, for the pixels (h, w) with 2 <= h, w < H.

    The official loop visits h = H-1..2, w = W-1..2 and runs
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on numpy views, which copies x[h', w'] into
    x[h, w] and leaves x[h', w'] unchanged. The source (h + dy, w + dx) with dy, dx in {-1, 0}
    is visited after (h, w), so it still holds its value from before the pass: the loop equals
    this parallel gather exactly.
    """
    height, width = x.shape[1:3]
    b = np.arange(x.shape[0])[:, None, None]
    rows = np.arange(2, height)[None, :, None] + offsets[..., 0]
    cols = np.arange(2, width)[None, None, :] + offsets[..., 1]
    out = x.copy()
    out[:, 2:, 2:] = x[b, rows, cols]
    return out


@register("glass_blur")
def glass_blur(images: np.ndarray, c: tuple[float, int, int], rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, truncate to uint8, ``iterations`` local shuffles (:func:`glass_shuffle`),
    gaussian blur again."""
    sigma, max_delta, iterations = c
    x = (gaussian_hw(to_unit(images), sigma) * 255).astype(np.uint8)
    batch, height, width = x.shape[:3]
    for _ in range(iterations):
        offsets = rng.integers(-max_delta, max_delta, size=(batch, height - 2, width - 2, 2))
        x = glass_shuffle(x, offsets)
    return to_uint8(gaussian_hw(x / 255.0, sigma))


def motion_blur_float(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick's ``MotionBlurImage`` (magick/effect.c) on x (B,H,W,C) float, one angle per image.

    Kernel: width = 2 * ceil(radius) + 1 taps, weight_i = exp(-i^2 / (2 sigma^2)) normalised,
    i = 0..width-1 (one-sided); tap i reads the pixel at column offset
    ceil(i cos(a) - 0.5) and row offset ceil(i sin(a) - 0.5), with edge clamping
    (ImageMagick's default virtual-pixel method). Returns float (B,H,W,C), unrounded.
    """
    width = int(2 * np.ceil(radius) + 1)
    taps = np.arange(width, dtype=np.float64)
    weights = np.exp(-(taps**2) / (2 * sigma**2))
    weights /= weights.sum()
    theta = np.deg2rad(np.asarray(angles, dtype=np.float64))[:, None]
    point_x, point_y = width * np.sin(theta), width * np.cos(theta)
    norm = np.hypot(point_x, point_y)
    col_offsets = np.ceil(taps * point_y / norm - 0.5).astype(np.int64)
    row_offsets = np.ceil(taps * point_x / norm - 0.5).astype(np.int64)
    batch, height, w = x.shape[:3]
    rows = np.clip(np.arange(height)[None, None, :] + row_offsets[:, :, None], 0, height - 1)
    cols = np.clip(np.arange(w)[None, None, :] + col_offsets[:, :, None], 0, w - 1)
    b = np.arange(batch)[:, None, None]
    out = np.zeros(x.shape, dtype=np.float64)
    for i in range(width):
        out += weights[i] * x[b, rows[:, i, :, None], cols[:, i, None, :]]
    return out


def motion_blur_uint8(images: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """:func:`motion_blur_float` on uint8 (B,H,W,C), rounded to the nearest uint8 as ImageMagick's
    8-bit PNG output is."""
    return np.floor(motion_blur_float(images.astype(np.float64), radius, sigma, angles) + 0.5).astype(np.uint8)


@register("motion_blur")
def motion_blur(images: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """ImageMagick motion blur of radius, sigma ``c`` at an angle ~ U(-45, 45) degrees per image."""
    angles = rng.uniform(-45, 45, size=len(images))
    return motion_blur_uint8(images, c[0], c[1], angles)


@functools.lru_cache(maxsize=None)
def clipped_zoom_matrix(size: int, zoom: float) -> np.ndarray:
    """float64 (size, size) M with ``M @ X @ M.T`` = the official ``clipped_zoom`` of X (size, size):
    crop the centre ``ceil(size / zoom)`` pixels, ``scipy.ndimage.zoom(order=1)`` by ``zoom``, crop
    the centre ``size`` pixels. The interpolation weights are scipy's own (zoom of an identity)."""
    crop = int(np.ceil(size / zoom))
    top = (size - crop) // 2
    weights = ndimage.zoom(np.eye(crop), (zoom, 1.0), order=1)
    trim = (weights.shape[0] - size) // 2
    matrix = np.zeros((size, size))
    matrix[:, top : top + crop] = weights[trim : trim + size]
    return matrix


@functools.lru_cache(maxsize=None)
def zoom_blur_operator(size: int, stop: float) -> np.ndarray:
    """float64 (size^2, size^2): (identity + sum of the clipped zooms by np.arange(1, stop, 0.01))
    / (count + 1), acting on row-major flattened images."""
    factors = np.arange(1, stop, 0.01)
    total = np.eye(size * size)
    for factor in factors:
        matrix = clipped_zoom_matrix(size, float(factor))
        total += np.kron(matrix, matrix)
    return total / (len(factors) + 1)


ZOOM_BLUR_SNAP = 1e-6
"""Grey levels added before zoom_blur truncates to uint8 (see :func:`zoom_blur`)."""


@register("zoom_blur")
def zoom_blur(images: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """Average of the image and its centre zooms by 1.00, 1.01, ... (< ``c``), as one matrix product.

    In float64, then truncated to uint8 after adding :data:`ZOOM_BLUR_SNAP` grey levels. Where every
    zoom reads the same value (flat regions) the exact average is a whole grey level, and BLAS's
    float64 sum lands within ~1e-12 of it on either side, depending on the CPU's kernel, the thread
    count and the batch's shape: plain truncation then gave that level or the one below (a flat
    image lost a level in a fifth of its values). The snap is far above that error and far below
    any real difference, so each image's bytes depend on the image alone, whatever the batch split,
    worker count, BLAS threads or CPU (tested)."""
    batch, height, width, channels = images.shape
    if height != width:
        raise ValueError(f"zoom_blur needs square images, got {height}x{width}")
    operator = zoom_blur_operator(height, c)
    flat = (images / 255.0).transpose(0, 3, 1, 2).reshape(-1, height * width)
    out = (flat @ operator.T).reshape(batch, channels, height, width).transpose(0, 2, 3, 1)
    return np.floor(np.clip(out, 0, 1) * 255 + ZOOM_BLUR_SNAP).astype(np.uint8)
