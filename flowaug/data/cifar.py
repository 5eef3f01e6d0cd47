"""CIFAR-10 / CIFAR-100 from the official python pickles or the offline ``.npz`` form.

Layout under the data root (see :func:`flowaug.data.paths.resolve_data_root`)::

    cifar-10-batches-py/data_batch_1..5, test_batch     official pickles (torchvision layout)
    cifar-100-python/train, test                         official pickles (``fine_labels``)
    cifar10/cifar10_jpeg_q75.npz                         offline form: x_train, y_train, x_test, y_test
    cifar100/cifar100.npz                                offline form, same keys
"""
from __future__ import annotations

import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowaug.data.base import ArrayDataset, validate_arrays, validate_labels
from flowaug.data.checksums import CIFAR_TARBALLS
from flowaug.data.paths import resolve_data_root
from flowaug.errors import DataFormatError, DatasetNotFoundError

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR100_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle",
    "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon",
    "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
    "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)

SPLITS = ("train", "test")
SOURCES = ("auto", "pickle", "npz")
# Errors numpy/pickle/zipfile raise on truncated or foreign files; re-raised as DataFormatError.
READ_ERRORS = (
    pickle.UnpicklingError, EOFError, OSError, ValueError, KeyError, TypeError, IndexError,
    AttributeError, zipfile.BadZipFile, zlib.error,
)


@dataclass(frozen=True)
class CifarSpec:
    """Where one CIFAR variant lives on disk and what it contains."""

    name: str
    title: str
    classes: tuple[str, ...]
    pickle_dir: str
    pickle_files: dict[str, tuple[str, ...]]
    label_key: str
    npz_file: str
    npz_description: str
    labels_only_file: str

    @property
    def url(self) -> str:
        return CIFAR_TARBALLS[self.name][0]


CIFAR_SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        name="cifar10",
        title="CIFAR-10",
        classes=CIFAR10_CLASSES,
        pickle_dir="cifar-10-batches-py",
        pickle_files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        label_key="labels",
        npz_file="cifar10/cifar10_jpeg_q75.npz",
        npz_description="CIFAR-10 (JPEG-q75 proxy)",
        labels_only_file="cifar10/cifar10_lossless_subset.npz",
    ),
    "cifar100": CifarSpec(
        name="cifar100",
        title="CIFAR-100",
        classes=CIFAR100_CLASSES,
        pickle_dir="cifar-100-python",
        pickle_files={"train": ("train",), "test": ("test",)},
        label_key="fine_labels",
        npz_file="cifar100/cifar100.npz",
        npz_description="CIFAR-100 (npz)",
        labels_only_file="cifar100/cifar100_labels_only.npz",
    ),
}


