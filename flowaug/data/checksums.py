"""Known checksums of dataset files (relative to the data root)."""
from __future__ import annotations

import os
from pathlib import Path

from flowaug.fileio import file_digest

# Relative path under the data root -> (algorithm, hex digest).
# md5: the values torchvision's ``datasets/cifar.py`` checks for the official pickles.
# sha256: the values published with flowaug's offline data (``../shared/data/README.md``).
KNOWN_CHECKSUMS: dict[str, tuple[str, str]] = {
    "cifar-10-batches-py/data_batch_1": ("md5", "c99cafc152244af753f735de768cd75f"),
    "cifar-10-batches-py/data_batch_2": ("md5", "d4bba439e000b95fd0a9bffe97cbabec"),
    "cifar-10-batches-py/data_batch_3": ("md5", "54ebc095f3ab1f0389bbae665268c751"),
    "cifar-10-batches-py/data_batch_4": ("md5", "634d18415352ddfa80567beed471001a"),
    "cifar-10-batches-py/data_batch_5": ("md5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    "cifar-10-batches-py/test_batch": ("md5", "40351d587109b95175f43aff81a1287e"),
    "cifar-10-batches-py/batches.meta": ("md5", "5ff9c542aee3614f3951f8cda6e48888"),
    "cifar-100-python/train": ("md5", "16019d7e3df5f24257cddd939b257f8d"),
    "cifar-100-python/test": ("md5", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
    "cifar-100-python/meta": ("md5", "7973b15100ade9c7d40fb424638fde48"),
    "cifar10/cifar10_jpeg_q75.npz": (
        "sha256", "2d272e8812ecd24d1ae79a1796702033f14117b252d024dbbbdc74567d6c45f4"),
    "cifar10/cifar10_lossless_subset.npz": (
        "sha256", "55291d50cd9ebc98bf35de4d4850d70cfd0fec49ef5326e97210c51e3af60e36"),
    "cifar10b/cifar10_bgd_cl2img_gp_fine.npy": (
        "sha256", "af4afa68b58b0e2e3162ea79d0f4bf17c489c9541cfa1c6a05f45e2b83a26ea4"),
    "cifar100b/cifar100_bgd_cl2img_gp_fine.npy": (
        "sha256", "df1ef46babfd46bb75a846f04f96378865580965ab77783b592928042ff7a491"),
    "cifar100/cifar100_labels_only.npz": (
        "sha256", "79a5409a2776ca45e566c746fb11bb1c9fff381e9533e305a367d6ee0436b922"),
}

# Official tarballs (what ``download=True`` fetches) and their md5 (torchvision's values).
CIFAR_TARBALLS: dict[str, tuple[str, str]] = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}

def known_checksum(relative_path: str) -> tuple[str, str] | None:
    """``(algorithm, hex digest)`` known for a file under the data root, or ``None``."""
    return KNOWN_CHECKSUMS.get(Path(relative_path).as_posix())


def checksum_status(root: str | os.PathLike, relative_path: str) -> str:
    """``"ok"``, ``"MISMATCH"`` or ``"unknown"`` (no known value) for an existing file."""
    known = known_checksum(relative_path)
    if known is None:
        return "unknown"
    algorithm, expected = known
    return "ok" if file_digest(Path(root) / relative_path, algorithm) == expected else "MISMATCH"
