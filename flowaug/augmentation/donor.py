"""The base of augmentations that give each drawn image something of a donor image of the batch.

:class:`DonorAugmentation` owns everything FlowAug and :class:`~flowaug.RegionalColourSwap` share:
the input checks (float in [0, 1] or uint8, (B,3,H,W) or (3,H,W), any device), the draws
(:func:`~flowaug.augmentation.params.draw_params`: ``p``, the donor policies, mix weights, prior
noise), ``forward_parameters`` / ``params=`` replay, background-only application with ``masks=``,
the counters and ``last_params`` / ``last_augmented``. A subclass implements
:meth:`DonorAugmentation.transform`: the new images of the drawn samples.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from flowaug.augmentation.base import Augmentation
from flowaug.augmentation.params import DONORS, NEEDS_GROUPS, NEEDS_LABELS, FlowAugParams, draw_params
from flowaug.validation import check_finite_unit_range


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def check_number(name: str, value: object, low: float, high: float = math.inf) -> float:
    """``value`` as a float; ValueError unless it is a finite int or float in [low, high]."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not low <= value <= high):
        bounds = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
        raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")
    return float(value)


class DonorAugmentation(Augmentation):
    """Per-sample augmentation with a donor image of the batch (or, where a subclass allows, a prior).

    Args:
        p: probability that each sample is augmented (independently per sample).
        mode: one of the subclass's :attr:`MODES` ("swap": take the donor's; "mix": interpolate own
            and donor's with a donor weight drawn uniformly from ``mix_range``).
        mix_range: (low, high) in [0, 1], the donor weight range of "mix" mode.
        donor: "any", "same_class", "other_class" (need labels ``y``), "other_group" or "balanced"
            (need ``groups``); see :mod:`flowaug.augmentation.params`. A sample with no allowed donor
            in the batch is returned unchanged (``no_donor_count``).
        generator: int seed, CPU ``torch.Generator`` or None (seeded from torch's RNG).

    Call ``aug(x)``, ``aug(x, y)``, ``aug(x, y, groups=g)`` or with ``masks=m``: x is (B,3,H,W) or
    (3,H,W), float in [0,1] (dtype kept) or uint8 (kept), on any device; the output has x's shape,
    dtype and device; ``y`` ((B,) labels) is returned unchanged. ``masks`` (B,1,H,W) (or (1,H,W)),
    float in [0, 1] on x's device, 1 = object: the output keeps the input where m = 1, takes the
    augmentation where m = 0 and blends in between (background-only augmentation). ``params=``
    applies draws made earlier by :meth:`forward_parameters` (or ``aug.last_params``). Images that
    are not augmented come back bit-exactly; an empty batch comes back unchanged. After each call
    ``last_params`` holds its draws and ``last_augmented`` ((B,) bool, CPU) the images that came
    back changed. Counters: ``augmented_count``, ``no_donor_count`` and a subclass's own.
    """

    MODES: tuple[str, ...] = ("swap", "mix")
    COUNTERS: tuple[str, ...] = ("augmented_count", "no_donor_count")
    def train(self, mode: bool = True) -> DonorAugmentation:
        """Switching modes never puts a subclass's ``flow`` (FlowAug's, BackgroundTransplant's fill)
        into training mode: it stays frozen."""
        super().train(mode)
        flow = getattr(self, "flow", None)
        if flow is not None:
            flow.eval()
        return self

    def __init__(self, p: float = 0.5, mode: str = "swap", mix_range: tuple[float, float] = (0.5, 1.0),
                 donor: str = "any", generator: torch.Generator | int | None = None) -> None:
        super().__init__(generator)
        check_choice("mode", mode, self.MODES)
        check_choice("donor", donor, DONORS)
        self.p = check_number("p", p, 0.0, 1.0)
        if not isinstance(mix_range, (tuple, list)) or len(mix_range) != 2:
            raise ValueError(f"mix_range must be a pair (low, high), got {mix_range!r}")
        low, high = (check_number("mix_range", value, 0.0, 1.0) for value in mix_range)
        if low > high:
            raise ValueError(f"mix_range must satisfy low <= high, got {mix_range}")
        self.mode, self.mix_range, self.donor = mode, (low, high), donor
        self.last_params: FlowAugParams | None = None
        self.last_augmented: Tensor | None = None
        for name in self.COUNTERS:
            setattr(self, name, 0)

    @property
    def prior_dim(self) -> int | None:
        """Values of prior noise drawn per sample in "prior" mode (None: no prior mode)."""
        return None

    def transform(self, images: Tensor, selected: Tensor, params: FlowAugParams,
                  masks: Tensor | None) -> tuple[Tensor, Tensor]:
        """New images (S,3,H,W) float32 on ``images``' device for the S batch indices ``selected``
        ((S,) int64, CPU) of ``images`` (B,3,H,W) float32 in [0, 1], unclamped; and which of them to
        keep ((S,) bool, CPU; the others fall back to the input). ``masks``: the call's (B,1,H,W)
        masks or None (the base keeps the object afterwards; a subclass may read the donors')."""
        raise NotImplementedError

    def check_size(self, height: int, width: int) -> None:
        """Raise ValueError if images of this size cannot be augmented."""

    def forward(self, x: Tensor, y: Tensor | None = None, groups: Tensor | None = None,
                masks: Tensor | None = None, params: FlowAugParams | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """Augment ``x``; with ``y`` return ``(x_aug, y)``. ``groups`` ((B,) int) feed the group donor
        policies; ``masks`` keep the object; ``params`` replays earlier draws."""
        unbatched = isinstance(x, Tensor) and x.ndim == 3
        batch = self._validated_batch(x)
        mask_batch = self._validated_masks(masks, batch, unbatched)
        if batch.shape[0] == 0:
            return x.clone() if y is None else (x.clone(), y)
        if params is None:
            params = self._draw(batch.shape[0], y, groups, unbatched)
        else:
            if not isinstance(params, FlowAugParams):
                raise TypeError(f"params must be FlowAugParams (from forward_parameters), got {type(params).__name__}")
            params.check(batch.shape[0], self.mode, self.prior_dim)
        out = self._augment(batch, params, mask_batch)
        self.last_params = params
        out = out[0] if unbatched else out
        return out if y is None else (out, y)

    def forward_parameters(self, x: Tensor, y: Tensor | None = None, groups: Tensor | None = None) -> FlowAugParams:
        """Draw everything a call on ``x`` needs (which samples, donors, mix weights or prior noise)
        from this module's generator, without applying it; ``aug(x, y, params=...)`` applies them."""
        batch = self._validated_batch(x)
        return self._draw(batch.shape[0], y, groups, isinstance(x, Tensor) and x.ndim == 3)

    def _draw(self, batch_size: int, y: Tensor | None, groups: Tensor | None, unbatched: bool) -> FlowAugParams:
        labels = self._validated_ids(y, "labels", batch_size, unbatched, needed=self.donor in NEEDS_LABELS)
        group_ids = self._validated_ids(groups, "groups", batch_size, unbatched, needed=self.donor in NEEDS_GROUPS)
        if self.mode != "prior" and batch_size < 2:
            hint = ("use mode='prior' for single images (e.g. per sample in DataLoader workers) or "
                    if "prior" in self.MODES else "")
            raise ValueError(f"mode={self.mode!r} takes from another image of the batch, but the batch holds a "
                             f"single image; {hint}apply {type(self).__name__} to batches")
        return draw_params(batch_size, self.p, self.mode, self.donor, labels=labels, groups=group_ids,
                           mix_range=self.mix_range, nuisance_dim=self.prior_dim, generator=self.call_generator())

    def _validated_batch(self, x: Tensor) -> Tensor:
        name = type(self).__name__
        if not isinstance(x, Tensor):
            hint = " (convert PIL images with torchvision.transforms.v2.functional.to_image)" \
                if type(x).__module__.startswith("PIL") else ""
            raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}{hint}")
        if x.ndim not in (3, 4):
            raise ValueError(f"{name} expects images of shape (B,3,H,W) or (3,H,W), got {tuple(x.shape)}")
        batch = x if x.ndim == 4 else x.unsqueeze(0)
        if batch.shape[1] != 3:
            hint = "; the channels look last: pass x.permute(0, 3, 1, 2)" if batch.shape[-1] == 3 else ""
            raise ValueError(f"{name} expects 3 (RGB) channels in dim -3, got {batch.shape[1]} "
                             f"(shape {tuple(x.shape)}){hint}")
        self.check_size(*batch.shape[-2:])
        if batch.dtype == torch.uint8 or batch.shape[0] == 0:
            return batch
        if not batch.is_floating_point():
            raise TypeError(f"{name} expects float images in [0, 1] or uint8 images, got dtype {batch.dtype}")
        try:
            check_finite_unit_range(batch, f"{name} input")
        except ValueError as error:
            finite = bool(torch.isfinite(batch).all())
            if not finite:
                hint = "look for a division by zero or a broken file upstream"
            elif float(batch.amin()) >= 0 and float(batch.amax()) <= 255:
                hint = "the values look like 0..255: divide by 255"
            else:
                hint = f"apply {name} before normalisation"
            raise ValueError(f"{error}; {hint}") from None
        return batch

    @staticmethod
    def _validated_masks(masks: Tensor | None, batch: Tensor, unbatched: bool) -> Tensor | None:
        """Masks (B,1,H,W) float32 on the batch's device, or None; one clear error for anything else."""
        if masks is None:
            return None
        size, (height, width) = batch.shape[0], batch.shape[-2:]
        expected = (1, height, width) if unbatched else (size, 1, height, width)
        if not isinstance(masks, Tensor):
            raise TypeError(f"masks must be a torch.Tensor of shape {expected}, got {type(masks).__name__}")
        if tuple(masks.shape) != expected:
            raise ValueError(f"masks must have shape {expected} (1 = object) for images {tuple(batch.shape)}, "
                             f"got {tuple(masks.shape)}")
        if masks.device != batch.device:
            raise ValueError(f"masks are on {masks.device} but the images on {batch.device}; move them together")
        if not (masks.is_floating_point() or masks.dtype == torch.bool):
            raise TypeError(f"masks must be float in [0, 1] or bool, got dtype {masks.dtype}")
        masks = masks.reshape(size, 1, height, width).float()
        if size:
            check_finite_unit_range(masks, "masks", " (1 = object, 0 = background)")
        return masks

    @staticmethod
    def _validated_ids(ids: Tensor | None, name: str, batch_size: int, unbatched: bool, needed: bool) -> Tensor | None:
        if ids is None:
            if needed:
                raise ValueError(f"this donor policy needs {name}: call aug(x, y{', groups=g' if name == 'groups' else ''})")
            return None
        ids = torch.as_tensor(ids)
        expected = () if unbatched else (batch_size,)
        if tuple(ids.shape) != expected and not (unbatched and tuple(ids.shape) == (1,)):
            raise ValueError(f"{name} must have shape {expected} for images of batch size {batch_size}, got {tuple(ids.shape)}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got dtype {ids.dtype}")
        return ids.reshape(batch_size).to("cpu", torch.int64)

    def _augment(self, batch: Tensor, params: FlowAugParams, masks: Tensor | None) -> Tensor:
        """Augment the drawn samples of ``batch`` (B,3,H,W); the others are returned bit-exactly."""
        self.no_donor_count += int(params.no_donor.sum())
        selected = params.apply.nonzero().squeeze(1)
        accepted = torch.zeros(batch.shape[0], dtype=torch.bool)
        self.last_augmented = accepted
        if selected.numel() == 0:
            return batch.clone()
        images = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        with torch.no_grad():
            new, keep = self.transform(images, selected, params, masks)
        on_device = selected.to(batch.device)
        inputs = images[on_device]
        new = torch.where(keep.to(batch.device)[:, None, None, None], new.clamp(0.0, 1.0), inputs)
        if masks is not None:
            new = torch.lerp(new, inputs, masks[on_device])
        self.augmented_count += int(keep.sum())
        accepted[selected] = keep
        if batch.dtype == torch.uint8:
            new = (new * 255.0).round()
        out = batch.clone()
        out[on_device] = new.to(batch.dtype)
        return out