@dataclass(frozen=True)
class CifarArrays:
    """One split in memory: ``images`` uint8 (N,32,32,3) HWC RGB, ``labels`` int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    description: str


def cifar_spec(dataset: str) -> CifarSpec:
    """The :class:`CifarSpec` of ``"cifar10"`` or ``"cifar100"``; ``ValueError`` otherwise."""
    if dataset not in CIFAR_SPECS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(CIFAR_SPECS)}")
    return CIFAR_SPECS[dataset]


def pickle_paths(dataset: str, split: str, data_root: str | os.PathLike | None = None) -> list[Path]:
    """The official pickle files of one split, e.g. ``<root>/cifar-10-batches-py/test_batch``."""
    spec = cifar_spec(dataset)
    root = resolve_data_root(data_root)
    return [root / spec.pickle_dir / name for name in spec.pickle_files[_check_split(split)]]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return split


def _read_pickle_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One official batch: ``data`` uint8 (N,3072) CHW-flattened rows -> (N,32,32,3) HWC, labels."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
        data = np.asarray(entry["data"])
        labels = np.asarray(entry[label_key])
    except READ_ERRORS as error:
        raise DataFormatError(
            f"{path}: not a readable CIFAR python pickle with keys 'data' and '{label_key}' "
            f"({type(error).__name__}: {error}); re-download the official tarball"
        ) from error
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(
            f"{path}: 'data' has shape {data.shape} and dtype {data.dtype}, expected uint8 (N, 3072)"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_pickles(spec: CifarSpec, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    batches = [_read_pickle_batch(path, spec.label_key) for path in paths]
    images = np.ascontiguousarray(np.concatenate([b[0] for b in batches]))
    labels = np.concatenate([b[1] for b in batches])
    return validate_arrays(images, labels, len(spec.classes), paths[0].parent)


def _read_npz_arrays(path: Path, keys: tuple[str, ...]) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return [npz[key] for key in keys]
    except READ_ERRORS as error:
        raise DataFormatError(
            f"{path}: not a readable .npz with arrays {list(keys)} ({type(error).__name__}: {error})"
        ) from error


def _load_npz(spec: CifarSpec, path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _read_npz_arrays(path, (f"x_{split}", f"y_{split}"))
    return validate_arrays(images, labels, len(spec.classes), path)


def _not_found(spec: CifarSpec, split: str, root: Path, source: str) -> DatasetNotFoundError:
    pickles = [str(root / spec.pickle_dir / name) for name in spec.pickle_files[split]]
    options = {
        "pickle": f"the official pickles {pickles} (download and extract {spec.url}, "
                  f"or pass download=True)",
        "npz": f"the offline .npz form {root / spec.npz_file} (uint8 HWC arrays x_{split}, y_{split})",
    }
    wanted = [options[s] for s in (("pickle", "npz") if source == "auto" else (source,))]
    return DatasetNotFoundError(f"{spec.title} {split} split not found; expected " + " or ".join(wanted))


def load_cifar(
    dataset: str,
    split: str,
    data_root: str | os.PathLike | None = None,
    source: str = "auto",
) -> CifarArrays:
    """Load one CIFAR split into memory.

    Args:
        dataset: ``"cifar10"`` or ``"cifar100"`` (CIFAR-100 uses the 100 fine labels).
        split: ``"train"`` or ``"test"``.
        data_root: see :func:`flowaug.data.paths.resolve_data_root`.
        source: ``"pickle"`` (official files), ``"npz"`` (offline form) or ``"auto"``
            (the pickles when all files of the split exist, else the ``.npz``).

    Returns:
        :class:`CifarArrays` in official order; ``description`` names the source, e.g.
        "CIFAR-10 (official)" or "CIFAR-10 (JPEG-q75 proxy)".

    Raises:
        DatasetNotFoundError: no file of the requested source exists (the message names the paths).
        DataFormatError: a file is truncated, of the wrong format, or has bad shapes/dtypes/labels.
    """
    spec = cifar_spec(dataset)
    _check_split(split)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    root = resolve_data_root(data_root)
    pickles = pickle_paths(dataset, split, root)
    npz = root / spec.npz_file
    if source in ("auto", "pickle") and all(p.is_file() for p in pickles):
        images, labels = _load_pickles(spec, pickles)
        return CifarArrays(images, labels, spec.classes, f"{spec.title} (official)")
    if source in ("auto", "npz") and npz.is_file():
        images, labels = _load_npz(spec, npz, split)
        return CifarArrays(images, labels, spec.classes, spec.npz_description)
    raise _not_found(spec, split, root, source)


def load_cifar_labels(dataset: str, split: str, data_root: str | os.PathLike | None = None) -> np.ndarray:
    """Official labels of one split, int64 (N,), without decoding images where possible.

    Reads the pickles if present, else only ``y_<split>`` of the ``.npz`` form, else of the
    labels-only file (``cifar10/cifar10_lossless_subset.npz``, ``cifar100/cifar100_labels_only.npz``),
    which carries the full official label vectors without the images.
    """
    spec = cifar_spec(dataset)
    root = resolve_data_root(data_root)
    pickles = pickle_paths(dataset, split, root)
    if all(p.is_file() for p in pickles):
        return _load_pickles(spec, pickles)[1]
    for path in (root / spec.npz_file, root / spec.labels_only_file):
        if path.is_file():
            (labels,) = _read_npz_arrays(path, (f"y_{split}",))
            return validate_labels(labels, len(spec.classes), path)
    raise _not_found(spec, split, root, "auto")


def download_cifar(dataset: str, data_root: str | os.PathLike | None = None) -> Path:
    """Download and extract the official tarball into the data root (checks torchvision's md5).

    Only called when the user asks (``download=True``). Returns the extracted folder.
    """
    from torchvision.datasets.utils import download_and_extract_archive

    spec = cifar_spec(dataset)
    root = resolve_data_root(data_root)
    url, md5 = CIFAR_TARBALLS[dataset]
    download_and_extract_archive(url, str(root), md5=md5)
    return root / spec.pickle_dir


class _CifarDataset(ArrayDataset):
    """A CIFAR split as an :class:`ArrayDataset`; subclasses set ``dataset``."""

    dataset: str

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "test",
        source: str = "auto",
        download: bool = False,
    ) -> None:
        if download and source != "npz" and not all(p.is_file() for p in pickle_paths(self.dataset, split, root)):
            download_cifar(self.dataset, root)
        arrays = load_cifar(self.dataset, split, root, source)
        super().__init__(arrays.images, arrays.labels, arrays.classes, arrays.description)


class CIFAR10(_CifarDataset):
    """CIFAR-10 split; item ``(image float32 (3,32,32) in [0,1], label int)``.

    ``download=True`` fetches the official tarball when the pickles are missing;
    nothing is ever downloaded otherwise.
    """

    dataset = "cifar10"


class CIFAR100(_CifarDataset):
    """CIFAR-100 split (100 fine labels); item ``(image float32 (3,32,32) in [0,1], label int)``."""

    dataset = "cifar100"
