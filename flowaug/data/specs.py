"""Dataset specs: one string names images for every command (pretraining, grids, explanations).

Grammar: ``KIND[:PATH][@SPLIT]``

- ``cifar10`` / ``cifar100``: the official pickles or the offline ``.npz`` under the data root
  (:func:`flowaug.data.load_cifar`); splits ``train`` and ``test``.
- ``spurious`` / ``spurious:PATH``: the SpuriousBackgrounds benchmark, generated with its defaults
  (rho 0.95, seed 0, colour cue) or read from a file written by ``flowaug make-spurious``; splits
  ``train``, ``val``, ``test``, ``test_shift``; exact foreground masks.
- ``folder:PATH``: an ImageFolder tree (``PATH/<class>/<image>``) or a flat folder of images,
  read with PIL, converted to RGB, resized (shorter side) and centre-cropped; no labels, one split.
- ``npz:PATH``: a ``.npz`` with ``x_train`` uint8 (N,H,W,3) and optionally ``x_test``; splits
  ``train`` and ``test``.

Pretraining (:func:`load_train_val`) trains on the train split and validates on the held-out one
(``test``; ``val`` for SpuriousBackgrounds; a seeded fraction where there is none) and takes no
``@SPLIT``. Pictures (:func:`load_image_sample`) draw from ``@SPLIT``, by default the held-out split
(``test_shift`` for SpuriousBackgrounds).
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from flowaug.data.base import to_float_chw
from flowaug.data.cifar import load_cifar
from flowaug.data.image_files import fit_image, read_image_folder
from flowaug.data.spurious import SpuriousBackgrounds
from flowaug.errors import DataFormatError, DatasetNotFoundError, FlowaugError

GRAMMAR = "cifar10, cifar100, spurious, spurious:PATH, folder:PATH or npz:PATH, optionally with @SPLIT"
# kind -> (takes a path: "no" | "optional" | "required", splits, held-out split for pictures)
KINDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "cifar10": ("no", ("train", "test"), "test"),
    "cifar100": ("no", ("train", "test"), "test"),
    "spurious": ("optional", ("train", "val", "test", "test_shift"), "test_shift"),
    "folder": ("required", ("all",), "all"),
    "npz": ("required", ("train", "test"), "test"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: ``kind`` (a key of :data:`KINDS`), ``path`` ("" when none), ``split`` ("" when none)."""

    kind: str
    path: str
    split: str

    @classmethod
    def parse(cls, spec: str) -> DatasetSpec:
        """Parse ``spec``; raises :class:`FlowaugError` naming the grammar when it does not fit."""
        rest, _, split = spec.partition("@")
        kind, _, path = rest.partition(":")
        if kind not in KINDS:
            raise FlowaugError(f"unknown dataset spec {spec!r}; use {GRAMMAR}")
        takes_path, splits, _ = KINDS[kind]
        if (takes_path == "no" and path) or (takes_path == "required" and not path):
            raise FlowaugError(f"dataset spec {spec!r}: {kind} takes {'no' if takes_path == 'no' else 'a'} PATH; "
                               f"use {GRAMMAR}")
        if split and split not in splits:
            raise FlowaugError(f"dataset spec {spec!r}: unknown split {split!r}; {kind} has {', '.join(splits)}")
        return cls(kind, path, split)


@dataclass(frozen=True)
class PretrainData:
    """Training and validation images of one source.

    Attributes:
        train: uint8 (N, S, S, 3) HWC RGB, S = the requested image size.
        val: uint8 (M, S, S, 3), disjoint from ``train``.
        description: human-readable name, e.g. "CIFAR-10 (JPEG-q75 proxy)".
        train_masks: bool (N, S, S) foreground masks (True = object) where the source has them
            (SpuriousBackgrounds at its own size), else None.
    """

    train: np.ndarray
    val: np.ndarray
    description: str
    train_masks: np.ndarray | None = None


@dataclass(frozen=True)
class ImageSample:
    """images float (N,3,S,S) in [0,1]; labels (N,) or None (folders); masks (N,1,S,S) or None."""

    images: Tensor
    labels: Tensor | None
    masks: Tensor | None
    description: str


def fit_array(images: np.ndarray, size: int, source: str) -> np.ndarray:
    """Check ``images`` uint8 (N,H,W,3); resize/centre-crop each to ``size`` when H or W differ."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataFormatError(f"{source}: images have shape {images.shape} and dtype {images.dtype}, "
                              f"expected uint8 (N, H, W, 3) HWC RGB")
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([fit_image(Image.fromarray(img), size) for img in images])


def holdout_split(images: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``images`` into (train, val) with a seeded permutation; val gets ``fraction`` (at least 1 image)."""
    if len(images) < 2:
        raise DataFormatError(f"need at least 2 images to hold out a validation split, got {len(images)}")
    n_val = min(len(images) - 1, max(1, round(fraction * len(images))))
    order = np.random.default_rng(seed).permutation(len(images))
    return images[np.sort(order[n_val:])], images[np.sort(order[:n_val])]


