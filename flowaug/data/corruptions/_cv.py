"""Batched numpy versions of the OpenCV operations the official ``spatter`` calls.

All act on (B,H,W) arrays image by image and follow OpenCV's definitions (borders,
rounding, fixed-point weights) as documented per function.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

# Canny: tan(22.5 deg) in Q15 fixed point, as OpenCV's canny.cpp.
CANNY_SHIFT = 15
TG22 = int(0.4142135623730950488 * (1 << CANNY_SHIFT) + 0.5)
# distanceTransform(DIST_L2, 5): chamfer weights 1, 1.4, 2.1969 in Q16 fixed point.
DIST_SHIFT = 16
CHAMFER = tuple(int(np.rint(w * (1 << DIST_SHIFT))) for w in (1.0, 1.4, 2.1969))
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])


def _plane(kernel: np.ndarray) -> np.ndarray:
    """A 2-D kernel as a (1,k,k) weight that leaves the batch axis alone."""
    return np.asarray(kernel)[None]


def canny(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """``cv2.Canny(image, low, high)`` (aperture 3, L1 gradient) on uint8 (B,H,W) -> bool edges.

    Sobel with replicated borders; non-maximum suppression in 4 directions with OpenCV's
    fixed-point tan(22.5)/tan(67.5) tests and zero magnitude outside the image; hysteresis:
    pixels above ``low`` kept when 8-connected to one above ``high``.
    """
    img = image.astype(np.int64)
    dx = ndimage.correlate(img, _plane(SOBEL_X), mode="nearest")
    dy = ndimage.correlate(img, _plane(SOBEL_X.T), mode="nearest")
    mag = np.abs(dx) + np.abs(dy)
    padded = np.pad(mag, ((0, 0), (1, 1), (1, 1)))
    height, width = mag.shape[1:]

    def neighbour(dr: int | np.ndarray, dc: int | np.ndarray) -> np.ndarray:
        rows = np.arange(height)[None, :, None] + 1 + dr
        cols = np.arange(width)[None, None, :] + 1 + dc
        return padded[np.arange(len(mag))[:, None, None], rows, cols]

    xs, ys = np.abs(dx), np.abs(dy) << CANNY_SHIFT
    tg22x = xs * TG22
    horizontal = ys < tg22x
    vertical = ~horizontal & (ys > tg22x + (xs << (CANNY_SHIFT + 1)))
    diagonal = ~horizontal & ~vertical
    s = np.where((dx ^ dy) < 0, -1, 1)
    keep = np.where(
        horizontal,
        (mag > neighbour(0, -1)) & (mag >= neighbour(0, 1)),
        np.where(
            vertical,
            (mag > neighbour(-1, 0)) & (mag >= neighbour(1, 0)),
            diagonal & (mag > neighbour(-1, -s)) & (mag > neighbour(1, s)),
        ),
    )
    weak = keep & (mag > int(np.floor(low)))
    strong = weak & (mag > int(np.floor(high)))
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    labels, _ = ndimage.label(weak, structure=structure)
    seeds = np.unique(labels[strong])
    return np.isin(labels, seeds[seeds > 0])


def distance_transform(image: np.ndarray) -> np.ndarray:
    """``cv2.distanceTransform(image, DIST_L2, 5)``: float32 (B,H,W) distance of every non-zero
    pixel to the nearest zero pixel by the 5x5 chamfer (weights 1, 1.4, 2.1969 in Q16), two passes.
    Images without a zero pixel get a huge distance."""
    a, b, c = CHAMFER
    inf = np.int64(1) << 40
    batch, height, width = image.shape
    dist = np.full((batch, height + 4, width + 4), inf, dtype=np.int64)
    dist[:, 2:-2, 2:-2] = np.where(image == 0, 0, inf)
    ramp = np.arange(width, dtype=np.int64) * a
    forward = ((-2, -1, c), (-2, 1, c), (-1, -2, c), (-1, -1, b), (-1, 0, a), (-1, 1, b), (-1, 2, c))
    for row in range(2, height + 2):
        t = dist[:, row, 2:-2].copy()
        for dr, dc, w in forward:
            np.minimum(t, dist[:, row + dr, 2 + dc : width + 2 + dc] + w, out=t)
        dist[:, row, 2:-2] = ramp + np.minimum.accumulate(t - ramp, axis=1)
    for row in range(height + 1, 1, -1):
        t = dist[:, row, 2:-2].copy()
        for dr, dc, w in forward:
            np.minimum(t, dist[:, row - dr, 2 - dc : width + 2 - dc] + w, out=t)
        reverse = (t - ramp[::-1])[:, ::-1]
        dist[:, row, 2:-2] = ramp[::-1] + np.minimum.accumulate(reverse, axis=1)[:, ::-1]
    return (dist[:, 2:-2, 2:-2] * np.float32(1.0 / (1 << DIST_SHIFT))).astype(np.float32)


def box_blur3(image: np.ndarray) -> np.ndarray:
    """``cv2.blur(image, (3, 3))`` (border REFLECT_101): float in, float32 mean out; uint8 in,
    uint8 out rounded to nearest."""
    total = ndimage.correlate(image.astype(np.float64), np.ones((1, 3, 3)), mode="mirror")
    if image.dtype == np.uint8:
        return np.rint(total / 9).astype(np.uint8)
    return (total / 9).astype(np.float32)


def equalize_hist(image: np.ndarray) -> np.ndarray:
    """``cv2.equalizeHist`` per image on uint8 (B,H,W): lut[v] = round(255 * (cdf(v) - cdf(v0)) /
    (N - count(v0))) with v0 the smallest value present, float32 arithmetic, round half to even."""
    batch = len(image)
    flat = image.reshape(batch, -1)
    total = flat.shape[1]
    hist = np.zeros((batch, 256), dtype=np.int64)
    np.add.at(hist, (np.arange(batch)[:, None], flat), 1)
    first = np.argmax(hist > 0, axis=1)
    first_count = hist[np.arange(batch), first]
    constant = first_count == total
    scale = np.float32(255) / np.maximum(total - first_count, 1).astype(np.float32)
    cumulative = (np.cumsum(hist, axis=1) - first_count[:, None]).astype(np.float32)
    lut = np.clip(np.rint(cumulative * scale[:, None]), 0, 255).astype(np.uint8)
    lut[constant] = first[constant, None].astype(np.uint8)
    return np.take_along_axis(lut, flat.astype(np.int64), axis=1).reshape(image.shape)


def filter2d_uint8(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``cv2.filter2D(image, cv2.CV_8U, kernel)`` for an integer kernel: correlation, border
    REFLECT_101, saturated to [0, 255]."""
    out = ndimage.correlate(image.astype(np.int64), _plane(kernel), mode="mirror")
    return np.clip(out, 0, 255).astype(np.uint8)
