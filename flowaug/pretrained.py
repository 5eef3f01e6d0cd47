"""Registry of pretrained weights (in the spirit of timm): name -> file, sha256, kind.

The registry is the JSON manifest ``registry.json`` in the pretrained directory, one entry
per line::

    {
      "cifar10": {"filename": "cifar10.pt", "sha256": "<64 hex>", "kind": "flow", "description": "..."},
      "cifar10-film": {..., "hf_hub_id": "owner/repo"}
    }

Adding pretrained weights = copying the file into the directory and adding one line
(:func:`register_pretrained` does both the hashing and the atomic manifest rewrite).

Where a registered file is read from (:func:`weights_path`): the pretrained directory, else the
weights cache ``<cache>/weights/`` (:func:`flowaug.cache.cache_root`), else, for an entry with
``hf_hub_id`` (``owner/repo`` or ``owner/repo@revision``), the Hugging Face Hub: fetched once with
``huggingface_hub`` into the weights cache, the way timm fetches its weights. The sha256 is checked
wherever the file came from. Only the default flow and the judge ride inside the installed package;
a source checkout has every file in ``pretrained/``.

The pretrained directory is, in order: the ``registry_dir`` argument, ``$FLOWAUG_PRETRAINED``,
``pretrained/`` at the root of a source checkout (beside the ``flowaug`` package), then the copy
installed with the package (``flowaug.weights``: ``pip install .`` ships ``pretrained/`` inside
the package, so an ordinary install finds its weights from any directory).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from flowaug.cache import cache_root
from flowaug.errors import CheckpointError, ChecksumMismatchError, DataFormatError, UnknownPretrainedError
from flowaug.fileio import atomic_write_text, sha256_file
from flowaug.flow.model import DecoupledFlow
from flowaug.models.registry import load_classifier

MANIFEST_NAME = "registry.json"
SOURCE_PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
PACKAGED_PRETRAINED_DIR = Path(__file__).resolve().parent / "weights"  # pretrained/ as installed by pip install .


def _load_flow(path: Path, map_location: Any) -> nn.Module:
    return DecoupledFlow.from_checkpoint(path, map_location=map_location)


def _load_classifier(path: Path, map_location: Any) -> nn.Module:
    return load_classifier(path, map_location=map_location)


LOADERS: dict[str, Callable[[Path, Any], nn.Module]] = {
    "flow": _load_flow,
    "classifier": _load_classifier,
}


@dataclass(frozen=True)
class PretrainedEntry:
    """One registry entry: ``filename`` (inside the pretrained directory), its ``sha256``
    (lowercase hex), ``kind`` (a key of :data:`LOADERS`), a one-line ``description`` and, for weights
    that do not ship with the package, ``hf_hub_id``: the Hub repository holding ``filename``
    (``owner/repo``, optionally ``@revision``)."""

    name: str
    filename: str
    sha256: str
    kind: str
    description: str
    hf_hub_id: str = ""

    def __post_init__(self) -> None:
        if self.kind not in LOADERS:
            raise ValueError(f"pretrained entry {self.name!r}: kind must be one of {sorted(LOADERS)}, "
                             f"got {self.kind!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"pretrained entry {self.name!r}: sha256 must be 64 lowercase hex digits, "
                             f"got {self.sha256!r}")
        if not self.filename or Path(self.filename).name != self.filename:
            raise ValueError(f"pretrained entry {self.name!r}: filename must be a plain file name "
                             f"inside the pretrained directory, got {self.filename!r}")
        if self.hf_hub_id and not re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w./-]+)?", self.hf_hub_id):
            raise ValueError(f"pretrained entry {self.name!r}: hf_hub_id must be owner/repo or "
                             f"owner/repo@revision, got {self.hf_hub_id!r}")

    @property
    def hub_url(self) -> str:
        """The file's address on the Hub ("" without ``hf_hub_id``)."""
        if not self.hf_hub_id:
            return ""
        repo, _, revision = self.hf_hub_id.partition("@")
        return f"https://huggingface.co/{repo}/resolve/{revision or 'main'}/{self.filename}"


def resolve_registry_dir(registry_dir: str | os.PathLike | None = None) -> Path:
    """The pretrained directory: ``registry_dir``, else ``$FLOWAUG_PRETRAINED``, else the source
    checkout's ``pretrained/``, else the weights installed with the package."""
    if registry_dir is not None:
        return Path(registry_dir)
    env = os.environ.get("FLOWAUG_PRETRAINED")
    if env:
        return Path(env)
    return SOURCE_PRETRAINED_DIR if (SOURCE_PRETRAINED_DIR / MANIFEST_NAME).is_file() else PACKAGED_PRETRAINED_DIR


def read_registry(registry_dir: str | os.PathLike | None = None) -> dict[str, PretrainedEntry]:
    """Entries of the manifest in the pretrained directory (empty if there is no manifest)."""
    manifest = resolve_registry_dir(registry_dir) / MANIFEST_NAME
    if not manifest.is_file():
        return {}
    try:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"top level must be an object name -> entry, got {type(raw).__name__}")
        return {name: PretrainedEntry(name=name, **fields) for name, fields in raw.items()}
    except (ValueError, TypeError) as error:
        raise DataFormatError(f"pretrained manifest {manifest} is malformed: {error}; each entry needs "
                              f"filename, sha256, kind, description (and may have hf_hub_id)") from error


