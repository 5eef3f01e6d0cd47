"""FIDO attribution maps (Chang et al., ICLR 2019) with the simplified concrete dropout of Korsch et al. (GCPR 2023).

For each image a map of per-pixel probabilities is optimised so that sampled masks explain the
classifier's decision for its label:

- SSR (smallest sufficient region): keep the pixels a mask selects, infill the rest; the class
  must stay (minimise cross-entropy) while the map stays small (L1) and smooth (total variation).
- SDR (smallest destroying region): infill the pixels a mask selects; the class must go
  (minimise log p(label)) with the same regularisers.
- "both": one map serves both: the region that suffices is the region whose removal destroys.

Every map is "the probability that a pixel belongs to the region" (kept for SSR, removed for SDR),
so high values mean "the classifier needs this pixel" in every objective.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowaug.attribution.samplers import SAMPLERS, sample_masks
from flowaug.masking.early import FILLS, mask_background
from flowaug.models.layers import CIFAR_MEAN

OBJECTIVES = ("ssr", "sdr", "both")
Infill = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class FidoResult:
    """What :func:`fido` found.

    maps:    float (B,1,H,W) in [0,1], the probability that each pixel is in the region.
    history: one dict per step: ``loss`` (mean total objective over the images), ``classifier``
             (its classification term), ``l1`` and ``tv`` (the unweighted regularisers).
    """

    maps: Tensor
    history: list[dict[str, float]] = field(default_factory=list)

    def regions(self, threshold: float = 0.5) -> Tensor:
        """Binary regions float (B,1,H,W): map above ``threshold``."""
        return (self.maps > threshold).to(self.maps.dtype)


def make_infill(infill: str | Infill, mean: tuple[float, ...] = CIFAR_MEAN,
                generator: torch.Generator | None = None) -> Infill:
    """``(x, keep) -> x_filled``: a callable is used as it is; "blur", "mean", "zero" or "noise" fill
    the removed pixels as :func:`flowaug.masking.mask_background` does (keep (N,1,H,W) in [0,1])."""
    if callable(infill):
        return infill
    if infill not in FILLS:
        raise ValueError(f"unknown infill {infill!r}; choose one of {', '.join(FILLS)} or pass a callable "
                         f"(x, keep) -> x_filled")
    return lambda x, keep: mask_background(x, keep, infill, mean, generator)


def total_variation(maps: Tensor) -> Tensor:
    """Mean absolute difference between neighbouring pixels, per map (B,)."""
    dy = (maps[..., 1:, :] - maps[..., :-1, :]).abs().flatten(1).mean(1)
    dx = (maps[..., :, 1:] - maps[..., :, :-1]).abs().flatten(1).mean(1)
    return dx + dy


def _check_inputs(model: nn.Module, images: Tensor, labels: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        found = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (B, C, H, W) in [0, 1], got {found}")
    if not isinstance(labels, Tensor) or labels.shape != (images.shape[0],) or labels.is_floating_point():
        found = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer tensor with one label per image ({images.shape[0]},), "
                         f"got {found}")
    with torch.no_grad():
        logits = model(images[:1])
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
        found = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model must map images (B, C, H, W) to logits (B, classes), returned {found} for one image")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}) for a model with {logits.shape[1]} classes")


def fido(model: nn.Module, images: Tensor, labels: Tensor, objective: str = "ssr", sampler: str = "simplified",
         generator: torch.Generator | None = None, *, steps: int = 100, masks_per_step: int = 4,
         lr: float = 0.1, l1: float = 3.0, tv: float = 3.0, temperature: float = 0.5,
         infill: str | Infill = "mean", progress: bool = True) -> FidoResult:
    """FIDO maps of ``model`` for ``images`` (B,C,H,W) in [0,1] and their ``labels`` (B,), batched.

    Args:
        model: a classifier returning logits (B, classes); kept in eval mode, weights untouched.
        objective: "ssr", "sdr" or "both" (see the module docstring).
        sampler: "simplified" (Korsch et al.) or "concrete" (the original; :mod:`.samplers`).
        generator: every random draw (mask noise, noise infill) comes from it; same generator
            state, same maps.
        steps: Adam steps on the per-pixel logits (initialised at 0, p = 0.5).
        masks_per_step: masks sampled per image and step (the classifier sees B x this many).
        l1: weight of the map's mean.
        tv: weight of the map's total variation.
        temperature: of the relaxed Bernoulli (smaller = closer to binary masks).
        infill: "mean" (default: removes colour and detail, so a colour shortcut shows in the
            map), "blur" (keeps colour, removes detail: FIDO's choice for natural images), "zero",
            "noise" or a callable ``(x, keep) -> x_filled`` (keep (N,1,H,W) in [0,1]).

    Runs on the images' device; a progress bar counts the steps.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    for name, value in (("steps", steps), ("masks_per_step", masks_per_step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    fill = make_infill(infill, generator=generator)
    was_training = model.training
    model.eval()   # before any forward pass: batch-norm statistics stay as they are
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    steps_seen = []   # per step: (loss, classifier, l1, tv) means, kept on the device until the end
    try:
        _check_inputs(model, images, labels)
        b, _, h, w = images.shape
        theta = torch.zeros(b, 1, h, w, device=images.device, requires_grad=True)
        optimizer = torch.optim.Adam([theta], lr=lr)
        repeated_x = images.repeat(masks_per_step, 1, 1, 1)
        repeated_y = labels.repeat(masks_per_step)
        for _ in tqdm(range(steps), desc=f"FIDO {objective} ({sampler})", disable=not progress, leave=False):
            z = sample_masks(theta, sampler, masks_per_step, temperature, generator).flatten(0, 1)
            term = objective_term(model, repeated_x, repeated_y, z, objective, fill).view(masks_per_step, b).mean(0)
            maps = torch.sigmoid(theta)
            size, smooth = maps.flatten(1).mean(1), total_variation(maps)
            loss = term + l1 * size + tv * smooth
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            steps_seen.append(torch.stack([loss.mean(), term.mean(), size.mean(), smooth.mean()]).detach())
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    history = [dict(zip(("loss", "classifier", "l1", "tv"), values)) for values in torch.stack(steps_seen).tolist()]
    return FidoResult(torch.sigmoid(theta).detach(), history)


def objective_term(model: nn.Module, x: Tensor, y: Tensor, region: Tensor, objective: str, fill: Infill) -> Tensor:
    """The classification term per sample (N,) for soft regions (N,1,H,W) of images x (N,C,H,W)."""
    terms = []
    if objective in ("ssr", "both"):
        terms.append(F.cross_entropy(model(fill(x, region)), y, reduction="none"))
    if objective in ("sdr", "both"):
        terms.append(F.log_softmax(model(fill(x, 1.0 - region)), 1).gather(1, y[:, None]).squeeze(1))
    return sum(terms)
