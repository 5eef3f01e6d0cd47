"""The 19 CIFAR-10-C / CIFAR-100-C corruptions (Hendrycks & Dietterich, ICLR 2019).

Every corruption is ``fn(images, severity, rng) -> images``: ``images`` uint8 (B,H,W,3) HWC
RGB (the official parameters are for 32x32), ``severity`` 1..5, ``rng`` a
``numpy.random.Generator``; it returns uint8 of the same shape, vectorised over the batch,
and is deterministic for a given generator state. Parameters: :data:`PARAMS`.
Example: ``corrupt(images, "fog", 3, np.random.default_rng(0))``.
"""
from __future__ import annotations

import numpy as np

from flowaug.data.cifar_c import ALL_CORRUPTIONS
from flowaug.data.corruptions import blur, digital, noise, weather
from flowaug.data.corruptions._common import REGISTRY, SEVERITIES, CorruptionFn
from flowaug.data.corruptions.params import PARAMS
from flowaug.data.corruptions.weather import FROST_FILES, default_frost_dir, load_frost_textures

CORRUPTIONS: dict[str, CorruptionFn] = {name: REGISTRY[name] for name in ALL_CORRUPTIONS}
# Corruptions that draw no random numbers.
DETERMINISTIC = ("defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression",
                 "gaussian_blur", "saturate")


def get_corruption(name: str) -> CorruptionFn:
    """The corruption function called ``name``; ``ValueError`` listing the choices otherwise."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name]


def corrupt(images: np.ndarray, name: str, severity: int, rng: np.random.Generator, **options) -> np.ndarray:
    """Apply corruption ``name`` at ``severity`` to uint8 (B,H,W,3) ``images``; ``options`` go to
    the corruption (only ``frost`` takes one: ``frost_dir``)."""
    return get_corruption(name)(images, severity, rng, **options)


__all__ = [
    "CORRUPTIONS", "DETERMINISTIC", "FROST_FILES", "PARAMS", "SEVERITIES", "blur", "corrupt", "default_frost_dir",
    "digital", "get_corruption", "load_frost_textures", "noise", "weather",
]
