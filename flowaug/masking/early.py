"""Early masking: remove the background at the input."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowaug.models.layers import CIFAR_MEAN

FILLS = ("mean", "zero", "blur", "noise")


def check_mask(x: Tensor, mask: Tensor) -> None:
    if not isinstance(mask, Tensor) or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != x.shape[0] \
            or mask.shape[-2:] != x.shape[-2:]:
        found = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must have shape ({x.shape[0]}, 1, {x.shape[-2]}, {x.shape[-1]}) for images "
                         f"{tuple(x.shape)}, got {found}")


def mask_background(x: Tensor, mask: Tensor, fill: str = "mean", mean: tuple[float, ...] = CIFAR_MEAN,
                    generator: torch.Generator | None = None) -> Tensor:
    """Images (B,C,H,W) in [0,1] with the background (``mask`` (B,1,H,W), 1 = foreground) replaced.

    ``fill``: "mean" (the dataset mean ``mean``, per channel: the value a normalising classifier
    sees as zero signal, so the default), "zero" (black), "blur" (a strong Gaussian blur of the
    image itself: keeps the background's colour, removes its detail) or "noise" (uniform noise
    drawn from ``generator``, on the images' device).
    """
    check_mask(x, mask)
    if fill == "mean":
        background = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1).expand_as(x)
    elif fill == "zero":
        background = torch.zeros_like(x)
    elif fill == "blur":
        size = max(3, (min(x.shape[-2:]) // 4) | 1)
        background = F.avg_pool2d(F.pad(x, [size // 2] * 4, mode="replicate"), size, stride=1)
    elif fill == "noise":
        background = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    else:
        raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")
    return torch.lerp(background, x, mask.to(x.dtype))


class EarlyMasking(nn.Module):
    """A classifier that only sees the foreground: ``model(mask_background(x, mask, fill))``.

    Call ``net(x, mask)`` with images (B,3,H,W) in [0,1] and masks (B,1,H,W), in training and at test time.
    """

    def __init__(self, model: nn.Module, fill: str = "mean", mean: tuple[float, ...] = CIFAR_MEAN) -> None:
        super().__init__()
        if fill not in FILLS:
            raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")
        self.model, self.fill, self.mean = model, fill, mean

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.model(mask_background(x, mask, self.fill, self.mean))
