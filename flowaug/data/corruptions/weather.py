"""Weather corruptions: snow, frost, fog, spatter."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image

from flowaug.data.corruptions import _cv
from flowaug.data.corruptions._common import gaussian_hw, register, to_uint8, to_unit
from flowaug.data.corruptions.blur import clipped_zoom_matrix, motion_blur_uint8
from flowaug.data.paths import resolve_data_root
from flowaug.errors import DataFormatError, DatasetNotFoundError

# The official generator draws np.random.randint(5): frost6.jpg is never used.
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
FROST_SOURCE = "https://github.com/hendrycks/robustness (ImageNet-C/create_c/frost*.png|jpg)"
FROST_SCALE = 5  # cv2.resize(fx=fy=0.2)


def default_frost_dir() -> Path:
    """``<data root>/cifar_c_frost`` (see :func:`flowaug.data.paths.resolve_data_root`)."""
    return resolve_data_root(None) / "cifar_c_frost"


@functools.lru_cache(maxsize=4)
def load_frost_textures(frost_dir: str) -> tuple[np.ndarray, ...]:
    """The 5 frost textures, uint8 (h,w,3) RGB, resized by 0.2 as ``cv2.resize(INTER_LINEAR)`` does.

    At scale 1/5 OpenCV's bilinear source position (d + 0.5) * 5 - 0.5 = 5d + 2 is an integer,
    so the resize picks pixels 2, 7, 12, ... exactly; the output size is round(0.2 * size).
    A PNG's alpha channel is dropped (``cv2.imread`` colour mode).
    """
    folder = Path(frost_dir)
    missing = [name for name in FROST_FILES if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"frost textures {', '.join(missing)} not found in {folder}; get frost1..frost5 from "
            f"{FROST_SOURCE} and pass their folder as --frost-dir (or frost_dir=...)"
        )
    textures = []
    for name in FROST_FILES:
        try:
            with Image.open(folder / name) as image:
                pixels = np.asarray(image.convert("RGB"))
        except OSError as error:
            raise DataFormatError(f"{folder / name}: cannot read frost texture ({error})") from error
        height, width = (int(np.rint(side / FROST_SCALE)) for side in pixels.shape[:2])
        small = pixels[FROST_SCALE // 2 :: FROST_SCALE, FROST_SCALE // 2 :: FROST_SCALE][:height, :width]
        textures.append(np.ascontiguousarray(small))
    return tuple(textures)


@register("frost")
def frost(
    images: np.ndarray, c: tuple[float, float], rng: np.random.Generator, frost_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """c0 * x + c1 * a random crop of one of 5 frost textures (0..255, clipped).

    ``frost_dir`` holds frost1..frost5 (default :func:`default_frost_dir`); a missing texture
    raises :class:`~flowaug.errors.DatasetNotFoundError`.
    """
    textures = load_frost_textures(str(frost_dir if frost_dir is not None else default_frost_dir()))
    batch, height, width = images.shape[:3]
    choice = rng.integers(len(textures), size=batch)
    layer = np.empty(images.shape, dtype=np.float64)
    for index, texture in enumerate(textures):
        (members,) = np.nonzero(choice == index)
        tops = rng.integers(0, texture.shape[0] - height, size=len(members))
        lefts = rng.integers(0, texture.shape[1] - width, size=len(members))
        rows = tops[:, None, None] + np.arange(height)[None, :, None]
        cols = lefts[:, None, None] + np.arange(width)[None, None, :]
        layer[members] = texture[rows, cols]
    return np.clip(c[0] * images + c[1] * layer, 0, 255).astype(np.uint8)


def plasma_fractal(batch: int, wibble_decay: float, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Diamond-square height maps, float64 (batch, size, size) in [0, 1], size a power of two.

    As the official ``plasma_fractal``: start from 0 at the corner, noise amplitude 100 halved
    (divided by ``wibble_decay``) per level, midpoint value = sum/4 + wibble * U(-wibble, wibble).
    """
    if size & (size - 1):
        raise ValueError(f"plasma size must be a power of two, got {size}")
    field = np.zeros((batch, size, size))
    step, wibble = size, 100.0

    def wibbled_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = field[:, 0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        field[:, half:size:step, half:size:step] = wibbled_mean(square)
        centres = field[:, half:size:step, half:size:step]
        corners = field[:, 0:size:step, 0:size:step]
        left = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        field[:, 0:size:step, half:size:step] = wibbled_mean(left)
        top = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        field[:, half:size:step, 0:size:step] = wibbled_mean(top)
        step //= 2
        wibble /= wibble_decay
    field -= field.min(axis=(1, 2), keepdims=True)
    return field / field.max(axis=(1, 2), keepdims=True)


@register("fog")
def fog(images: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Add c0 * a plasma fractal (decay c1), rescale by max / (max + c0) per image."""
    x = to_unit(images)
    batch, height, width = x.shape[:3]
    size = 1 << int(np.ceil(np.log2(max(height, width))))
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + c[0] * plasma_fractal(batch, c[1], rng, size)[:, :height, :width, None]
    return to_uint8(x * max_val / (max_val + c[0]))


@register("snow")
def snow(images: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    """Zoomed, thresholded gaussian snow layer, ImageMagick motion-blurred at U(-135, -45) degrees,
    added twice (and rotated 180 degrees) to the image brightened towards 1.5 * grey + 0.5."""
    loc, scale, zoom, threshold, radius, sigma, blend = c
    x = (images / np.float32(255)).astype(np.float32)
    batch, height, width = x.shape[:3]
    if height != width:
        raise ValueError(f"snow needs square images, got {height}x{width}")
    layer = rng.normal(loc=loc, scale=scale, size=(batch, height, width))
    matrix = clipped_zoom_matrix(height, float(zoom))
    layer = matrix @ layer @ matrix.T
    layer[layer < threshold] = 0
    layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8)[..., None]
    angles = rng.uniform(-135, -45, size=batch)
    layer = motion_blur_uint8(layer, radius, sigma, angles) / 255.0
    grey = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]
    x = blend * x + (1 - blend) * np.maximum(x, grey * 1.5 + 0.5)
    return to_uint8(x + layer + layer[:, ::-1, ::-1])


# float32 like the official colour planes (python float * float32 ones).
WATER_COLOUR = (np.array([175, 238, 238]) / 255.0).astype(np.float32)
MUD_COLOUR = (np.array([63, 42, 20]) / 255.0).astype(np.float32)
SPATTER_RIDGE = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])


def _water_mask(liquid: np.ndarray) -> np.ndarray:
    """Official water-drop shading of a thresholded liquid layer float (B,H,W) -> float (B,H,W) in [0, 1].

    Canny edges -> distance to them, truncated at 20 -> 3x3 blur -> uint8 -> histogram
    equalisation -> ridge filter -> 3x3 blur, times the layer, divided by its per-image max.
    The layer is cast to uint8 as ``astype(np.uint8)`` does on x86 (truncation, wrap-around).
    """
    layer = (np.floor(liquid * 255).astype(np.int64) & 255).astype(np.uint8)
    distance = _cv.distance_transform(np.where(_cv.canny(layer, 50, 150), 0, 255).astype(np.uint8))
    distance = _cv.box_blur3(np.minimum(distance, np.float32(20))).astype(np.uint8)
    distance = _cv.box_blur3(_cv.filter2d_uint8(_cv.equalize_hist(distance), SPATTER_RIDGE)).astype(np.float32)
    mask = layer * distance
    peak = mask.max(axis=(1, 2), keepdims=True)
    return np.divide(mask, peak, out=np.zeros_like(mask), where=peak > 0)


@register("spatter")
def spatter(images: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    """Smoothed, thresholded gaussian liquid layer drawn as pale-turquoise water drops (mode 0,
    added) or brown mud (mode 1, blended over the image)."""
    loc, scale, sigma, threshold, intensity, mode = c
    x = (images / np.float32(255)).astype(np.float32)
    liquid = gaussian_hw(rng.normal(loc=loc, scale=scale, size=x.shape[:3]), sigma)
    liquid[liquid < threshold] = 0
    if mode == 0:
        mask = _water_mask(liquid)[..., None] * intensity
        return to_uint8(x + mask * WATER_COLOUR)
    mud = gaussian_hw(np.where(liquid > threshold, 1, 0).astype(np.float32), intensity)
    mud[mud < 0.8] = 0
    mud = mud[..., None]
    return to_uint8(x * (1 - mud) + MUD_COLOUR * mud)
