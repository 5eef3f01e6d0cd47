"""Late masking: only foreground positions of the backbone's feature maps reach the global pooling."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowaug.masking.early import check_mask

POOLS = ("max", "avg")


class LateMasking(nn.Module):
    """``head(pool(features(x) restricted to the mask))``.

    Args:
        features: backbone mapping images (B,3,H,W) to feature maps (B,C,h,w) (no global pooling).
        head: maps pooled features (B,C) to logits.
        pool: "max" (masked global max: background positions are excluded) or "avg" (mask-weighted
            mean). The mask is downsampled to (h, w) by area averaging; a position counts as
            foreground by its share of foreground pixels (weight for "avg", > 0 for "max").
        logit_scale: divide the logits by this (the small CNN's airbench convention).

    :meth:`from_classifier` wraps a ``flowaug.models`` classifier, sharing its weights.
    """

    def __init__(self, features: nn.Module, head: nn.Module, pool: str = "max", logit_scale: float = 1.0) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
        self.features, self.head, self.pool, self.logit_scale = features, head, pool, logit_scale

    @classmethod
    def from_classifier(cls, model: nn.Module) -> "LateMasking":
        """Late masking around a :mod:`flowaug.models` classifier ("small", "resnet18", ...): its
        ``features`` up to the global pooling, the same kind of pooling (max or average) restricted
        to the mask, then its ``head``."""
        layers = list(getattr(model, "features", []))
        pools = {nn.AdaptiveMaxPool2d: "max", nn.AdaptiveAvgPool2d: "avg"}
        if len(layers) < 3 or type(layers[-2]) not in pools or not isinstance(layers[-1], nn.Flatten):
            raise ValueError("from_classifier expects a flowaug.models classifier (features ending in a global "
                             "pooling and a flatten, then a head)")
        return cls(nn.Sequential(*layers[:-2]), model.head, pools[type(layers[-2])],
                   getattr(model, "logit_scale", 1.0))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        check_mask(x, mask)
        maps = self.features(x)
        weight = F.adaptive_avg_pool2d(mask.to(maps.dtype), maps.shape[-2:])
        if self.pool == "max":
            keep = weight > 0
            keep = keep | ~keep.flatten(1).any(1)[:, None, None, None]  # an empty mask keeps everything
            pooled = maps.masked_fill(~keep, torch.finfo(maps.dtype).min).amax(dim=(2, 3))
        else:
            pooled = (maps * weight).sum((2, 3)) / weight.sum((2, 3)).clamp_min(1e-6)
        return self.head(pooled) / self.logit_scale
