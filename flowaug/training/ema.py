"""An exponential moving average of a model's weights (the weights a trainer exports)."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, updates: int, decay: float) -> None:
    """Move ``ema``'s parameters toward ``model``'s after its ``updates``-th optimizer update, with the
    decay warmed up as ``min(decay, (1 + n) / (10 + n))`` so early averages are not dominated by the
    initialisation; buffers (e.g. ActNorm's) are copied."""
    rate = min(decay, (1 + updates) / (10 + updates))
    for averaged, current in zip(ema.parameters(), model.parameters()):
        averaged.lerp_(current, 1.0 - rate)
    for averaged, current in zip(ema.buffers(), model.buffers()):
        averaged.copy_(current)
