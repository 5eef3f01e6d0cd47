"""``flowaug make-cifar-c``: generate CIFAR-10-C / CIFAR-100-C in the official layout.

Output in ``--out``: ``<corruption>.npy`` uint8 (5N,32,32,3), severities 1..5 stacked in
blocks of the N test images in official order, and ``labels.npy`` uint8 (5N,) (the test
labels tiled 5 times, uint8 as in the official release), so :class:`flowaug.data.CIFARC`
reads it with ``c_dir=--out``.

Work is split into (corruption, severity) blocks. Each block's random numbers come from its
own seed, derived from ``--seed``, the corruption name and the severity, so a block does not
depend on which other blocks or how many workers a run has. A finished block is saved under
``<out>/.partial/``; once a corruption has all 5 blocks they are stacked into
``<corruption>.npy`` and the partial blocks removed. Every write is atomic, so an interrupted
run loses at most the blocks in progress and a rerun resumes: finished corruption files and
blocks whose shape matches are skipped. ``--severities`` may be a subset: its blocks are
kept under ``.partial/`` until a later run adds the missing severities (the loader needs all
five). ``<out>/make_cifar_c.json`` records the seed and source; a rerun with a different
seed, image count or source into the same folder is refused.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from flowaug.cache import cache_root
from flowaug.data.cifar import load_cifar
from flowaug.data.cifar_c import ALL_CORRUPTIONS, GENERATED_MANIFEST, SEVERITIES
from flowaug.data.corruptions import default_frost_dir, get_corruption, load_frost_textures
from flowaug.data.paths import resolve_data_root
from flowaug.errors import DataFormatError, FlowaugError
from flowaug.fileio import atomic_numpy_save, atomic_write_text, claim_run_folder

BATCH_SIZE = 1000  # images per corruption call; fixed so results do not depend on the machine
PARTIAL_DIR = ".partial"
MANIFEST = GENERATED_MANIFEST
_WORKER_STATE: dict[str, object] = {}


def block_seed(seed: int, corruption: str, severity: int) -> np.random.SeedSequence:
    """The seed of one (corruption, severity) block: ``--seed`` with the name's CRC32 and the severity."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(corruption.encode()), severity))


