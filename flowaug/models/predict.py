"""Batched prediction: the one way flowaug turns a classifier and a set of images into labels."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from flowaug.data.base import to_float_images


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (else buffer); CPU for a module with neither."""
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray | torch.Tensor, *, masks: torch.Tensor | None = None,
            batch_size: int = 500, device: torch.device | str | None = None, progress: bool = False,
            desc: str = "predict") -> torch.Tensor:
    """Predicted labels, int64 (N,) on the CPU, of uint8 (N, H, W, 3) or float (N, 3, H, W) in [0, 1] images.

    Batches are moved to ``device`` (default: the model's) and converted there, so no float copy of
    the whole set is made; ``masks`` (N, 1, H, W) go to a masking model as its second argument. The
    model runs in eval mode under ``torch.no_grad`` and is left in eval mode on ``device``. Raises
    ValueError when the model does not return logits (B, num_classes).
    """
    device = torch.device(device) if device is not None else module_device(model)
    model.eval().to(device)
    images = torch.as_tensor(images)
    predictions = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False):
        rows = slice(start, start + batch_size)
        side = () if masks is None else (masks[rows].to(device),)
        logits = model(to_float_images(images[rows].to(device)), *side)
        if logits.dim() != 2:
            raise ValueError(f"the model must return logits (B, num_classes), got shape {tuple(logits.shape)}")
        predictions.append(logits.argmax(1).cpu())
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)