def write_registry(entries: dict[str, PretrainedEntry], registry_dir: str | os.PathLike | None = None) -> None:
    """Atomically write ``entries`` as the manifest, sorted by name, one entry per line."""
    lines = []
    for name in sorted(entries):
        fields = {k: v for k, v in asdict(entries[name]).items() if k != "name" and (v or k != "hf_hub_id")}
        lines.append(f"  {json.dumps(name)}: {json.dumps(fields)}")
    text = "{\n" + ",\n".join(lines) + ("\n" if lines else "") + "}\n"
    atomic_write_text(text, resolve_registry_dir(registry_dir) / MANIFEST_NAME)


def register_pretrained(name: str, filename: str, kind: str, description: str,
                        registry_dir: str | os.PathLike | None = None, hf_hub_id: str = "") -> PretrainedEntry:
    """Hash ``filename`` (already in the pretrained directory) and add or replace entry ``name``
    (``hf_hub_id``: where the file is also published, for installs that do not carry it)."""
    directory = resolve_registry_dir(registry_dir)
    path = directory / filename
    if not path.is_file():
        raise CheckpointError(f"cannot register {name!r}: {path} does not exist; copy the weights "
                              f"into {directory} first")
    entry = PretrainedEntry(name, filename, sha256_file(path), kind, description, hf_hub_id)
    write_registry({**read_registry(directory), name: entry}, directory)
    return entry


def available_pretrained(registry_dir: str | os.PathLike | None = None) -> list[str]:
    """Sorted names of the registered pretrained weights."""
    return sorted(read_registry(registry_dir))


def load_pretrained(name: str, map_location: str | torch.device = "cpu",
                    registry_dir: str | os.PathLike | None = None) -> nn.Module:
    """Load registered weights ``name``, verifying the file's sha256 first.

    Returns a :class:`~flowaug.flow.model.DecoupledFlow` for kind "flow" and the
    ``flowaug.models.load_classifier`` module for kind "classifier" (both in eval mode).
    Raises ``UnknownPretrainedError`` (a ``ValueError``) for an unknown name (listing the choices), ``CheckpointError`` for a
    missing or unreadable file and ``ChecksumMismatchError`` when the hash differs.
    """
    directory = resolve_registry_dir(registry_dir)
    registry = read_registry(directory)
    if name not in registry:
        where = directory / MANIFEST_NAME
        listed = sorted(registry) if registry else f"none ({where} is missing or empty)"
        raise UnknownPretrainedError(f"unknown pretrained weights {name!r}; available: {listed}")
    entry = registry[name]
    path = weights_path(entry, directory)
    digest = sha256_file(path)
    if digest != entry.sha256:
        remedy = "delete it to fetch it again" if path.parent == weights_cache() else "restore it"
        raise ChecksumMismatchError(f"{path} has sha256 {digest}, but the registry expects {entry.sha256} "
                                    f"for {name!r}: the file is corrupt or was replaced; {remedy}")
    return LOADERS[entry.kind](path, map_location)


def weights_cache() -> Path:
    """Where weights that do not ship with the package are kept: ``<cache>/weights/``."""
    return cache_root() / "weights"


def weights_path(entry: PretrainedEntry, directory: Path) -> Path:
    """The file of ``entry``: in ``directory``, else in :func:`weights_cache`, else fetched from the Hub
    into it (entries with ``hf_hub_id``). Raises CheckpointError naming the entry, the cache path and
    how to place the file by hand when it cannot be had (no network, no such Hub file)."""
    for path in (directory / entry.filename, weights_cache() / entry.filename):
        if path.is_file():
            return path
    if not entry.hf_hub_id:
        raise CheckpointError(f"pretrained weights {entry.name!r} are registered but {directory / entry.filename} "
                              f"does not exist; restore the file or set $FLOWAUG_PRETRAINED to the directory "
                              f"holding it")
    repo, _, revision = entry.hf_hub_id.partition("@")
    try:
        from huggingface_hub import hf_hub_download

        fetched = Path(hf_hub_download(repo, entry.filename, revision=revision or None, local_dir=weights_cache()))
    except Exception as error:  # offline, unknown repository or file, a proxy: all end the same way here
        reason = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointError(
            f"pretrained weights {entry.name!r} do not ship with this install and could not be fetched from the "
            f"Hugging Face Hub ({entry.hf_hub_id}: {type(error).__name__}: {reason}). "
            f"On a machine without network, download {entry.hub_url} elsewhere and place it at "
            f"{weights_cache() / entry.filename} (or set $FLOWAUG_CACHE); a source checkout has it in pretrained/"
        ) from error
    return fetched


def load_model(spec: str | os.PathLike, kind: str, map_location: str | torch.device = "cpu") -> nn.Module:
    """A model of ``kind`` ("flow" or "classifier") from a checkpoint path or a registry name.

    An existing file path is loaded directly (no registry, no hash); anything else is looked
    up with :func:`load_pretrained`, which must give a model of the requested kind.
    """
    if kind not in LOADERS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {sorted(LOADERS)}")
    path = Path(spec)
    if path.is_file():
        return LOADERS[kind](path, map_location)
    if path.suffix in (".pt", ".pth") or os.sep in str(spec):
        raise CheckpointError(f"{kind} checkpoint {path} does not exist; pass an existing checkpoint file "
                              f"or a registry name ({', '.join(available_pretrained()) or 'none registered'})")
    registry = read_registry()
    if str(spec) in registry and registry[str(spec)].kind != kind:
        raise UnknownPretrainedError(f"pretrained weights {str(spec)!r} are a {registry[str(spec)].kind}, "
                                     f"not a {kind}")
    return load_pretrained(str(spec), map_location=map_location)