def _read_npz(path: str) -> dict[str, np.ndarray]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DatasetNotFoundError(f"npz file {file} does not exist")
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in ("x_train", "x_test") if key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataFormatError(f"cannot read {file} as .npz ({error}); is it truncated?") from error
    if "x_train" not in arrays:
        raise DataFormatError(f"{file} has no 'x_train' array (uint8 (N, H, W, 3)); "
                              f"'x_test' is optional")
    return arrays


def _spurious(spec: DatasetSpec, split: str, size: int, num_images: int | None = None) -> SpuriousBackgrounds:
    if spec.path:
        return SpuriousBackgrounds.from_npz(Path(spec.path).expanduser(), split)
    return SpuriousBackgrounds(split, size=size, num_images=num_images)


def load_train_val(spec: str, data_root: str | os.PathLike | None = None, image_size: int = 32,
                   val_fraction: float = 0.05, seed: int = 0) -> PretrainData:
    """Training and validation images of ``spec`` (the module docstring) at ``image_size`` x ``image_size``.

    ``val_fraction`` and ``seed`` only matter for sources without a held-out split.
    Raises :class:`FlowaugError` subclasses naming the problem (unknown spec, missing or
    empty folder, unreadable file, wrong array shape).
    """
    parsed = DatasetSpec.parse(spec)
    if parsed.split:
        raise FlowaugError(f"dataset spec {spec!r}: pretraining uses the train and held-out splits; drop @{parsed.split}")
    if parsed.kind in ("cifar10", "cifar100"):
        train, test = (load_cifar(parsed.kind, split, data_root) for split in ("train", "test"))
        return PretrainData(fit_array(train.images, image_size, parsed.kind),
                            fit_array(test.images, image_size, parsed.kind), train.description)
    if parsed.kind == "spurious":
        train, val = (_spurious(parsed, split, image_size) for split in ("train", "val"))
        masks = train.arrays.masks if train.arrays.images.shape[1] == image_size else None
        return PretrainData(fit_array(train.arrays.images, image_size, "spurious train"),
                            fit_array(val.arrays.images, image_size, "spurious val"), train.description, masks)
    if parsed.kind == "folder":
        images = read_image_folder(parsed.path, image_size)
        train, val = holdout_split(images, val_fraction, seed)
        return PretrainData(train, val, f"image folder {Path(parsed.path).expanduser()} ({len(images)} images)")
    arrays = _read_npz(parsed.path)
    name = Path(parsed.path).name
    train = fit_array(arrays["x_train"], image_size, f"{parsed.path}:x_train")
    if "x_test" in arrays:
        val = fit_array(arrays["x_test"], image_size, f"{parsed.path}:x_test")
    else:
        train, val = holdout_split(train, val_fraction, seed)
    return PretrainData(train, val, f"npz {name}")


def load_image_sample(spec: str, count: int, seed: int = 0, data_root: str | os.PathLike | None = None,
                      size: int = 32) -> ImageSample:
    """``count`` images of ``spec``'s split (default: the held-out one) drawn with ``seed`` (a seeded
    random choice, the same every time). ``size`` applies to folders and npz files (CIFAR and
    SpuriousBackgrounds images keep their pixels)."""
    parsed = DatasetSpec.parse(spec)
    split = parsed.split or KINDS[parsed.kind][2]
    generator = torch.Generator().manual_seed(seed)
    if parsed.kind == "spurious":
        data = _spurious(parsed, split, 32, num_images=max(count, 1000))
        pick = torch.randperm(len(data), generator=generator)[:count]
        images, labels, _, masks = data.tensors()
        return ImageSample(images[pick], labels[pick], masks[pick], data.description)
    if parsed.kind in ("cifar10", "cifar100"):
        data = load_cifar(parsed.kind, split, data_root)
        pick = torch.randperm(len(data.labels), generator=generator)[:count].numpy()
        return ImageSample(to_float_chw(data.images[pick]), torch.from_numpy(data.labels[pick]), None,
                           f"{data.description} {split} split")
    if parsed.kind == "folder":
        images, description = read_image_folder(parsed.path, size), f"image folder {parsed.path}"
    else:
        arrays = _read_npz(parsed.path)
        key = f"x_{parsed.split}" if parsed.split else ("x_test" if "x_test" in arrays else "x_train")
        if key not in arrays:
            raise DataFormatError(f"{parsed.path} has no {key!r} array for {spec!r}")
        images, description = fit_array(arrays[key], size, f"{parsed.path}:{key}"), f"npz {parsed.path}:{key}"
    pick = torch.randperm(len(images), generator=generator)[:count].numpy()
    return ImageSample(to_float_chw(images[pick]), None, None,
                       f"{description} ({len(images)} images, {size}x{size})")
