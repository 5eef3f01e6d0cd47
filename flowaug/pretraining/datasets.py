"""Image sources for flow pretraining, named by a dataset spec string.

Specs (``--dataset``):

- ``cifar10`` / ``cifar100``: the train split for training, the test split for validation
  (via :func:`flowaug.data.load_cifar`, which reads the official pickles or the offline ``.npz``).
- ``folder:PATH``: an ImageFolder tree (``PATH/<class>/<image>``) or a flat folder of images,
  read with PIL, converted to RGB, resized (shorter side) and centre-cropped to ``image_size``.
- ``npz:PATH``: a ``.npz`` with ``x_train`` uint8 (N,H,W,3) and optionally ``x_test``.
- ``spurious`` / ``spurious:PATH``: the SpuriousBackgrounds benchmark's train split for training,
  its val split for validation; generated with the defaults (rho 0.95, seed 0) or read from a file
  written by ``flowaug make-spurious``.

Sources without a test split hold out a seeded fraction of the images for validation.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from flowaug.data.image_files import fit_image, read_image_folder
from flowaug.errors import DataFormatError, DatasetNotFoundError, FlowaugError



@dataclass(frozen=True)
class PretrainData:
    """Training and validation images of one source.

    Attributes:
        train: uint8 (N, S, S, 3) HWC RGB, S = the requested image size.
        val: uint8 (M, S, S, 3), disjoint from ``train``.
        description: human-readable name, e.g. "CIFAR-10 (JPEG-q75 proxy)".
    """

    train: np.ndarray
    val: np.ndarray
    description: str


def fit_array(images: np.ndarray, size: int, source: str) -> np.ndarray:
    """Check ``images`` uint8 (N,H,W,3); resize/centre-crop each to ``size`` when H or W differ."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataFormatError(f"{source}: images have shape {images.shape} and dtype {images.dtype}, "
                              f"expected uint8 (N, H, W, 3) HWC RGB")
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([fit_image(Image.fromarray(img), size) for img in images])


def holdout_split(images: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``images`` into (train, val) with a seeded permutation; val gets ``fraction`` (at least 1 image)."""
    if len(images) < 2:
        raise DataFormatError(f"need at least 2 images to hold out a validation split, got {len(images)}")
    n_val = min(len(images) - 1, max(1, round(fraction * len(images))))
    order = np.random.default_rng(seed).permutation(len(images))
    return images[np.sort(order[n_val:])], images[np.sort(order[:n_val])]


def _load_cifar(name: str) -> Callable[..., PretrainData]:
    def load(_: str, data_root: str | os.PathLike | None, image_size: int,
             val_fraction: float, seed: int) -> PretrainData:
        from flowaug.data import load_cifar

        train = load_cifar(name, "train", data_root)
        test = load_cifar(name, "test", data_root)
        return PretrainData(fit_array(train.images, image_size, name),
                            fit_array(test.images, image_size, name), train.description)
    return load


def _load_folder(path: str, data_root: str | os.PathLike | None, image_size: int,
                 val_fraction: float, seed: int) -> PretrainData:
    images = read_image_folder(path, image_size)
    train, val = holdout_split(images, val_fraction, seed)
    return PretrainData(train, val, f"image folder {Path(path).expanduser()} ({len(images)} images)")


def _load_npz(path: str, data_root: str | os.PathLike | None, image_size: int,
              val_fraction: float, seed: int) -> PretrainData:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DatasetNotFoundError(f"npz file {file} does not exist")
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in ("x_train", "x_test") if key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataFormatError(f"cannot read {file} as .npz ({error}); is it truncated?") from error
    if "x_train" not in arrays:
        raise DataFormatError(f"{file} has no 'x_train' array (uint8 (N, H, W, 3)); "
                              f"'x_test' is optional")
    train = fit_array(arrays["x_train"], image_size, f"{file}:x_train")
    if "x_test" in arrays:
        val = fit_array(arrays["x_test"], image_size, f"{file}:x_test")
    else:
        train, val = holdout_split(train, val_fraction, seed)
    return PretrainData(train, val, f"npz {file.name}")


def _load_spurious(path: str, data_root: str | os.PathLike | None, image_size: int,
                   val_fraction: float, seed: int) -> PretrainData:
    from flowaug.data.spurious import SpuriousBackgrounds

    if path:
        train, val = (SpuriousBackgrounds.from_npz(Path(path).expanduser(), split) for split in ("train", "val"))
    else:
        train, val = (SpuriousBackgrounds(split, size=image_size) for split in ("train", "val"))
    return PretrainData(fit_array(train.arrays.images, image_size, "spurious train"),
                        fit_array(val.arrays.images, image_size, "spurious val"), train.description)


# Spec kind -> loader(path_part, data_root, image_size, val_fraction, seed).
SOURCES: dict[str, Callable[..., PretrainData]] = {
    "cifar10": _load_cifar("cifar10"),
    "cifar100": _load_cifar("cifar100"),
    "folder": _load_folder,
    "npz": _load_npz,
    "spurious": _load_spurious,
}
PATH_SOURCES = ("folder", "npz")


def load_pretrain_data(spec: str, data_root: str | os.PathLike | None = None, image_size: int = 32,
                       val_fraction: float = 0.05, seed: int = 0) -> PretrainData:
    """Load the images named by ``spec`` (see the module docstring) at ``image_size`` x ``image_size``.

    ``val_fraction`` and ``seed`` only matter for sources without a test split.
    Raises :class:`FlowaugError` subclasses naming the problem (unknown spec, missing or
    empty folder, unreadable file, wrong array shape).
    """
    kind, _, path = spec.partition(":")
    if kind not in SOURCES or (kind in PATH_SOURCES and not path) or (kind in ("cifar10", "cifar100") and path):
        raise FlowaugError(f"unknown dataset spec {spec!r}; use one of cifar10, cifar100, "
                           f"folder:PATH, npz:PATH, spurious, spurious:PATH")
    return SOURCES[kind](path, data_root, image_size, val_fraction, seed)
