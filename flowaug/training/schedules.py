"""Optimizers and learning-rate schedules, as functions of the global step (so a resume is exact)."""
from __future__ import annotations

import math
from typing import Callable

import torch

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, lr, weight_decay: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True,
                                                            weight_decay=weight_decay),
    "adam": lambda params, lr, weight_decay: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay),
}


def one_cycle(step: int, total_steps: int, warmup_fraction: float) -> float:
    """Learning-rate multiplier: linear warm-up from 0.1 to 1 over ``warmup_fraction`` of the steps,
    then linear decay to 0 at ``total_steps``."""
    warmup = max(1, int(total_steps * warmup_fraction))
    if step < warmup:
        return 0.1 + 0.9 * step / warmup
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def warmup_cosine(step: int, total_steps: int, peak: float, warmup_steps: int) -> float:
    """Learning rate at ``step``: linear warm-up to ``peak`` over ``warmup_steps``, then cosine to 0 at ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear_ramp(step: int, ramp_steps: int, final: float) -> float:
    """A weight growing linearly from 0 to ``final`` over ``ramp_steps`` (``final`` from the start when 0)."""
    return final * (min(1.0, step / ramp_steps) if ramp_steps else 1.0)
