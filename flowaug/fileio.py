"""Atomic file writes and hashing: an interrupted write never leaves a half-written file."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from flowaug.errors import CheckpointError, FlowaugError

RUN_LOCK_NAME = ".flowaug.lock"


class RunFolderBusyError(FlowaugError):
    """Another process is writing into the run folder."""


@contextmanager
def claim_run_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) while the block runs.

    A second process that claims the same folder gets :class:`RunFolderBusyError` at once instead
    of interleaving its writes. The lock is an ``flock`` on ``folder/.flowaug.lock``: the operating
    system releases it when the holder exits, however it exits, so a crashed run never leaves the
    folder stuck. Once claimed, temporary files that a killed writer left behind (``.*.tmp`` from
    :func:`atomic_path`) are removed: nobody else can be writing them. The lock file is removed
    when the block ends (a claimer that locked a removed file sees that and locks the new one).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FlowaugError(f"{folder} is a file, not a run folder; choose another output folder")
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / RUN_LOCK_NAME
    while True:
        handle = open(lock, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RunFolderBusyError(f"{folder} is in use by another flowaug process (pid in {lock}); "
                                     f"wait for it to finish or choose another output folder") from None
        try:
            current = os.stat(lock).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(handle.fileno()).st_ino:
            break
        handle.close()  # the holder before us removed the file it had locked: lock the new one
    with handle:
        for orphan in folder.glob(".*.tmp"):
            orphan.unlink(missing_ok=True)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield folder
        finally:
            lock.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask cannot be read without setting it


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The rename is atomic on POSIX, so readers see either the old file or the
    complete new one. On an exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a partial file at ``path``.

    A failed write (torch reports a full disk as "PytorchStreamWriter failed writing file") becomes
    an ``OSError`` that names the file and the free space left, with the old file intact."""
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as error:
            if "write" not in str(error).lower():
                raise
            free = shutil.disk_usage(Path(path).parent).free
            raise OSError(errno.ENOSPC, f"could not write {path} ({free / 2**20:.0f} MiB free on its disk; "
                                        f"the previous file, if any, is kept): {error}") from None


def atomic_numpy_save(array: np.ndarray, path: str | os.PathLike) -> None:
    """``np.save`` (no pickle) that never leaves a partial ``.npy`` at ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


_PROGRESS_MIN_BYTES = 32 << 20


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk_size: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks; a tqdm bar (stderr) is shown for files over 32 MiB."""
    path = Path(path)
    digest = hashlib.new(algorithm)
    size = path.stat().st_size
    with open(path, "rb") as f, tqdm(
        total=size, unit="B", unit_scale=True, desc=f"{algorithm} {path.name}",
        disable=size < _PROGRESS_MIN_BYTES, leave=False,
    ) as bar:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 digest of a file."""
    return file_digest(path, "sha256")


def read_checkpoint(path: str | os.PathLike, format_tag: str, version: int, what: str,
                    map_location: Any = "cpu", missing_hint: str = "check the path") -> dict[str, Any]:
    """Load a flowaug checkpoint dict with ``weights_only=True`` and check its format tag and version.

    ``what`` names the kind of checkpoint in messages (e.g. "flow", "classifier").
    Raises :class:`flowaug.errors.CheckpointError` for a missing, unreadable (truncated,
    corrupt, foreign) file, a wrong ``format`` tag or an unsupported ``version``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} checkpoint {path} does not exist; {missing_hint}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(error).__name__}: {reason}); "
                              "the file may be truncated or corrupt") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != format_tag:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path} is not a flowaug {what} checkpoint (format {found!r}, expected {format_tag!r})")
    if checkpoint.get("version") != version:
        raise CheckpointError(f"{path} has {what} checkpoint version {checkpoint.get('version')!r}; "
                              f"this flowaug reads version {version}")
    return checkpoint


def finished_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a finished training run: its ``report.json``, written last and atomically."""
    return (Path(run_dir) / "report.json").is_file()
