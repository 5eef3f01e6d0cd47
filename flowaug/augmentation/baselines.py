"""The augmentations the recipes offer, by name, each an :class:`~flowaug.augmentation.Augmentation`
that draws per sample from its own generator.

Names (:data:`AUGMENTATIONS`), composable with commas (``"standard,flowaug"``):

========================  =====================================================================
none                      identity
standard                  :class:`CropFlip`: random crop (4-pixel reflect padding) + horizontal
                          flip, per sample
flowaug                   :class:`~flowaug.FlowAug` (swap mode, p=0.5): new nuisance code, same label
regionalswap              :class:`~flowaug.RegionalColourSwap` (swap, p=0.5, 4x4 grid): the donor's
                          regional mean colours, FlowAug's non-learned twin
colorjitter               kornia ``ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)``; kornia draws its
                          factors per sample already (``same_on_batch=False``)
randaugment               kornia ``RandAugment(n=2, m=10)``        } kornia's auto policies pick
autoaugment               kornia ``AutoAugment("cifar10")``        } ONE sub-policy per call; they
trivialaugment            kornia ``TrivialAugment()``              } are called once per image
augmix                    torchvision ``v2.AugMix()`` once per image on uint8 (it shares its op
                          chains across a batched call)
                          (these four: :class:`~flowaug.augmentation.per_image.PerImage`, on the CPU,
                          one seed per image, ``AugmentContext.workers`` processes)
mixup / cutmix            torchvision ``v2.MixUp(alpha=1)`` / ``v2.CutMix(alpha=1)``: one mixing
                          weight per batch (the standard formulation), partner = the next image in
                          the (shuffled) batch; labels become soft (B, C) targets that
                          ``F.cross_entropy`` takes as probabilities
========================  =====================================================================

kornia and torchvision ops draw from torch's global RNG, so :class:`GlobalRNGOp` runs them inside
``torch.random.fork_rng`` seeded from its own generator (the global RNG is left untouched).

Per-sample cost of the auto policies: calling kornia once per image instead of once per batch
costs about 15x the augmentation time (RandAugment, 256 images, one CPU thread: 0.42 s instead
of 0.03 s); the recipes report augmentation time separately, and ``--aug-workers N`` spreads the
loop over N processes.

:func:`build_augment` composes the named augmentations with :class:`~flowaug.augmentation.base.Compose`
in a fixed stage order whatever the order of the names (:data:`STAGES`): FlowAug and
RegionalColourSwap first (they need untouched images and integer labels), then geometric (standard), then colour and policies, then
label mixing (mixup/cutmix last, as they make labels soft).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.augmentation.auto import AutoAugment, RandAugment, TrivialAugment
from torch import Tensor, nn
from torchvision.transforms import v2

from flowaug.augmentation.base import Augmentation, Compose
from flowaug.augmentation.flowaug import FlowAug
from flowaug.augmentation.per_image import PerImage
from flowaug.augmentation.regional import RegionalColourSwap
from flowaug.pretrained import load_model


class CropFlip(Augmentation):
    """Random crop after ``padding`` pixels of padding (``padding_mode`` "reflect" or "constant" = zeros)
    and a horizontal flip with probability 0.5, drawn per sample. Images (B, C, H, W), any device."""

    def __init__(self, padding: int = 4, padding_mode: str = "reflect",
                 generator: torch.Generator | int | None = None) -> None:
        super().__init__(generator)
        if padding_mode not in ("reflect", "constant"):
            raise ValueError(f"padding_mode must be 'reflect' or 'constant', got {padding_mode!r}")
        self.padding, self.padding_mode = padding, padding_mode

    def extra_repr(self) -> str:
        return f"padding={self.padding}, padding_mode={self.padding_mode!r}"

    def augment(self, images: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        batch, channels, height, width = images.shape
        device, pad, generator = images.device, self.padding, self.call_generator()
        padded = F.pad(images, (pad, pad, pad, pad), mode=self.padding_mode)
        dy = torch.randint(0, 2 * pad + 1, (batch, 1), generator=generator).to(device)
        dx = torch.randint(0, 2 * pad + 1, (batch, 1), generator=generator).to(device)
        flip = (torch.rand(batch, 1, generator=generator) < 0.5).to(device)
        cols = torch.arange(width, device=device).expand(batch, width)
        cols = torch.where(flip, width - 1 - cols, cols) + dx
        rows = torch.arange(height, device=device).expand(batch, height) + dy
        return padded[torch.arange(batch, device=device)[:, None, None, None],
                      torch.arange(channels, device=device)[None, :, None, None],
                      rows[:, None, :, None], cols[:, None, None, :]], labels


class GlobalRNGOp(Augmentation):
    """A kornia or torchvision op that draws from torch's global RNG, run with that RNG seeded from
    this module's generator. ``mixes_labels``: the op takes and returns ``(images, labels)``
    (torchvision MixUp/CutMix: int labels (B,) in, soft (B, C) out)."""

    def __init__(self, op: nn.Module, mixes_labels: bool = False, generator: torch.Generator | int | None = None) -> None:
        super().__init__(generator)
        self.op, self.mixes_labels = op, mixes_labels

    def augment(self, images: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self.mixes_labels and (labels is None or labels.is_floating_point()):
            raise ValueError("mixup/cutmix need integer labels: call aug(x, y) and use at most one of them")
        seed = int(torch.randint(0, 2**62, (1,), generator=self.call_generator()))
        with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
            torch.manual_seed(seed)
            if self.mixes_labels:
                return self.op(images, labels)
            return self.op(images).clamp(0.0, 1.0).to(images.dtype), labels


@dataclass(frozen=True)
class AugmentContext:
    """What some builders need: the number of classes, FlowAug's flow (registry name, checkpoint path
    or module) and settings, the training device (where the flow is moved), the processes of the
    per-image policies and, for FlowAug's latent cache, the untouched training images."""

    num_classes: int
    flow: str | nn.Module = "cifar10"
    flowaug_p: float = 0.5
    flowaug_mode: str = "swap"
    device: str | torch.device = "cpu"
    workers: int = 0
    cache_images: Tensor | None = None


