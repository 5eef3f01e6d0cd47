"""The classifier registry (a name -> a constructor) and classifier checkpoints.

Every classifier takes float images (B, 3, 32, 32) in [0, 1] on any device,
normalises them internally with the CIFAR mean/std, and returns logits
(B, num_classes).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from flowaug.errors import CheckpointError
from flowaug.fileio import atomic_torch_save, read_checkpoint
from flowaug.models.cnn import CifarResNet, SmallCNN, WideResNet
from flowaug.models.vit import SmallViT

CHECKPOINT_FORMAT = "flowaug-classifier"
CHECKPOINT_VERSION = 1

CLASSIFIERS: dict[str, Callable[[int], nn.Module]] = {
    "small": lambda num_classes: SmallCNN(num_classes),
    "small-luma": lambda num_classes: SmallCNN(num_classes, colour_invariant=True),
    "resnet18": lambda num_classes: CifarResNet(num_classes),
    "wrn28_10": lambda num_classes: WideResNet(num_classes, depth=28, width=10),
    "vit-gap": lambda num_classes: SmallViT(num_classes, "gap"),
    "vit-cls": lambda num_classes: SmallViT(num_classes, "cls"),
}


def build_classifier(arch: str, num_classes: int) -> nn.Module:
    """A fresh classifier ``arch`` (a key of :data:`CLASSIFIERS`) with ``num_classes`` logits."""
    if arch not in CLASSIFIERS:
        raise ValueError(f"unknown classifier arch {arch!r}; choose one of {sorted(CLASSIFIERS)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return CLASSIFIERS[arch](num_classes)


def save_classifier(model: nn.Module, path: str | os.PathLike, arch: str, num_classes: int,
                    meta: dict[str, Any] | None = None) -> None:
    """Write ``model``'s weights atomically as a ``flowaug-classifier`` v1 checkpoint.

    ``meta`` must be JSON-serialisable; it is stored as plain data (str subclasses such as
    ``torch.__version__`` become str) so the file loads with ``weights_only=True``.
    """
    if arch not in CLASSIFIERS:
        raise ValueError(f"unknown classifier arch {arch!r}; choose one of {sorted(CLASSIFIERS)}")
    try:
        meta = json.loads(json.dumps(meta or {}))
    except (TypeError, ValueError) as error:
        raise ValueError(f"classifier meta must be JSON-serialisable plain data: {error}") from error
    state_dict = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "arch": arch,
                       "num_classes": int(num_classes), "state_dict": state_dict, "meta": meta}, path)


def read_classifier_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a classifier checkpoint dict; raise :class:`CheckpointError` if it is not one."""
    path = Path(path)
    checkpoint = read_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "classifier", map_location,
                                 missing_hint="check the path or train one with recipes/train_reference_classifier.py")
    if checkpoint.get("arch") not in CLASSIFIERS:
        raise CheckpointError(f"{path} names unknown classifier arch {checkpoint.get('arch')!r}; "
                              f"this flowaug knows {sorted(CLASSIFIERS)}")
    return checkpoint


def load_classifier(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the classifier saved at ``path`` (``weights_only=True``), in eval mode.

    The checkpoint's ``meta`` dict is attached to the module as ``model.meta``.
    Raises :class:`CheckpointError` for a missing, corrupt, foreign or mismatched file.
    """
    checkpoint = read_classifier_checkpoint(path, map_location)
    model = build_classifier(checkpoint["arch"], checkpoint["num_classes"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path}: weights do not match a {checkpoint['arch']!r} classifier with "
                              f"{checkpoint['num_classes']} classes: {error}") from error
    model.meta = checkpoint.get("meta", {})
    return model.eval()
