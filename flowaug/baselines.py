"""Augmentation baselines for the training recipes, by name, all drawing per sample.

Every builder returns a :class:`flowaug.training.BatchAugment`: float images (B, 3, H, W) in
[0, 1] on any device, labels (int (B,) or soft (B, C)) and a ``torch.Generator`` on the images'
device in; images of the same shape, dtype and device and labels out. All randomness comes
from that generator, so a run is reproducible and resumes exactly:

- kornia and torchvision ops draw from torch's global RNG, so they run inside
  ``torch.random.fork_rng`` re-seeded from the generator (the global RNG is left untouched);
- :class:`flowaug.FlowAug` keeps its own CPU generator, re-seeded from the generator per call.

Names (:data:`AUGMENTATIONS`), composable with commas (``"standard,flowaug"``):

========================  =====================================================================
none                      identity
standard                  random crop (4-pixel reflect padding) + horizontal flip, per sample
flowaug                   :class:`flowaug.FlowAug` (swap mode, p=0.5): new nuisance code, same label
colorjitter               kornia ``ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)``; kornia draws its
                          factors per sample already (``same_on_batch=False``)
randaugment               kornia ``RandAugment(n=2, m=10)``        } kornia's auto policies pick
autoaugment               kornia ``AutoAugment("cifar10")``        } ONE sub-policy per call; they
trivialaugment            kornia ``TrivialAugment()``              } are called once per image
augmix                    torchvision ``v2.AugMix()`` once per image on uint8 (it shares its op
                          chains across a batched call)
                          (these four: :class:`flowaug.per_image.PerImage`, on the CPU, one seed
                          per image, ``AugmentContext.workers`` processes)
mixup / cutmix            torchvision ``v2.MixUp(alpha=1)`` / ``v2.CutMix(alpha=1)``: one mixing
                          weight per batch (the standard formulation), partner = the next image in
                          the (shuffled) batch; labels become soft (B, C) targets that
                          ``F.cross_entropy`` takes as probabilities
========================  =====================================================================

Per-sample cost of the auto policies: calling kornia once per image instead of once per batch
costs about 15x the augmentation time (RandAugment, 256 images, one CPU thread: 0.42 s instead
of 0.03 s); the recipes report augmentation time separately so the cost is visible, and
``--aug-workers N`` spreads the loop over N processes.

A composition is applied in a fixed stage order whatever the order of the names (:data:`STAGES`):
FlowAug first (it needs untouched images and integer labels), then geometric (standard), then
colour and policies, then label mixing (mixup/cutmix last, as they make labels soft).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, ClassVar

import kornia.augmentation as K
import torch
from kornia.augmentation.auto import AutoAugment, RandAugment, TrivialAugment
from torch import Tensor, nn
from torchvision.transforms import v2

from flowaug.augmentation import FlowAug
from flowaug.per_image import PerImage
from flowaug.pretrained import load_model
from flowaug.training import BatchAugment, CropFlip


def draw_seed(generator: torch.Generator) -> int:
    """A 62-bit seed drawn from ``generator`` (on its device)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


def _seeded(images: Tensor, generator: torch.Generator, fn: Callable[[], Tensor]) -> Tensor:
    """Run ``fn`` with torch's global RNG (CPU, and the images' CUDA device) seeded from ``generator``."""
    devices = [images.device] if images.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        seed = draw_seed(generator)
        torch.manual_seed(seed)
        return fn()


@dataclass
class Identity:
    """No augmentation."""

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return images, labels


@dataclass
class Geometric:
    """:class:`flowaug.training.CropFlip` (per-sample crop + flip) with labels passed through."""

    crop_flip: CropFlip

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self.crop_flip(images, labels, generator), labels


@dataclass
class Kornia:
    """A kornia augmentation that draws its parameters per sample in one batched call."""

    op: nn.Module

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return _seeded(images, generator, lambda: self.op(images)).clamp(0.0, 1.0).to(images.dtype), labels


@dataclass
class LabelMixing:
    """torchvision ``v2.MixUp`` / ``v2.CutMix``: int labels (B,) in, soft labels (B, C) float out."""

    op: nn.Module

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if labels.is_floating_point():
            raise ValueError("mixup/cutmix need integer labels: use at most one of them per composition")
        return _seeded(images, generator, lambda: self.op(images, labels))


