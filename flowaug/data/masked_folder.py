"""Your own images with foreground masks: an image folder beside a mask folder, for flowaug.masking.

    images/<class>/<name>.<ext>      masks/<class>/<name>.<ext>   (same relative path, any image format)

A mask is read as greyscale; pixels above half intensity are foreground. Both are resized on the
shorter side and centre-cropped to ``size`` (masks with nearest-neighbour sampling, so they stay
binary).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from flowaug.errors import DataFormatError, DatasetNotFoundError
from flowaug.data.base import to_float_chw
from flowaug.data.image_files import IMAGE_EXTENSIONS, fit_image


@dataclass(frozen=True)
class MaskedImages:
    """images float (N,3,S,S) in [0,1], labels int64 (N,), masks float (N,1,S,S) in {0,1}, class names."""

    images: Tensor
    labels: Tensor
    masks: Tensor
    classes: tuple[str, ...]


def load_masked_folder(images_dir: str | os.PathLike, masks_dir: str | os.PathLike, size: int = 32) -> MaskedImages:
    """Read ``images_dir/<class>/<file>`` and the mask at the same relative path under ``masks_dir``
    (any image extension). Raises naming the first image without a mask or the unreadable file."""
    images_dir, masks_dir = Path(images_dir).expanduser(), Path(masks_dir).expanduser()
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DatasetNotFoundError(f"{folder} does not exist or is not a directory")
    classes = tuple(sorted(p.name for p in images_dir.iterdir() if p.is_dir()))
    if not classes:
        raise DataFormatError(f"{images_dir} has no class folders; expected images_dir/<class>/<image>")
    masks_by_stem = {p.relative_to(masks_dir).with_suffix(""): p for p in masks_dir.rglob("*")
                     if p.suffix.lower() in IMAGE_EXTENSIONS}
    images, masks, labels = [], [], []
    for label, name in enumerate(classes):
        for file in sorted(p for p in (images_dir / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
            mask_file = masks_by_stem.get(file.relative_to(images_dir).with_suffix(""))
            if mask_file is None:
                raise DataFormatError(f"no mask for {file}: expected {masks_dir / file.relative_to(images_dir)} "
                                      f"(any image extension)")
            try:
                with Image.open(file) as image, Image.open(mask_file) as mask:
                    images.append(fit_image(image, size))
                    masks.append(fit_image(mask, size, "L", Image.Resampling.NEAREST) > 127)
            except (UnidentifiedImageError, OSError) as error:
                raise DataFormatError(f"cannot read {file} or its mask {mask_file}: {error}") from error
            labels.append(label)
    if not images:
        raise DataFormatError(f"{images_dir} holds no images under its class folders")
    return MaskedImages(to_float_chw(np.stack(images)),
                        torch.tensor(labels), torch.from_numpy(np.stack(masks))[:, None].float(), classes)
