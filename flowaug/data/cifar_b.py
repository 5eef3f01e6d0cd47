"""CIFAR10-B / CIFAR100-B: the CIFAR test sets with background-colour subgroups (Chiu et al., ICCV 2023).

The authors' annotation file is a pickled dict ``class name -> {"NNNN.png": subgroup 0..7}``
where NNNN is the 1-based position of the image among the test images of its class, in
official test order (this is how the authors' loaders count). Layout::

    <root>/cifar10b/cifar10_bgd_cl2img_gp_fine.npy
    <root>/cifar100b/cifar100_bgd_cl2img_gp_fine.npy
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowaug.data.base import validate_labels
from flowaug.data.cifar import CIFAR10, CIFAR100, READ_ERRORS, cifar_spec
from flowaug.data.checksums import KNOWN_CHECKSUMS
from flowaug.data.paths import resolve_data_root
from flowaug.errors import ChecksumMismatchError, DataFormatError, DatasetNotFoundError
from flowaug.fileio import file_digest

NUM_SUBGROUPS = 8
AUTHORS_REPO = (
    "https://github.com/charismaticchiu/"
    "Better-May-Not-Be-Fairer-A-Study-Study-on-Subgroup-Discrepancy-in-Image-Classification"
)


@dataclass(frozen=True)
class AnnotationSpec:
    """Where the subgroup annotation of one dataset lives and its known sha256."""

    title: str
    relative_path: str

    @property
    def sha256(self) -> str:
        return KNOWN_CHECKSUMS[self.relative_path][1]


ANNOTATION_SPECS: dict[str, AnnotationSpec] = {
    "cifar10": AnnotationSpec("CIFAR10-B", "cifar10b/cifar10_bgd_cl2img_gp_fine.npy"),
    "cifar100": AnnotationSpec("CIFAR100-B", "cifar100b/cifar100_bgd_cl2img_gp_fine.npy"),
}


def annotation_path(dataset: str, data_root: str | os.PathLike | None = None) -> Path:
    """``<root>/cifar10b/cifar10_bgd_cl2img_gp_fine.npy`` (or the CIFAR-100 one)."""
    cifar_spec(dataset)
    return resolve_data_root(data_root) / ANNOTATION_SPECS[dataset].relative_path


def _read_annotation(dataset: str, path: Path, verify: bool) -> dict[str, list[int]]:
    """Class name -> subgroup id of its 1st, 2nd, ... test image (official order)."""
    spec = ANNOTATION_SPECS[dataset]
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{spec.title} annotation file not found: expected {path}. Get "
            f"{Path(spec.relative_path).name} from the authors' release of Chiu et al. ICCV 2023, "
            f"{AUTHORS_REPO}, and place it there"
        )
    if verify:
        actual = file_digest(path, "sha256")
        if actual != spec.sha256:
            raise ChecksumMismatchError(
                f"{path}: sha256 {actual} differs from the authors' release ({spec.sha256}). The file "
                "was modified or re-pickled, or comes from a different release, so the subgroup "
                f"assignment may differ from the paper's. Re-download it from {AUTHORS_REPO}, or pass "
                "verify=False to use it anyway (it is read as plain data: no code from it runs)"
            )
    # Security: the annotation is a pickled object array. It is unpickled by a restricted unpickler
    # that builds only numpy arrays and plain containers, so even a file that fails (or skipped) the
    # sha256 check cannot run code.
    try:
        table = read_pickled_npy(path).item()
    except (*READ_ERRORS, pickle.UnpicklingError) as error:
        raise DataFormatError(
            f"{path}: not a readable {spec.title} annotation file ({type(error).__name__}: {error})"
        ) from error
    return _parse_annotation(table, cifar_spec(dataset).classes, path)


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays of plain Python data; refuses every other global (no code runs)."""

    ALLOWED = {("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: the file holds more than plain "
                                         "data (numpy arrays, dicts, strings, numbers)")
        return super().find_class(module, name)


def read_pickled_npy(path: Path) -> np.ndarray:
    """An object ``.npy`` array read without executing code from the file (see :class:`_PlainDataUnpickler`)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        read_header(f)
        return _PlainDataUnpickler(f, encoding="latin1").load()


def _parse_annotation(table: object, classes: tuple[str, ...], path: Path) -> dict[str, list[int]]:
    """Validate the dict and turn each class's ``{"NNNN.png": g}`` into a list indexed by NNNN - 1."""
    if not isinstance(table, dict) or set(table) != set(classes):
        keys = sorted(table) if isinstance(table, dict) else type(table).__name__
        raise DataFormatError(f"{path}: expected a dict keyed by the {len(classes)} class names, got {keys}")
    parsed = {}
    for name in classes:
        images = table[name]
        expected = [f"{i:04d}.png" for i in range(1, len(images) + 1)]
        if not isinstance(images, dict) or sorted(images) != expected:
            raise DataFormatError(
                f"{path}: class {name!r} must map exactly the names 0001.png..{len(images):04d}.png "
                "to subgroups (one entry per test image of the class)"
            )
        groups = [images[key] for key in expected]
        if not all(isinstance(g, (int, np.integer)) and 0 <= g < NUM_SUBGROUPS for g in groups):
            raise DataFormatError(f"{path}: class {name!r} has subgroup ids outside 0..{NUM_SUBGROUPS - 1}")
        parsed[name] = groups
    return parsed


def load_subgroups(
    dataset: str,
    labels: np.ndarray,
    data_root: str | os.PathLike | None = None,
    verify: bool = True,
) -> np.ndarray:
    """Subgroup id (int64, 0..7) of each test image, as the authors assign it.

    Args:
        dataset: ``"cifar10"`` or ``"cifar100"``.
        labels: the official test labels (N,) in official order. A prefix of the test set
            (N < 10000, e.g. a ``--limit``-ed CIFAR-C) gets the prefix of the subgroup vector.
        data_root: see :func:`flowaug.data.paths.resolve_data_root`.
        verify: check the annotation file's sha256 against the authors' release.

    Raises:
        ChecksumMismatchError: the annotation file is not the authors' release (``verify=True``).
        DataFormatError: a class has more images in ``labels`` than the annotation file.
    """
    classes = cifar_spec(dataset).classes
    path = annotation_path(dataset, data_root)
    labels = validate_labels(labels, len(classes), "labels")
    table = _read_annotation(dataset, path, verify)
    subgroups = np.empty(len(labels), dtype=np.int64)
    for label, name in enumerate(classes):
        index = np.flatnonzero(labels == label)
        if len(index) > len(table[name]):
            raise DataFormatError(
                f"{path}: {len(index)} test images of class {name!r} but only {len(table[name])} "
                "annotated; the labels are not the official test set"
            )
        subgroups[index] = table[name][: len(index)]
    return subgroups


class _CifarBDataset:
    """Mixin: the test split in official order plus the authors' subgroups."""

    dataset: str

    def __init__(self, root: str | os.PathLike | None = None, source: str = "auto", verify: bool = True) -> None:
        super().__init__(root, split="test", source=source)
        self.subgroups = load_subgroups(self.dataset, self.labels, root, verify)
        self.num_subgroups = NUM_SUBGROUPS
        self.description = f"{ANNOTATION_SPECS[self.dataset].title} on {self.description}"


class CIFAR10B(_CifarBDataset, CIFAR10):
    """CIFAR10-B: CIFAR-10 test set, item ``(image float32 (3,32,32) in [0,1], label, subgroup 0..7)``.

    ``subgroups`` int64 (10000,) is the background-colour subgroup of each image.
    """


class CIFAR100B(_CifarBDataset, CIFAR100):
    """CIFAR100-B: CIFAR-100 test set, item ``(image, label, subgroup 0..7)``; ``subgroups`` int64 (10000,)."""
