"""``flowaug data check --data-root DIR``: which datasets are on disk, their sizes and checksums.

A report: exit code 0 even when datasets are missing, 1 when a file's checksum MISMATCHes.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from flowaug.data.cifar import CIFAR_SPECS, READ_ERRORS
from flowaug.data.cifar101 import CIFAR10_1_DIR, CIFAR10_1_URL
from flowaug.data.cifar_b import ANNOTATION_SPECS, AUTHORS_REPO
from flowaug.data.corruptions.weather import FROST_FILES, FROST_SOURCE
from flowaug.data.cifar_c import ALL_CORRUPTIONS, C_DIRS, C_URLS
from flowaug.data.checksums import checksum_status

OFFLINE_NOTE = "offline form shipped with flowaug's development data (../shared/data); with internet use "


def _npy_rows(path: Path) -> int:
    return np.load(path, mmap_mode="r", allow_pickle=False).shape[0]


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shape of every array in an ``.npz``, read from the member headers (no data loaded)."""
    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            with archive.open(member) as f:
                version = np.lib.format.read_magic(f)
                header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)(f)
            shapes[member.removesuffix(".npy")] = header[0]
    return shapes


def _npz_images(paths: list[Path]) -> str:
    shapes = _npz_shapes(paths[0])
    return " ".join(f"{k}:{s[0]}" for k, s in shapes.items() if len(s) == 4) or "labels only"


def _npy_images(paths: list[Path]) -> str:
    data = [p for p in paths if not p.name.endswith("labels.npy")]
    rows = sorted({_npy_rows(p) for p in data})
    return f"{len(data)} x {'/'.join(map(str, rows))} images"


@dataclass(frozen=True)
class DatasetEntry:
    """One row of the report: files relative to the data root and where to get them."""

    name: str
    files: tuple[str, ...]
    get: str
    count_images: Callable[[list[Path]], str] | None = None


def _c_entry(dataset: str) -> DatasetEntry:
    folder = C_DIRS[dataset]
    return DatasetEntry(
        folder,
        tuple(f"{folder}/{c}.npy" for c in ALL_CORRUPTIONS) + (f"{folder}/labels.npy",),
        f"{C_URLS[dataset]} (extract {folder}.tar into <root>/), or `flowaug make-cifar-c --dataset {dataset}`",
        _npy_images,
    )


def _cifar101_entry(version: str) -> DatasetEntry:
    return DatasetEntry(
        f"CIFAR-10.1 {version}",
        tuple(f"{CIFAR10_1_DIR}/cifar10.1_{version}_{kind}.npy" for kind in ("data", "labels")),
        CIFAR10_1_URL,
        _npy_images,
    )


def _pickle_entry(dataset: str, meta: str) -> DatasetEntry:
    spec = CIFAR_SPECS[dataset]
    names = spec.pickle_files["train"] + spec.pickle_files["test"] + (meta,)
    return DatasetEntry(f"{spec.title} (official pickles)", tuple(f"{spec.pickle_dir}/{n}" for n in names),
                        f"{spec.url} (extract into <root>/)")


DATASETS: tuple[DatasetEntry, ...] = (
    _pickle_entry("cifar10", "batches.meta"),
    DatasetEntry("CIFAR-10 (JPEG-q75 proxy npz)", (CIFAR_SPECS["cifar10"].npz_file,),
                 OFFLINE_NOTE + CIFAR_SPECS["cifar10"].url, _npz_images),
    DatasetEntry("CIFAR-10 lossless subset", ("cifar10/cifar10_lossless_subset.npz",),
                 OFFLINE_NOTE + CIFAR_SPECS["cifar10"].url, _npz_images),
    _pickle_entry("cifar100", "meta"),
    DatasetEntry("CIFAR-100 (npz)", (CIFAR_SPECS["cifar100"].npz_file,),
                 "x_train, y_train, x_test, y_test uint8 HWC; or use " + CIFAR_SPECS["cifar100"].url,
                 _npz_images),
    DatasetEntry("CIFAR-100 labels only", (CIFAR_SPECS["cifar100"].labels_only_file,),
                 OFFLINE_NOTE + CIFAR_SPECS["cifar100"].url, _npz_images),
    *(DatasetEntry(spec.title, (spec.relative_path,), f"{AUTHORS_REPO} ({Path(spec.relative_path).name})")
      for spec in ANNOTATION_SPECS.values()),
    _cifar101_entry("v4"),
    _cifar101_entry("v6"),
    _c_entry("cifar10"),
    _c_entry("cifar100"),
    DatasetEntry("CIFAR-C frost textures", tuple(f"cifar_c_frost/{f}" for f in FROST_FILES), FROST_SOURCE),
)


@dataclass(frozen=True)
class EntryReport:
    """What :func:`check_entry` found for one :class:`DatasetEntry`."""

    entry: DatasetEntry
    status: str
    files: str
    size: str
    images: str
    checksum: str


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _checksums(root: Path, files: list[str], hash_files: bool) -> str:
    """Combined status of the present files: MISMATCH wins, then ok, then unknown."""
    if not hash_files:
        return "skipped"
    statuses = {checksum_status(root, f) for f in files}
    if "MISMATCH" in statuses:
        return "MISMATCH"
    if statuses == {"unknown"}:
        return "unknown"
    return "ok" if statuses == {"ok"} else "ok (some unknown)"


def check_entry(root: Path, entry: DatasetEntry, hash_files: bool = True) -> EntryReport:
    """Report on one dataset: found / partial / missing, size, image counts, checksum status."""
    present = [f for f in entry.files if (root / f).is_file()]
    if not present:
        return EntryReport(entry, "missing", f"0/{len(entry.files)}", "-", "-", "-")
    size = _human_bytes(sum((root / f).stat().st_size for f in present))
    images = "-"
    if entry.count_images is not None:
        try:
            images = entry.count_images([root / f for f in present])
        except READ_ERRORS as error:
            images = f"unreadable ({type(error).__name__})"
    status = "found" if len(present) == len(entry.files) else "partial"
    return EntryReport(entry, status, f"{len(present)}/{len(entry.files)}", size, images,
                       _checksums(root, present, hash_files))


def format_table(reports: list[EntryReport]) -> str:
    """Fixed-width table, one row per dataset."""
    header = ("dataset", "status", "files", "size", "images", "checksum")
    rows = [header] + [(r.entry.name, r.status, r.files, r.size, r.images, r.checksum) for r in reports]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
