"""``RegionalColourSwap``: the non-learned twin of FlowAug's colour flow.

Subtract an image's K x K cell mean colours (bilinearly upsampled to the image) and add a donor's:
the image takes the donor's regional colours (background tone, colour cast, where they lie) and
keeps every edge and texture of its own. With the default flow ``cifar10`` a FlowAug swap is a
learned version of exactly this (a smooth 4x4 colour map); this op matches it by a
colour-invariant judge at a fraction of the cost, so it is the baseline a flow has to beat, and a
useful augmentation on its own wherever background colour is a shortcut.

Example::

    import torch
    from flowaug import RegionalColourSwap

    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 2
    aug = RegionalColourSwap(p=1.0, donor="other_class", generator=0)
    x_aug, y = aug(x, y)                                   # same shape, dtype and device; labels unchanged
    masks = torch.zeros(8, 1, 32, 32); masks[..., 8:24, 8:24] = 1.0
    background_only, _ = aug(x, y, masks=masks)            # 1 = object: kept as it is
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from flowaug.augmentation.donor import DonorAugmentation
from flowaug.augmentation.params import FlowAugParams


def cell_means(images: Tensor, grid: int) -> Tensor:
    """Mean colours (B,3,K,K) of the K x K cells of ``images`` (B,3,H,W) (adaptive average pooling)."""
    return F.adaptive_avg_pool2d(images, grid)


def regional_colour_field(means: Tensor, size: tuple[int, int]) -> Tensor:
    """Cell values (B,3,K,K) upsampled bilinearly to a smooth field (B,3,H,W), as FlowAug's colour map is."""
    return F.interpolate(means, size=size, mode="bilinear", align_corners=False)


class RegionalColourSwap(DonorAugmentation):
    """Give each drawn image a donor's K x K regional mean colours, keeping its own detail.

    ``out = x - up(cells(x)) + up(cells(donor))`` (clamped to [0, 1]), where ``cells`` are the K x K
    cell means and ``up`` is bilinear upsampling; "mix" mode moves a drawn weight of the way.

    Args:
        p: probability that an image is changed, as FlowAug's
            (:class:`~flowaug.augmentation.donor.DonorAugmentation`); drawn by the same code, as are
            the next three.
        mode: "swap" or "mix".
        donor: the donor policy.
        mix_range: the donor weight's range in "mix" mode.
        generator: an int seed, a ``torch.Generator`` or None.
        grid: K, cells per side (default 4, as the default flow's colour map); images must be at
            least K pixels per side.

    Call ``aug(x)``, ``aug(x, y)``, ``aug(x, y, groups=g)``, ``masks=m`` (background only) or
    ``params=`` (replay), exactly as FlowAug.
    """

    def __init__(self, p: float = 0.5, mode: str = "swap", donor: str = "any", grid: int = 4,
                 mix_range: tuple[float, float] = (0.5, 1.0), generator: torch.Generator | int | None = None) -> None:
        super().__init__(p, mode, mix_range, donor, generator)
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid must be an int >= 1 (cells per side), got {grid!r}")
        self.grid = grid

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}, donor={self.donor!r}, grid={self.grid}, mix_range={self.mix_range}"

    def check_size(self, height: int, width: int) -> None:
        if min(height, width) < self.grid:
            raise ValueError(f"images of {height}x{width} are smaller than the {self.grid}x{self.grid} grid; "
                             f"use a smaller grid")

    def transform(self, images: Tensor, selected: Tensor, params: FlowAugParams,
                  masks: Tensor | None) -> tuple[Tensor, Tensor]:
        means = cell_means(images, self.grid)
        on_device = selected.to(images.device)
        own = means[on_device]
        target = means[params.donor[selected].to(images.device)]
        if self.mode == "mix":
            weight = params.mix_weight[selected].to(images.device)[:, None, None, None]
            target = torch.lerp(own, target, weight)
        shift = regional_colour_field(target - own, images.shape[-2:])
        return images[on_device] + shift, torch.ones(len(selected), dtype=torch.bool)
