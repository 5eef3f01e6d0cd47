"""Checks of float image batches shared by the flow, FlowAug and the quality metrics."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def check_finite_unit_range(x: Tensor, name: str, hint: str = "") -> None:
    """Raise ValueError unless every value of float ``x`` is finite and in [0, 1] (one pass over x, one
    device sync: a NaN makes both extremes NaN, an Inf makes one infinite); ``hint`` is appended to the
    range error."""
    low, high = torch.stack(torch.aminmax(x)).tolist()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains NaN or Inf values")
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]{hint}")


def check_float_images(x: Tensor, name: str, size: int | None = None, finite: bool = True) -> None:
    """Raise ValueError unless ``x`` is a float tensor (B, 3, H, W), B >= 1, with H = W = ``size`` when
    given, and (when ``finite``) finite values in [0, 1]."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be float in [0, 1], got dtype {x.dtype} (convert uint8 with x.float() / 255)")
    if size is not None and (x.dim() != 4 or tuple(x.shape[1:]) != (3, size, size)):
        raise ValueError(f"{name} must have shape (B, 3, {size}, {size}) for this flow "
                         f"(config.image_size={size}), got {tuple(x.shape)}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: empty batch")
    if finite:
        check_finite_unit_range(x, name)
