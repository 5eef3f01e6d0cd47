"""Image files on disk: the extensions flowaug reads and how it fits an image to a square size."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from flowaug.errors import DataFormatError, DatasetNotFoundError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})


def fit_image(image: Image.Image, size: int, mode: str = "RGB",
              resample: Image.Resampling = Image.Resampling.BICUBIC) -> np.ndarray:
    """uint8 (size, size[, channels]) of ``image`` converted to ``mode``: the shorter side resized to
    ``size`` with ``resample``, then centre-cropped (masks: mode "L", NEAREST, so they stay binary)."""
    image = image.convert(mode)
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    if (width, height) != image.size:
        image = image.resize((width, height), resample)
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def read_image_folder(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """Every image file under ``path`` (recursively, sorted by path) as uint8 (N, S, S, 3), S = ``image_size``."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist or is not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataFormatError(f"image folder {root} contains no images "
                              f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, recursively)")
    images = []
    for file in tqdm(files, desc=f"reading {root.name}", unit="img", leave=False):
        try:
            with Image.open(file) as image:
                images.append(fit_image(image, image_size))
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise DataFormatError(f"cannot read image {file}: {error}; remove or fix the file") from error
    return np.stack(images)
