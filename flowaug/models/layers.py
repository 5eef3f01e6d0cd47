"""Layers every classifier shares: the CIFAR input normalisation and the colour-invariant luma input."""
from __future__ import annotations

import torch
from torch import nn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 grayscale weights


def luma(x: torch.Tensor) -> torch.Tensor:
    """BT.601 grayscale (luma) of RGB images: (B, 3, H, W) -> (B, 1, H, W), same dtype and device."""
    return (x * torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)


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
        self.register_buffer("weights", torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = (x * self.weights).sum(1, keepdim=True)
        mean = grey.mean(dim=(2, 3), keepdim=True)
        std = grey.std(dim=(2, 3), keepdim=True)
        return (grey - mean) / (std + 1e-2)