@dataclass
class FlowAugment:
    """:class:`flowaug.FlowAug` with its CPU generator re-seeded from the training generator per call;
    with a latent cache (``aug.cache``) it reads the batch's latents by ``index`` instead of encoding."""

    aug: FlowAug
    takes_index: ClassVar[bool] = True

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator,
                 index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if labels.is_floating_point():
            raise ValueError("flowaug needs integer labels; it runs before mixup/cutmix")
        self.aug.generator.manual_seed(draw_seed(generator))
        return self.aug(images, labels, index=index if self.aug.cache is not None else None)


@dataclass(frozen=True)
class AugmentContext:
    """What some builders need: the number of classes, FlowAug's flow (registry name, checkpoint path
    or module) and settings, and the training device (where the flow is moved)."""

    num_classes: int
    flow: str | nn.Module = "cifar10"
    flowaug_p: float = 0.5
    flowaug_mode: str = "swap"
    device: str | torch.device = "cpu"
    workers: int = 0   # processes for the per-image policies (flowaug.per_image.PerImage)
    cache_images: Tensor | None = None  # the untouched training set: FlowAug encodes it once (latent cache)


@dataclass(frozen=True)
class Baseline:
    """One named augmentation: its stage in a composition and how to build it."""

    stage: int
    build: Callable[[AugmentContext], BatchAugment]


def _flowaug(ctx: AugmentContext) -> FlowAugment:
    """FlowAug with the context's flow, on the training device."""
    flow = ctx.flow if isinstance(ctx.flow, nn.Module) else load_model(ctx.flow, kind="flow")
    aug = FlowAug(flow, p=ctx.flowaug_p, mode=ctx.flowaug_mode, generator=torch.Generator()).to(ctx.device)
    if ctx.cache_images is not None:
        aug.cache_latents(ctx.cache_images, dtype=torch.float32)
    return FlowAugment(aug)


STAGES = {"semantic": 0, "geometric": 1, "colour": 2, "mixing": 3}

AUGMENTATIONS: dict[str, Baseline] = {
    "none": Baseline(STAGES["geometric"], lambda ctx: Identity()),
    "flowaug": Baseline(STAGES["semantic"], lambda ctx: _flowaug(ctx)),
    "standard": Baseline(STAGES["geometric"], lambda ctx: Geometric(CropFlip())),
    "colorjitter": Baseline(STAGES["colour"], lambda ctx: Kornia(K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8))),
    "randaugment": Baseline(STAGES["colour"], lambda ctx: PerImage(partial(RandAugment, n=2, m=10),
                                                                   workers=ctx.workers)),
    "autoaugment": Baseline(STAGES["colour"], lambda ctx: PerImage(partial(AutoAugment, "cifar10"),
                                                                   workers=ctx.workers)),
    "trivialaugment": Baseline(STAGES["colour"], lambda ctx: PerImage(TrivialAugment, workers=ctx.workers)),
    "augmix": Baseline(STAGES["colour"], lambda ctx: PerImage(v2.AugMix, uint8=True, workers=ctx.workers)),
    "mixup": Baseline(STAGES["mixing"], lambda ctx: LabelMixing(v2.MixUp(alpha=1.0, num_classes=ctx.num_classes))),
    "cutmix": Baseline(STAGES["mixing"], lambda ctx: LabelMixing(v2.CutMix(alpha=1.0, num_classes=ctx.num_classes))),
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


@dataclass
class Compose:
    """Apply the named augmentations in order; ``names`` is kept for the run's config and repr.
    ``index`` (the batch's rows in the training set) goes to the steps that take it."""

    names: list[str]
    steps: list[BatchAugment]
    takes_index: ClassVar[bool] = True

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator,
                 index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        for step in self.steps:
            extra = {"index": index} if getattr(step, "takes_index", False) else {}
            images, labels = step(images, labels, generator, **extra)
        return images, labels

    def __repr__(self) -> str:
        return f"Compose({' -> '.join(self.names)})"


def build_augment(spec: str, context: AugmentContext) -> Compose:
    """The batch augmentation named by ``spec`` (see the module docstring), ready to call."""
    names = parse_augmentations(spec)
    return Compose(names, [AUGMENTATIONS[name].build(context) for name in names])
