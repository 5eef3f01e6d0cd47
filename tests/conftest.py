"""Shared fixtures: the offline data in ``../shared/data`` and synthetic datasets in the official formats."""
from __future__ import annotations

import importlib.util
import os
import pickle
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import settings

from flowaug.flow import DecoupledFlow, get_preset, save_flow

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# No test reaches the network: huggingface_hub (pretrained weights not in the package) runs offline.
os.environ["HF_HUB_OFFLINE"] = "1"

# Tests use tiny models, where intra-op threads only add overhead, and several tests start
# worker processes; one thread each keeps a 2-core CI machine from oversubscribing.
torch.set_num_threads(1)

# Property-based tests (hypothesis): derandomised and bounded in CI (the default profile), more
# examples locally with HYPOTHESIS_PROFILE=thorough.
settings.register_profile("ci", max_examples=25, derandomize=True, deadline=None, print_blob=True)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``FLOWAUG_CACHE`` in a temporary folder for the whole session (and its subprocesses): no test
    reads or writes the user's cache."""
    folder = tmp_path_factory.mktemp("flowaug-cache")
    os.environ["FLOWAUG_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (the offline datasets). Fails, never skips, when it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"offline data directory {SHARED_DATA} is missing; these tests need ../shared/data "
                    "next to the repository (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_file(shared_data: Path) -> Callable[[str], Path]:
    """``shared_file("cifar10b/...npy")`` -> the path; fails with a clear message when the file is missing."""
    def require(relative_path: str) -> Path:
        path = shared_data / relative_path
        if not path.is_file():
            pytest.fail(f"needed offline file {path} is missing (see {shared_data / 'README.md'})")
        return path
    return require


def make_tiny_flow() -> DecoupledFlow:
    """The ``tiny`` preset, initialised and then perturbed so the nuisance code visibly changes the
    decode (a freshly initialised flow is the identity and would let every FlowAug test pass)."""
    torch.manual_seed(0)
    flow = DecoupledFlow(get_preset("tiny"))
    flow.initialize(torch.rand(16, 3, 32, 32))
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return flow.eval()


@pytest.fixture(scope="session")
def tiny_flow() -> DecoupledFlow:
    """:func:`make_tiny_flow` (shared: tests must not change it)."""
    return make_tiny_flow()


@pytest.fixture(scope="session")
def tiny_flow_path(tmp_path_factory: pytest.TempPathFactory, tiny_flow: DecoupledFlow) -> Path:
    """:func:`make_tiny_flow` saved as a ``flowaug-flow`` checkpoint."""
    path = tmp_path_factory.mktemp("tiny_flow") / "flow.pt"
    save_flow(tiny_flow, path, meta={"note": "perturbed tiny flow for tests"})
    return path


@pytest.fixture
def colour_images() -> torch.Tensor:
    """Eight images (8,3,32,32) in [0,1] with distinct colour casts, so their nuisance codes differ."""
    generator = torch.Generator().manual_seed(1)
    cast = torch.rand(8, 3, 1, 1, generator=generator) * 0.5
    return cast + 0.5 * torch.rand(8, 3, 32, 32, generator=generator)


class SyntheticCifar:
    """Writes tiny datasets in the official on-disk formats under ``root`` (a data root).

    Images are uint8 (N,32,32,3) drawn from a seeded generator; labels cycle through
    the classes in a shuffled but seeded order.
    """

    PICKLE_LAYOUT = {
        "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                    b"labels", 10),
        "cifar100": ("cifar-100-python", ("train",), "test", b"fine_labels", 100),
    }

    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root = root
        self.rng = np.random.default_rng(seed)

    def arrays(self, n: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        images = self.rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        labels = self.rng.permutation(np.arange(n) % num_classes).astype(np.int64)
        return images, labels

    def write_pickles(self, dataset: str, n_train: int = 12, n_test: int = 15,
                      str_keys: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Official pickles: dicts with ``data`` uint8 (N,3072) CHW-flattened rows and a label list.

        ``str_keys`` writes the keys as ``str`` (what python-2 pickles decode to under latin1)
        instead of ``bytes``. Returns ``{"train": (images, labels), "test": ...}`` HWC.
        """
        folder, train_files, test_file, label_key, num_classes = self.PICKLE_LAYOUT[dataset]
        splits = {"train": self.arrays(n_train * len(train_files), num_classes),
                  "test": self.arrays(n_test, num_classes)}
        files = {"train": train_files, "test": (test_file,)}
        for split, (images, labels) in splits.items():
            rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
            for name, part in zip(files[split], np.array_split(np.arange(len(images)), len(files[split]))):
                entry = {b"batch_label": name.encode(), label_key: labels[part].tolist(),
                         b"data": rows[part], b"filenames": [f"{i}.png".encode() for i in part]}
                if str_keys:
                    entry = {k.decode(): v for k, v in entry.items()}
                self.write_bytes(f"{folder}/{name}", pickle.dumps(entry, protocol=2))
        return splits

    def write_npz(self, relative_path: str, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
        """The offline form: ``x_train, y_train, x_test, y_test``."""
        path = self.root / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f"{k}_{split}": a for split, (x, y) in splits.items() for k, a in (("x", x), ("y", y))})
        return path

    def write_npy(self, relative_path: str, array: np.ndarray, allow_pickle: bool = False) -> Path:
        path = self.root / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array, allow_pickle=allow_pickle)
        return path

    def write_bytes(self, relative_path: str, content: bytes) -> Path:
        path = self.root / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def write_annotation(self, relative_path: str, table: dict) -> Path:
        """A CIFAR-B annotation file: a pickled dict saved as a 0-d object ``.npy``."""
        holder = np.empty((), dtype=object)
        holder[()] = table
        return self.write_npy(relative_path, holder, allow_pickle=True)

    def write_cifar_c(self, folder: str, corruptions: tuple[str, ...], labels: np.ndarray) -> np.ndarray:
        """``<folder>/<corruption>.npy`` uint8 (5N,32,32,3) and ``labels.npy`` (5N,) = labels tiled 5 times.

        Returns the image stack (5N,32,32,3), the same for every corruption.
        """
        images = self.rng.integers(0, 256, size=(5 * len(labels), 32, 32, 3), dtype=np.uint8)
        for corruption in corruptions:
            self.write_npy(f"{folder}/{corruption}.npy", images)
        self.write_npy(f"{folder}/labels.npy", np.tile(labels, 5))
        return images


@pytest.fixture
def synthetic(tmp_path: Path) -> SyntheticCifar:
    """A :class:`SyntheticCifar` writing under a fresh ``tmp_path`` data root (seed 0)."""
    return SyntheticCifar(tmp_path)


def load_recipe(name: str) -> ModuleType:
    """Import ``recipes/<name>.py`` (recipes are scripts, not a package) as module ``<name>_recipe``."""
    path = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module
