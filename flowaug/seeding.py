"""Generators derived from a run seed and a position, so resumed runs draw exactly the same numbers."""
from __future__ import annotations

import numpy as np
import torch


def seeded_generator(device: torch.device | str, *words: int) -> torch.Generator:
    """A generator on ``device`` seeded from the non-negative ints ``words`` (via numpy's SeedSequence),
    e.g. ``(seed, epoch)`` for a data order or ``(seed, step, rank)`` for per-step noise."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(np.random.SeedSequence(list(words)).generate_state(1, np.uint64)[0]))
    return generator
