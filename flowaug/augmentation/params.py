"""Drawing FlowAug's random parameters for a batch, separately from applying them (as kornia does).

All randomness comes from one ``torch.Generator`` on the CPU, so a seeded
generator gives the same draws whatever device the batch is on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MODES = ("swap", "prior", "mix")
DONORS = ("any", "same_class", "other_class")


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample draws for a batch of B images (all CPU tensors).

    apply:      (B,) bool, which samples are augmented (each independently with probability p).
    donor:      (B,) int64, the batch index whose nuisance code a sample receives (swap, mix);
                the sample's own index where the batch holds no allowed donor.
    mix_weight: (B,) float32 in ``mix_range``: weight of the donor's code in mix mode.
    """

    apply: Tensor
    donor: Tensor
    mix_weight: Tensor


def draw_donors(batch_size: int, labels: Tensor | None, donor: str, generator: torch.Generator | None) -> Tensor:
    """Pick for each sample another sample of the batch, uniformly among the allowed ones.

    ``donor``: "any" (every other image), "same_class" or "other_class" (need ``labels``,
    (B,) int64 on the CPU). A sample with no allowed donor gets its own index.
    Returns (B,) int64 on the CPU.
    """
    if donor == "any":
        allowed = torch.ones(batch_size, batch_size, dtype=torch.bool)
    else:
        same_label = labels[:, None] == labels[None, :]
        allowed = same_label if donor == "same_class" else ~same_label
    allowed.fill_diagonal_(False)
    scores = torch.rand(batch_size, batch_size, generator=generator)
    scores = scores.masked_fill(~allowed, -1.0)
    return torch.where(allowed.any(dim=1), scores.argmax(dim=1), torch.arange(batch_size))


def draw_params(
    batch_size: int,
    p: float,
    labels: Tensor | None,
    donor: str,
    mix_range: tuple[float, float],
    generator: torch.Generator | None,
) -> AugmentParams:
    """Draw which samples to augment, their donors and their mix weights."""
    apply = torch.rand(batch_size, generator=generator) < p
    donors = draw_donors(batch_size, labels, donor, generator)
    low, high = mix_range
    mix_weight = low + (high - low) * torch.rand(batch_size, generator=generator)
    return AugmentParams(apply=apply, donor=donors, mix_weight=mix_weight)
