"""FlowAug's random parameters, drawn apart from applying them (as kornia does).

:func:`draw_params` makes every draw a FlowAug call needs, in O(B) memory and O(B log B) time
(one sort by label or group), from one CPU ``torch.Generator``, so a seed gives the same draws
whatever device the batch is on. Only what the mode uses is drawn.

Donor policies (``donor=``):

==============  ============================================================================
any             any other image of the batch
same_class      another image of the same class (needs labels)
other_class     an image of another class (needs labels)
other_group     an image of another group, e.g. another background-colour group (needs groups)
balanced        a target group drawn uniformly from the groups present in the batch, then a
                donor of that group (needs groups): within every class the augmented images
                spread evenly over the groups, so class and group become independent
==============  ============================================================================

A sample drawn for augmentation whose policy allows no donor in the batch (the only image of its
class under ``same_class``; every image of the batch in its own group under ``other_group``; the
only image of its target group under ``balanced``) is returned unchanged and flagged in
``FlowAugParams.no_donor`` (FlowAug counts it in ``no_donor_count``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

MODES = ("swap", "prior", "mix")
DONORS = ("any", "same_class", "other_class", "other_group", "balanced")
NEEDS_LABELS = ("same_class", "other_class")
NEEDS_GROUPS = ("other_group", "balanced")


@dataclass(frozen=True)
class FlowAugParams:
    """Every draw of one FlowAug call on a batch of B images (CPU tensors).

    apply:       (B,) bool, the samples that get a new nuisance code.
    no_donor:    (B,) bool, samples drawn for augmentation that have no allowed donor (kept as they are).
    donor:       (B,) int64 batch index whose code each sample receives (swap, mix); the sample's own
                 index where ``apply`` is False. None in prior mode.
    mix_weight:  (B,) float32, the donor code's weight in mix mode; None otherwise.
    prior_noise: (B, d) float32 base noise of the nuisance prior (prior mode, before ``temperature``);
                 None otherwise.
    """

    apply: Tensor
    no_donor: Tensor
    donor: Tensor | None = None
    mix_weight: Tensor | None = None
    prior_noise: Tensor | None = None

    def check(self, batch_size: int, mode: str, nuisance_dim: int) -> None:
        """Raise ValueError unless these params fit a batch of ``batch_size`` in ``mode``."""
        needed = {"swap": ("donor",), "mix": ("donor", "mix_weight"), "prior": ("prior_noise",)}[mode]
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in ("apply", "no_donor") + needed:
                if not isinstance(value, Tensor) or value.shape[:1] != (batch_size,):
                    raise ValueError(f"params.{field.name} must be a tensor with {batch_size} rows for this "
                                     f"batch (mode={mode!r}); pass the params drawn for a batch of this size")
        if mode == "prior" and self.prior_noise.shape != (batch_size, nuisance_dim):
            raise ValueError(f"params.prior_noise must have shape ({batch_size}, {nuisance_dim}), "
                             f"got {tuple(self.prior_noise.shape)}")
        if self.donor is not None and batch_size and (int(self.donor.min()) < 0 or int(self.donor.max()) >= batch_size):
            raise ValueError(f"params.donor must index the batch [0, {batch_size})")


def _pick_within(keys: Tensor, targets: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """For each sample i, a uniform pick among the OTHER samples whose key equals ``targets[i]``.

    keys, targets: (B,) int64; u: (B,) uniform [0, 1). Returns (donor (B,) int64, found (B,) bool);
    where no other sample has the target key, donor is i and found False.
    """
    n = keys.shape[0]
    order = torch.argsort(keys, stable=True)
    sorted_keys = keys[order]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n)
    start = torch.searchsorted(sorted_keys, targets, side="left")
    end = torch.searchsorted(sorted_keys, targets, side="right")
    own = targets == keys
    count = end - start - own.long()
    found = count > 0
    k = (u * count.clamp_min(1)).long().clamp_max(count.clamp_min(1) - 1)
    position = start + k
    position = position + (own & (position >= rank)).long()
    donor = torch.where(found, order[position.clamp_max(n - 1)], torch.arange(n))
    return donor, found


def _pick_outside(keys: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """For each sample i, a uniform pick among the samples whose key differs from ``keys[i]``.

    Returns (donor (B,) int64, found (B,) bool) as :func:`_pick_within`.
    """
    n = keys.shape[0]
    order = torch.argsort(keys, stable=True)
    sorted_keys = keys[order]
    start = torch.searchsorted(sorted_keys, keys, side="left")
    end = torch.searchsorted(sorted_keys, keys, side="right")
    count = n - (end - start)
    found = count > 0
    k = (u * count.clamp_min(1)).long().clamp_max(count.clamp_min(1) - 1)
    position = torch.where(k < start, k, k + (end - start))
    donor = torch.where(found, order[position.clamp_max(n - 1)], torch.arange(n))
    return donor, found


def draw_donors(policy: str, labels: Tensor | None, groups: Tensor | None, batch_size: int,
                generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Donors (B,) int64 and whether each sample has one (B,) bool, for ``policy`` (see the module doc).

    labels / groups: (B,) int64 CPU tensors, given where the policy needs them.
    """
    u = torch.rand(batch_size, generator=generator)
    if policy == "any":
        return _pick_within(torch.zeros(batch_size, dtype=torch.long), torch.zeros(batch_size, dtype=torch.long), u)
    if policy == "same_class":
        return _pick_within(labels, labels, u)
    if policy == "other_class":
        return _pick_outside(labels, u)
    if policy == "other_group":
        return _pick_outside(groups, u)
    present = torch.unique(groups)
    target = present[(torch.rand(batch_size, generator=generator) * len(present)).long().clamp_max(len(present) - 1)]
    return _pick_within(groups, target, u)


def draw_params(batch_size: int, p: float, mode: str, donor: str, *, labels: Tensor | None = None,
                groups: Tensor | None = None, mix_range: tuple[float, float] = (0.5, 1.0),
                nuisance_dim: int | None = None, generator: torch.Generator | None = None) -> FlowAugParams:
    """Draw which samples to augment and their new codes' ingredients (see :class:`FlowAugParams`).

    Draw order (fixed, so a seed is reproducible): apply, then the donors (swap, mix), the mix
    weights (mix) or the prior noise (prior, ``nuisance_dim`` values per sample).
    """
    drawn = torch.rand(batch_size, generator=generator) < p
    if mode == "prior":
        noise = torch.randn(batch_size, nuisance_dim, generator=generator)
        return FlowAugParams(apply=drawn, no_donor=torch.zeros(batch_size, dtype=torch.bool), prior_noise=noise)
    donors, found = draw_donors(donor, labels, groups, batch_size, generator)
    apply = drawn & found
    donors = torch.where(apply, donors, torch.arange(batch_size))
    mix_weight = None
    if mode == "mix":
        low, high = mix_range
        mix_weight = low + (high - low) * torch.rand(batch_size, generator=generator)
    return FlowAugParams(apply=apply, no_donor=drawn & ~found, donor=donors, mix_weight=mix_weight)
