"""A few images from a named source, for pictures (``flowaug grid``, ``flowaug explain``).

Specs: ``cifar10`` / ``cifar100`` (the test split), ``spurious[:SPLIT]`` (SpuriousBackgrounds,
with exact foreground masks; default split test_shift) and ``folder:PATH`` (any image files under
PATH, read with PIL, resized on the shorter side and centre-cropped).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from flowaug.data.base import to_float_chw
from flowaug.errors import FlowaugError


@dataclass(frozen=True)
class ImageSample:
    """images float (N,3,S,S) in [0,1]; labels (N,) or None (folders); masks (N,1,S,S) or None."""

    images: Tensor
    labels: Tensor | None
    masks: Tensor | None
    description: str


def load_image_sample(spec: str, count: int, seed: int = 0, data_root: str | os.PathLike | None = None,
                      size: int = 32) -> ImageSample:
    """``count`` images of ``spec`` drawn with ``seed`` (a seeded random choice, the same every time).

    ``size`` applies to folders (CIFAR and SpuriousBackgrounds images keep their 32 pixels)."""
    kind, _, rest = spec.partition(":")
    generator = torch.Generator().manual_seed(seed)
    if kind == "spurious":
        from flowaug.data.spurious import SpuriousBackgrounds

        data = SpuriousBackgrounds(rest or "test_shift", num_images=max(count, 1000))
        pick = torch.randperm(len(data), generator=generator)[:count]
        images, labels, _, masks = data.tensors()
        return ImageSample(images[pick], labels[pick], masks[pick], data.description)
    if kind in ("cifar10", "cifar100") and not rest:
        from flowaug.data import load_cifar

        data = load_cifar(kind, "test", data_root)
        pick = torch.randperm(len(data.labels), generator=generator)[:count].numpy()
        return ImageSample(to_float_chw(data.images[pick]), torch.from_numpy(data.labels[pick]), None,
                           f"{data.description} test split")
    if kind == "folder" and rest:
        from flowaug.data.image_files import read_image_folder

        folder = read_image_folder(rest, size)
        pick = torch.randperm(len(folder), generator=generator)[:count].numpy()
        return ImageSample(to_float_chw(folder[pick]), None, None,
                           f"image folder {rest} ({len(folder)} images, {size}x{size})")
    raise FlowaugError(f"unknown image source {spec!r}; use cifar10, cifar100, spurious, spurious:SPLIT or folder:PATH")
