"""CIFAR-10.1 (Recht et al. 2018): a new CIFAR-10 test set, as the official ``.npy`` files.

Layout: ``<root>/CIFAR-10.1/cifar10.1_{v4,v6}_data.npy`` uint8 (N,32,32,3) and
``cifar10.1_{v4,v6}_labels.npy`` (N,), with N = 2021 (v4) or 2000 (v6).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from flowaug.data.base import ArrayDataset, validate_arrays
from flowaug.data.cifar import CIFAR10_CLASSES, READ_ERRORS
from flowaug.data.paths import resolve_data_root
from flowaug.errors import DataFormatError, DatasetNotFoundError

CIFAR10_1_DIR = "CIFAR-10.1"
CIFAR10_1_URL = "https://github.com/modestyachts/CIFAR-10.1 (folder datasets/)"
CIFAR10_1_SIZES = {"v4": 2021, "v6": 2000}


def cifar10_1_paths(version: str, data_root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``(data .npy, labels .npy)`` of one CIFAR-10.1 version under the data root."""
    if version not in CIFAR10_1_SIZES:
        raise ValueError(f"unknown CIFAR-10.1 version {version!r}; expected one of {sorted(CIFAR10_1_SIZES)}")
    folder = resolve_data_root(data_root) / CIFAR10_1_DIR
    return folder / f"cifar10.1_{version}_data.npy", folder / f"cifar10.1_{version}_labels.npy"


def load_npy(path: Path, what: str, mmap: bool = False) -> np.ndarray:
    """``np.load`` without pickles; a missing file names ``what`` to get, a bad one raises DataFormatError."""
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} not found; {what}")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except READ_ERRORS as error:
        raise DataFormatError(f"{path}: not a readable .npy array ({type(error).__name__}: {error})") from error


class CIFAR10_1(ArrayDataset):
    """CIFAR-10.1 ``version`` "v6" (2000 images) or "v4" (2021); item ``(image float32 (3,32,32) in [0,1], label)``."""

    def __init__(self, root: str | os.PathLike | None = None, version: str = "v6") -> None:
        data_path, labels_path = cifar10_1_paths(version, root)
        how = f"download cifar10.1_{version}_data.npy and _labels.npy from {CIFAR10_1_URL}"
        images, labels = validate_arrays(
            load_npy(data_path, how), load_npy(labels_path, how), len(CIFAR10_CLASSES), data_path
        )
        if len(labels) != CIFAR10_1_SIZES[version]:
            raise DataFormatError(
                f"{data_path}: {len(labels)} images, but CIFAR-10.1 {version} has {CIFAR10_1_SIZES[version]}"
            )
        super().__init__(images, labels, CIFAR10_CLASSES, f"CIFAR-10.1 {version}")
