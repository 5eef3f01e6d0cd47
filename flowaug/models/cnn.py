"""CIFAR CNNs: a fast small CNN, a CIFAR ResNet-18 and a WRN-28-10.

Each takes float images (B, 3, 32, 32) in [0, 1] on any device, normalises them internally with the
CIFAR mean/std (:mod:`flowaug.models.layers`) and returns logits (B, num_classes).
"""
from __future__ import annotations

import torch
from torch import nn

from flowaug.models.layers import LumaStandardize, Normalize


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
