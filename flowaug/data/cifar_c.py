"""CIFAR-10-C / CIFAR-100-C loader (Hendrycks & Dietterich, ICLR 2019), official layout.

``<dir>/<corruption>.npy`` is uint8 (5N,32,32,3): severities 1..5 stacked in blocks of N
test images in official order, and ``<dir>/labels.npy`` is (5N,), the test labels tiled 5
times. The official release has N = 10000. A set generated with ``flowaug make-cifar-c
--limit N`` has the first N test images per severity (5N rows) and loads the same way;
a row count not divisible by 5 is rejected.

Default ``<dir>``: ``<root>/CIFAR-10-C`` or ``<root>/CIFAR-100-C``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from flowaug.data.base import ArrayDataset, IMAGE_SHAPE, validate_arrays
from flowaug.data.cifar import cifar_spec, load_cifar_labels
from flowaug.data.cifar101 import load_npy
from flowaug.data.cifar_b import NUM_SUBGROUPS, load_subgroups
from flowaug.data.paths import resolve_data_root
from flowaug.errors import DataFormatError, DatasetNotFoundError

BENCHMARK_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: tuple[str, ...] = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES = (1, 2, 3, 4, 5)
TEST_SIZE = 10000

C_DIRS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}
C_URLS = {
    "cifar10": "https://zenodo.org/record/2535967",
    "cifar100": "https://zenodo.org/record/3555552",
}


def cifar_c_dir(dataset: str = "cifar10", data_root: str | os.PathLike | None = None) -> Path:
    """``<root>/CIFAR-10-C`` or ``<root>/CIFAR-100-C``."""
    cifar_spec(dataset)
    return resolve_data_root(data_root) / C_DIRS[dataset]


def _block_labels(labels_path: Path, rows: int, severity: int, num_classes: int, how: str) -> np.ndarray:
    """Labels of one severity block; every block of ``labels.npy`` must be the same vector."""
    labels = load_npy(labels_path, how)
    if labels.shape != (rows,):
        raise DataFormatError(f"{labels_path}: shape {labels.shape}, expected ({rows},) like the images")
    blocks = labels.reshape(len(SEVERITIES), rows // len(SEVERITIES))
    if not (blocks == blocks[0]).all():
        raise DataFormatError(f"{labels_path}: the 5 severity blocks do not carry the same labels")
    if not np.issubdtype(labels.dtype, np.integer) or blocks.min() < 0 or blocks.max() >= num_classes:
        raise DataFormatError(f"{labels_path}: labels must be integers in [0, {num_classes - 1}]")
    return blocks[severity - 1]


class CIFARC(ArrayDataset):
    """One corruption at one severity: the N test images (N = 10000 for the official files).

    Item ``(image float32 (3,32,32) in [0,1], label, subgroup)`` with ``attach_subgroups``
    (the CIFAR-B subgroup of each image, as the paper does), else ``(image, label)``.
    Only the requested severity block is read from disk (memory-mapped file).

    Args:
        corruption: one of :data:`ALL_CORRUPTIONS`.
        severity: 1..5.
        dataset: ``"cifar10"`` or ``"cifar100"``.
        root: data root (see :func:`flowaug.data.paths.resolve_data_root`); also where the
            CIFAR-B annotation and, when present, the official test labels are read.
        c_dir: folder with the ``.npy`` files (default ``<root>/CIFAR-10-C`` or ``CIFAR-100-C``).
        attach_subgroups: attach ``subgroups`` (int64 (N,)) from the CIFAR-B annotation. When the
            official test labels are available under ``root``, the block's labels must equal
            their first N entries (otherwise the file is not in official order).
    """

    def __init__(
        self,
        corruption: str,
        severity: int,
        dataset: str = "cifar10",
        root: str | os.PathLike | None = None,
        c_dir: str | os.PathLike | None = None,
        attach_subgroups: bool = True,
    ) -> None:
        spec = cifar_spec(dataset)
        if corruption not in ALL_CORRUPTIONS:
            raise ValueError(f"unknown corruption {corruption!r}; expected one of {ALL_CORRUPTIONS}")
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
        folder = Path(c_dir) if c_dir is not None else cifar_c_dir(dataset, root)
        data_path = folder / f"{corruption}.npy"
        how = (f"download {C_DIRS[dataset]} from {C_URLS[dataset]} or generate it with "
               f"`flowaug make-cifar-c --dataset {dataset}`")
        data = load_npy(data_path, how, mmap=True)
        if data.dtype != np.uint8 or data.ndim != 4 or data.shape[1:] != IMAGE_SHAPE:
            raise DataFormatError(f"{data_path}: shape {data.shape} dtype {data.dtype}, expected uint8 (5N, 32, 32, 3)")
        rows = data.shape[0]
        if rows == 0 or rows % len(SEVERITIES) or rows // len(SEVERITIES) > TEST_SIZE:
            raise DataFormatError(
                f"{data_path}: {rows} rows; expected 5 severity blocks of N <= {TEST_SIZE} images "
                "(50000 rows for the official files, 5N for a --limit N generated set)"
            )
        n = rows // len(SEVERITIES)
        labels = _block_labels(folder / "labels.npy", rows, severity, len(spec.classes), how)
        # np.array copies the block out of the memory map: writable, and only these rows are read.
        images, labels = validate_arrays(
            np.array(data[(severity - 1) * n : severity * n]), labels, len(spec.classes), data_path
        )
        subset = "" if n == TEST_SIZE else f", first {n} test images"
        description = f"{C_DIRS[dataset]} {corruption} severity {severity}{subset}"
        subgroups = None
        if attach_subgroups:
            self._check_official_order(labels, dataset, root, data_path)
            subgroups = load_subgroups(dataset, labels, root)
        super().__init__(images, labels, spec.classes, description, subgroups,
                         NUM_SUBGROUPS if attach_subgroups else 0)
        self.corruption = corruption
        self.severity = severity

    @staticmethod
    def _check_official_order(labels: np.ndarray, dataset: str, root: str | os.PathLike | None,
                              data_path: Path) -> None:
        """The CIFAR-B subgroups are positional: the labels must follow the official test order."""
        try:
            official = load_cifar_labels(dataset, "test", root)
        except DatasetNotFoundError:
            return
        if not np.array_equal(labels, official[: len(labels)]):
            raise DataFormatError(
                f"{data_path}: labels differ from the official test labels' first {len(labels)} entries, "
                "so the images are not in official test order and CIFAR-B subgroups cannot be attached; "
                "pass attach_subgroups=False"
            )