def corrupt_block(
    images: np.ndarray, corruption: str, severity: int, seed: int, frost_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """One severity block: ``corruption`` at ``severity`` on uint8 (N,32,32,3) ``images``, in batches
    of :data:`BATCH_SIZE` drawing from :func:`block_seed`. Returns uint8 (N,32,32,3)."""
    fn = get_corruption(corruption)
    options = {"frost_dir": frost_dir} if corruption == "frost" else {}
    rng = np.random.default_rng(block_seed(seed, corruption, severity))
    out = np.empty_like(images)
    for start in range(0, len(images), BATCH_SIZE):
        out[start : start + BATCH_SIZE] = fn(images[start : start + BATCH_SIZE], severity, rng, **options)
    return out


def _has_shape(path: Path, shape: tuple[int, ...]) -> bool:
    """Whether ``path`` is a readable uint8 ``.npy`` of ``shape`` (header only)."""
    if not path.is_file():
        return False
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return array.shape == shape and array.dtype == np.uint8


def _block_path(out_dir: Path, corruption: str, severity: int) -> Path:
    return out_dir / PARTIAL_DIR / f"{corruption}_s{severity}.npy"


def _init_worker(images: np.ndarray, frost_dir: str | None) -> None:
    _WORKER_STATE.update(images=images, frost_dir=frost_dir)


def _run_block(corruption: str, severity: int, seed: int, path: Path) -> tuple[str, int]:
    """Worker task: compute one block from the worker's images and save it atomically."""
    block = corrupt_block(_WORKER_STATE["images"], corruption, severity, seed, _WORKER_STATE["frost_dir"])
    atomic_numpy_save(block, path)
    return corruption, severity


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Worker processes start with one BLAS/OpenMP thread each (restored afterwards)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_manifest(out_dir: Path, manifest: dict) -> None:
    """Write the manifest, or refuse when ``out_dir`` holds a set made with other settings."""
    path = out_dir / MANIFEST
    if path.is_file():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DataFormatError(f"{path}: unreadable ({error}); delete it or use another --out") from error
        if existing != manifest:
            raise DataFormatError(
                f"{out_dir} holds a set generated with {existing}, not {manifest}; "
                "use another --out or delete that folder to start over"
            )
        return
    atomic_write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", path)


def generate_cifar_c(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir: str | os.PathLike,
    corruptions: Sequence[str] = ALL_CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    workers: int = 1,
    frost_dir: str | os.PathLike | None = None,
    source: str = "",
    progress: bool = True,
) -> dict[str, str]:
    """Generate the corrupted sets of uint8 (N,32,32,3) ``images`` into ``out_dir`` (module docstring).

    Returns ``{corruption: status}`` with status "written", "skipped" (already complete) or
    "partial: severities [...]" (blocks saved, the official file needs the missing ones).
    """
    unknown = [name for name in corruptions if name not in ALL_CORRUPTIONS]
    if unknown:
        raise FlowaugError(f"unknown corruption(s) {unknown}; expected some of {', '.join(ALL_CORRUPTIONS)}")
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise FlowaugError(f"severities must be a non-empty subset of {SEVERITIES}, got {list(severities)}")
    if workers < 1:
        raise FlowaugError(f"--workers must be >= 1, got {workers}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3) or len(images) != len(labels):
        raise DataFormatError(f"images must be uint8 (N,32,32,3) with N labels, got {images.dtype} {images.shape} "
                              f"and {len(labels)} labels")
    out_dir = Path(out_dir)
    n = len(images)
    frost_dir = None if frost_dir is None else str(frost_dir)
    if "frost" in corruptions:
        load_frost_textures(frost_dir if frost_dir is not None else str(default_frost_dir()))
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_manifest(out_dir, {"seed": seed, "num_images": n, "source": source})
    tiled = np.tile(labels.astype(np.uint8), len(SEVERITIES))
    labels_path = out_dir / "labels.npy"
    if not (labels_path.is_file() and np.array_equal(np.load(labels_path, allow_pickle=False), tiled)):
        atomic_numpy_save(tiled, labels_path)

    corruptions = list(dict.fromkeys(corruptions))
    severities = sorted(set(severities))
    final_shape = (len(SEVERITIES) * n, 32, 32, 3)
    status = {name: "skipped" for name in corruptions if _has_shape(out_dir / f"{name}.npy", final_shape)}
    tasks = [
        (name, severity, seed, _block_path(out_dir, name, severity))
        for name in corruptions if name not in status
        for severity in severities
        if not _has_shape(_block_path(out_dir, name, severity), (n, 32, 32, 3))
    ]
    bar = tqdm(total=len(tasks) * n, unit="img", desc="make-cifar-c", disable=not progress)
    if workers == 1:
        _init_worker(images, frost_dir)
        for task in tasks:
            bar.set_postfix_str(f"{task[0]} s{task[1]}")
            _run_block(*task)
            bar.update(n)
    else:
        with _single_threaded_children(), ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker,
            initargs=(images, frost_dir),
        ) as pool:
            for future in as_completed([pool.submit(_run_block, *task) for task in tasks]):
                name, severity = future.result()
                bar.set_postfix_str(f"{name} s{severity}")
                bar.update(n)
    bar.close()

    for name in corruptions:
        if name in status:
            continue
        blocks = [_block_path(out_dir, name, severity) for severity in SEVERITIES]
        done = [severity for severity, path in zip(SEVERITIES, blocks) if _has_shape(path, (n, 32, 32, 3))]
        if len(done) < len(SEVERITIES):
            status[name] = f"partial: severities {done}"
            continue
        atomic_numpy_save(np.concatenate([np.load(path) for path in blocks]), out_dir / f"{name}.npy")
        for path in blocks:
            path.unlink()
        status[name] = "written"
    with contextlib.suppress(OSError):
        (out_dir / PARTIAL_DIR).rmdir()
    return status


def generate_from_test_split(
    dataset: str,
    data_root: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    limit: int | None = None,
    corruptions: Sequence[str] = ALL_CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    workers: int = 1,
    frost_dir: str | os.PathLike | None = None,
) -> dict[str, str]:
    """:func:`generate_cifar_c` on the first ``limit`` (default: all) test images of ``dataset`` under
    ``data_root``; frost textures from ``frost_dir`` (default ``<data root>/cifar_c_frost``).
    ``out_dir`` is claimed for the duration (:func:`flowaug.fileio.claim_run_folder`): a second
    process writing into it stops at once with a clear error."""
    data = load_cifar(dataset, "test", data_root)
    if limit is not None and not 1 <= limit <= len(data.images):
        raise FlowaugError(f"--limit must be in 1..{len(data.images)}, got {limit}")
    count = len(data.images) if limit is None else limit
    frost_dir = frost_dir if frost_dir is not None else resolve_data_root(data_root) / "cifar_c_frost"
    print(f"make-cifar-c: {data.description}, {count} test images, seed {seed} -> {out_dir}")
    with claim_run_folder(out_dir):
        return generate_cifar_c(data.images[:count], data.labels[:count], out_dir, corruptions, severities, seed,
                                workers, frost_dir, source=f"{data.description}, first {count} test images")


def shared_cifar_c_dir(dataset: str, data_root: str | os.PathLike | None, limit: int | None = None,
                       seed: int = 0) -> Path:
    """The cache folder of CIFAR-C generated from the first ``limit`` (default: all) test images of
    ``dataset`` under ``data_root`` with ``seed``: ``<cache>/cifar-c/<dataset>-first<N>-seed<S>-<key>``
    (:func:`flowaug.cache.cache_root`), ``key`` the first 12 hex digits of the sha256 of those images
    and labels, so runs on the same pixels share one copy and other pixels get their own."""
    data = load_cifar(dataset, "test", data_root)
    count = len(data.images) if limit is None else limit
    digest = hashlib.sha256(np.ascontiguousarray(data.images[:count]).tobytes())
    digest.update(np.ascontiguousarray(data.labels[:count], dtype=np.int64).tobytes())
    return cache_root() / "cifar-c" / f"{dataset}-first{count}-seed{seed}-{digest.hexdigest()[:12]}"


def generate_once(dataset: str, data_root: str | os.PathLike | None, out_dir: str | os.PathLike,
                  limit: int | None = None, seed: int = 0, workers: int = 1) -> Path:
    """:func:`generate_from_test_split` into ``out_dir`` unless it holds ``labels.npy`` already;
    processes that ask together (a sweep's first runs) wait on a lock file beside ``out_dir``, and the
    later ones find it made. Returns ``out_dir``."""
    out_dir = Path(out_dir)
    if not (out_dir / "labels.npy").is_file():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out_dir / "labels.npy").is_file():
                generate_from_test_split(dataset, data_root, out_dir, limit, seed=seed, workers=workers)
    return out_dir
