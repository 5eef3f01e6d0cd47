"""Digital corruptions: brightness, contrast, saturate, elastic transform, pixelate, JPEG."""
from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image

from flowaug.data.corruptions._common import (
    bilinear_sample, gaussian_hw, reflect101, register, symmetric, to_uint8, to_unit,
)

# hsv2rgb: for each sextant floor(6h) % 6, which of (v, t, p, q) becomes (r, g, b).
_SEXTANT_CHANNELS = np.array([[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]])


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """float (..., 3) RGB in [0, 1] -> HSV in [0, 1], the arithmetic of ``skimage.color.rgb2hsv``
    (ties of the max channel resolved blue over green over red; grey pixels get h = s = 0)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    delta = np.ptp(rgb, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(delta == 0, 0.0, delta / v)
        h = np.where(b == v, 4.0 + (r - g) / delta, np.where(g == v, 2.0 + (b - r) / delta, (g - b) / delta))
    h = np.where(delta == 0, 0.0, (h / 6.0) % 1.0)
    return np.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """float (..., 3) HSV in [0, 1] -> RGB, the arithmetic of ``skimage.color.hsv2rgb``."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sextant = np.floor(h * 6)
    f = h * 6 - sextant
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    candidates = np.stack([v, t, p, q], axis=-1)
    channels = _SEXTANT_CHANNELS[sextant.astype(np.int64) % 6]
    return np.take_along_axis(candidates, channels, axis=-1)


@register("brightness")
def brightness(images: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """V + c in HSV, clipped to [0, 1]. Deterministic."""
    hsv = rgb_to_hsv(to_unit(images))
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return to_uint8(hsv_to_rgb(hsv))


@register("saturate")
def saturate(images: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """S * c0 + c1 in HSV, clipped to [0, 1]. Deterministic."""
    hsv = rgb_to_hsv(to_unit(images))
    hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return to_uint8(hsv_to_rgb(hsv))


@register("contrast")
def contrast(images: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """(x - mean) * c + mean with the per-image, per-channel mean. Deterministic."""
    x = to_unit(images)
    means = x.mean(axis=(1, 2), keepdims=True)
    return to_uint8((x - means) * c + means)


def _inverse_affines(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """float64 (B,2,3) maps taking target points (B,3,2) (x, y) back to source points (3,2)."""
    ones = np.ones(target.shape[:2] + (1,))
    solution = np.linalg.solve(np.concatenate([target, ones], axis=2), np.broadcast_to(source, target.shape))
    return solution.transpose(0, 2, 1)


@register("elastic_transform")
def elastic_transform(images: np.ndarray, c: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Random affine (3 points jittered by U(-c2, c2)) then a smooth random displacement field
    (U(-1, 1) smoothed by a gaussian of sigma c1, truncate 3, times c0), both bilinear.

    As the official code: ``cv2.warpAffine`` with border REFLECT_101, then
    ``scipy.ndimage.map_coordinates(order=1, mode="reflect")``.
    """
    alpha, sigma, jitter = c
    x = (images / np.float32(255)).astype(np.float32)
    batch, height, width = x.shape[:3]
    centre = np.float32([width, height]) // 2
    square = min(height, width) // 3
    source = np.float32([centre + square, [centre[0] + square, centre[1] - square], centre - square])
    target = source + rng.uniform(-jitter, jitter, size=(batch, 3, 2)).astype(np.float32)
    inverse = _inverse_affines(source.astype(np.float64), target.astype(np.float64))
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    src_cols = inverse[:, 0, 0, None, None] * cols + inverse[:, 0, 1, None, None] * rows + inverse[:, 0, 2, None, None]
    src_rows = inverse[:, 1, 0, None, None] * cols + inverse[:, 1, 1, None, None] * rows + inverse[:, 1, 2, None, None]
    x = bilinear_sample(x, src_rows, src_cols, reflect101)
    dx = (gaussian_hw(rng.uniform(-1, 1, size=(batch, height, width)), sigma, mode="reflect", truncate=3) * alpha)
    dy = (gaussian_hw(rng.uniform(-1, 1, size=(batch, height, width)), sigma, mode="reflect", truncate=3) * alpha)
    out = bilinear_sample(x, rows + dy.astype(np.float32), cols + dx.astype(np.float32), symmetric)
    return to_uint8(out)


PIL_PRECISION_BITS = 32 - 8 - 2


@functools.lru_cache(maxsize=None)
def pil_box_weights(in_size: int, out_size: int) -> np.ndarray:
    """float64 (out_size, in_size) integer weights of Pillow's BOX resize of 8-bit images.

    Pillow (``libImaging/Resample.c``): scale = in/out, support = 0.5 * max(scale, 1); input
    pixel x gets weight 1 when (x - centre + 0.5) / max(scale, 1) is in (-0.5, 0.5], weights are
    normalised, then stored in fixed point with ``PIL_PRECISION_BITS`` fractional bits.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    inverse = 1.0 / filterscale
    weights = np.zeros((out_size, in_size))
    for xx in range(out_size):
        centre = (xx + 0.5) * scale
        xmin = max(int(centre - support + 0.5), 0)
        xmax = min(int(centre + support + 0.5), in_size)
        taps = np.array([1.0 if -0.5 < (x - centre + 0.5) * inverse <= 0.5 else 0.0 for x in range(xmin, xmax)])
        taps = taps / taps.sum() if taps.sum() else taps
        weights[xx, xmin:xmax] = np.floor(0.5 + taps * (1 << PIL_PRECISION_BITS))
    return weights


def pil_box_resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """``PIL.Image.resize((width, height), Image.BOX)`` of uint8 (B,H,W,C), vectorised and bit-exact:
    horizontal pass then vertical pass, each rounded to uint8 in fixed point."""

    def one_pass(x: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
        moved = np.moveaxis(x.astype(np.float64), axis, -1)
        acc = moved @ weights.T + (1 << (PIL_PRECISION_BITS - 1))
        out = np.clip(np.floor(acc / (1 << PIL_PRECISION_BITS)), 0, 255).astype(np.uint8)
        return np.moveaxis(out, -1, axis)

    x = images
    if width != x.shape[2]:
        x = one_pass(x, pil_box_weights(x.shape[2], width), 2)
    if height != x.shape[1]:
        x = one_pass(x, pil_box_weights(x.shape[1], height), 1)
    return x


@register("pixelate")
def pixelate(images: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """PIL BOX resize to int(size * c), then BOX back to the original size. Deterministic."""
    height, width = images.shape[1:3]
    small = pil_box_resize(images, int(height * c), int(width * c))
    return pil_box_resize(small, height, width)


@register("jpeg_compression")
def jpeg_compression(images: np.ndarray, c: int, rng: np.random.Generator) -> np.ndarray:
    """PIL JPEG encode at quality ``c`` and decode. Deterministic.

    A per-image loop: each image is its own JPEG stream (about 40 us per 32x32 image).
    """
    out = np.empty_like(images)
    for index, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=c)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[index] = np.asarray(decoded.convert("RGB"))
    return out
