"""CIFAR classifiers (a fast small CNN, a CIFAR ResNet-18, a WRN-28-10, a small ViT) and their checkpoints.

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

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

CHECKPOINT_FORMAT = "flowaug-classifier"
CHECKPOINT_VERSION = 1


class Normalize(nn.Module):
    """Subtract the CIFAR mean and divide by the std; buffers follow the model's device."""

    def __init__(self, mean: tuple[float, ...] = CIFAR_MEAN, std: tuple[float, ...] = CIFAR_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class LumaStandardize(nn.Module):
    """Colour-invariant input: BT.601 luma, standardised per image (zero mean, unit std).

    (B, 3, H, W) in [0, 1] -> (B, 1, H, W). Invariant to any global brightness and contrast change
    and blind to hue and saturation, so a classifier behind it sees structure, not colour.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor((0.299, 0.587, 0.114)).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        luma = (x * self.weights).sum(1, keepdim=True)
        mean = luma.mean(dim=(2, 3), keepdim=True)
        std = luma.std(dim=(2, 3), keepdim=True)
        return (luma - mean) / (std + 1e-2)


def conv_bn_gelu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """3x3 conv (no bias) -> BatchNorm -> GELU, as a list of layers."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.GELU(),
    ]


class SmallCNN(nn.Module):
    """An airbench-style CNN: a stem, then per width a conv, a 2x2 max-pool and a second conv.

    With the default widths (32, 64, 128, stem 24) it has about 0.3M parameters
    and ~25M multiply-adds per image: cheap enough for CPU training. The logits are
    a linear layer over the global max-pooled features, divided by ``logit_scale``
    as in airbench. ``colour_invariant`` replaces the CIFAR normalisation by
    :class:`LumaStandardize` (the colour-invariant judge of the quality benchmarks).
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128), stem: int = 24,
                 logit_scale: float = 1 / 0.125, colour_invariant: bool = False) -> None:
        super().__init__()
        front, channels = (LumaStandardize(), 1) if colour_invariant else (Normalize(), 3)
        layers: list[nn.Module] = [front, *conv_bn_gelu(channels, stem)]
        channels = stem
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.MaxPool2d(2),
                       nn.BatchNorm2d(width), nn.GELU(), *conv_bn_gelu(width, width)]
            channels = width
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) / self.logit_scale


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet (He et al. 2016, as used on CIFAR): 3x3 stem, no max-pool, 4 stages."""

    def __init__(self, num_classes: int = 10, blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2),
                 widths: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        layers: list[nn.Module] = [Normalize(), nn.Conv2d(3, widths[0], 3, padding=1, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU()]
        channels = widths[0]
        for stage, (blocks, width) in enumerate(zip(blocks_per_stage, widths)):
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(channels, width, stride))
                channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class WideBlock(nn.Module):
    """Pre-activation wide-ResNet block (BN-ReLU-conv twice) with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
                         if stride != 1 or in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(torch.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class WideResNet(nn.Module):
    """WRN-depth-width (Zagoruyko & Komodakis 2016) for CIFAR: 3 stages of (depth - 4) / 6 blocks,
    widths 16, 32, 64 times ``width``. WRN-28-10 has 36.5M parameters (a GPU model)."""

    def __init__(self, num_classes: int = 10, depth: int = 28, width: int = 10) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        layers: list[nn.Module] = [Normalize(), nn.Conv2d(3, 16, 3, padding=1, bias=False)]
        channels = 16
        for stage, stage_width in enumerate((16 * width, 32 * width, 64 * width)):
            for index in range((depth - 4) // 6):
                layers.append(WideBlock(channels, stage_width, 2 if stage > 0 and index == 0 else 1))
                channels = stage_width
        layers += [nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


CLASSIFIERS: dict[str, Callable[[int], nn.Module]] = {
    "small": lambda num_classes: SmallCNN(num_classes),
    "small-luma": lambda num_classes: SmallCNN(num_classes, colour_invariant=True),
    "resnet18": lambda num_classes: CifarResNet(num_classes),
    "wrn28_10": lambda num_classes: WideResNet(num_classes, depth=28, width=10),
    "vit-gap": lambda num_classes: _vit(num_classes, "gap"),
    "vit-cls": lambda num_classes: _vit(num_classes, "cls"),
}


def _vit(num_classes: int, readout: str) -> nn.Module:
    from flowaug.models.vit import SmallViT

    return SmallViT(num_classes, readout)


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
