"""Checks of the tensors a trainer holds: image splits and labels."""
from __future__ import annotations

import numpy as np
import torch



def as_image_tensor(images: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Check an image split and put it on ``device`` unchanged in dtype.

    Accepts uint8 (N, H, W, 3) (the CIFAR array layout) or float (N, 3, H, W) in [0, 1].
    """
    tensor = torch.as_tensor(images)
    if tensor.dtype == torch.uint8:
        if tensor.ndim != 4 or tensor.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (N, H, W, 3), got shape {tuple(tensor.shape)}")
    elif tensor.is_floating_point():
        if tensor.ndim != 4 or tensor.shape[1] != 3:
            raise ValueError(f"float images must be (N, 3, H, W), got shape {tuple(tensor.shape)}")
        if not torch.isfinite(tensor).all() or tensor.min() < 0 or tensor.max() > 1:
            raise ValueError("float images must be finite and in [0, 1]")
    else:
        raise ValueError(f"images must be uint8 (N, H, W, 3) or float (N, 3, H, W), got dtype {tensor.dtype}")
    return tensor.to(device)


def as_label_tensor(labels: np.ndarray | torch.Tensor, count: int, device: torch.device | str) -> torch.Tensor:
    """Check integer labels (count,) and return them as int64 on ``device``."""
    tensor = torch.as_tensor(labels)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {tensor.dtype}")
    if tensor.shape != (count,):
        raise ValueError(f"labels must have shape ({count},) to match the images, got {tuple(tensor.shape)}")
    if count and tensor.min() < 0:
        raise ValueError("labels must be non-negative")
    return tensor.long().to(device)