@dataclass(frozen=True)
class Baseline:
    """One named augmentation: its stage in a composition and how to build it."""

    stage: int
    build: Callable[[AugmentContext], Augmentation]


def _flowaug(ctx: AugmentContext) -> FlowAug:
    """FlowAug with the context's flow, on the training device."""
    flow = ctx.flow if isinstance(ctx.flow, nn.Module) else load_model(ctx.flow, kind="flow")
    aug = FlowAug(flow, p=ctx.flowaug_p, mode=ctx.flowaug_mode).to(ctx.device)
    if ctx.cache_images is not None and aug.needs_cache:
        aug.cache_latents(ctx.cache_images, dtype=torch.float32)
    return aug


class Identity(Augmentation):
    """No augmentation."""

    def augment(self, images: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return images, labels


STAGES = {"semantic": 0, "geometric": 1, "colour": 2, "mixing": 3}

AUGMENTATIONS: dict[str, Baseline] = {
    "none": Baseline(STAGES["geometric"], lambda ctx: Identity()),
    "flowaug": Baseline(STAGES["semantic"], _flowaug),
    "regionalswap": Baseline(STAGES["semantic"], lambda ctx: RegionalColourSwap(p=ctx.flowaug_p)),
    "standard": Baseline(STAGES["geometric"], lambda ctx: CropFlip()),
    "colorjitter": Baseline(STAGES["colour"], lambda ctx: GlobalRNGOp(K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8))),
    "randaugment": Baseline(STAGES["colour"], lambda ctx: PerImage(partial(RandAugment, n=2, m=10),
                                                                   workers=ctx.workers)),
    "autoaugment": Baseline(STAGES["colour"], lambda ctx: PerImage(partial(AutoAugment, "cifar10"),
                                                                   workers=ctx.workers)),
    "trivialaugment": Baseline(STAGES["colour"], lambda ctx: PerImage(TrivialAugment, workers=ctx.workers)),
    "augmix": Baseline(STAGES["colour"], lambda ctx: PerImage(v2.AugMix, uint8=True, workers=ctx.workers)),
    "mixup": Baseline(STAGES["mixing"], lambda ctx: GlobalRNGOp(v2.MixUp(alpha=1.0, num_classes=ctx.num_classes),
                                                                mixes_labels=True)),
    "cutmix": Baseline(STAGES["mixing"], lambda ctx: GlobalRNGOp(v2.CutMix(alpha=1.0, num_classes=ctx.num_classes),
                                                                 mixes_labels=True)),
}


def parse_augmentations(spec: str) -> list[str]:
    """Names in ``spec`` ("standard,flowaug") in application order (by :data:`STAGES`, stable)."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown or not names:
        raise ValueError(f"unknown augmentation(s) {unknown or [spec]}; choose from {', '.join(AUGMENTATIONS)} "
                         f"(comma-separated to compose)")
    if len(set(names)) != len(names):
        raise ValueError(f"augmentation {spec!r} names one augmentation twice")
    if "mixup" in names and "cutmix" in names:
        raise ValueError("mixup and cutmix both replace the labels; use one of them")
    return sorted(names, key=lambda name: AUGMENTATIONS[name].stage)


def build_augment(spec: str, context: AugmentContext) -> Compose:
    """The augmentations named by ``spec`` (see the module docstring) in stage order, as a
    :class:`~flowaug.augmentation.base.Compose` called with ``(x, y)``; seed it with
    :func:`flowaug.augmentation.reseed`."""
    return Compose([AUGMENTATIONS[name].build(context) for name in parse_augmentations(spec)])
