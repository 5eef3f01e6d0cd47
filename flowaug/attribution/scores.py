"""Scores of attribution maps: overlap with a known foreground and reliance on the background."""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from flowaug.masking import check_mask, mask_iou


def background_reliance(maps: Tensor, foreground: Tensor) -> Tensor:
    """Share of each map's mass outside the foreground (B,) in [0,1] (maps, foreground (B,1,H,W)).

    0: the map lies on the object only; the foreground's area share is what a uniform map scores.
    """
    check_mask(maps, foreground)
    mass = maps.flatten(1).sum(1).clamp_min(1e-12)
    return (maps * (1.0 - foreground)).flatten(1).sum(1) / mass


def centre_square(size: int, border: int, device: torch.device | str = "cpu") -> Tensor:
    """A (1,1,size,size) mask that is 1 inside the centre square ``border`` pixels from each edge: the
    stand-in foreground where no masks exist (on CIFAR, objects are mostly centred)."""
    if not 0 <= 2 * border < size:
        raise ValueError(f"border must leave a centre: 0 <= 2 * border < {size}, got {border}")
    square = torch.zeros(1, 1, size, size, device=device)
    square[..., border:size - border, border:size - border] = 1.0
    return square


def region_iou(maps: Tensor, foreground: Tensor, threshold: float = 0.5) -> Tensor:
    """IoU (B,) of the region ``maps > threshold`` with the foreground (1 where both are empty)."""
    check_mask(maps, foreground)
    return mask_iou((maps > threshold).to(maps.dtype), foreground)


def region_auc(maps: Tensor, foreground: Tensor) -> Tensor:
    """ROC AUC (B,) of the map's values as a per-pixel foreground detector (ties count one half);
    NaN for an image whose foreground is empty or covers every pixel."""
    check_mask(maps, foreground)
    scores = maps.flatten(1).detach().cpu().double().numpy()
    truth = foreground.flatten(1).cpu().numpy() > 0.5
    ranks = rankdata(scores, axis=1)
    positives, negatives = truth.sum(1), (~truth).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * truth).sum(1) - positives * (positives + 1) / 2) / (positives * negatives)
    return torch.from_numpy(np.where((positives > 0) & (negatives > 0), auc, np.nan)).float()
