"""``FlowAug``: keep an image's semantic latent, give it a new nuisance code, decode.

Same object, new colour cast / background tone, label unchanged. This is the only place in
flowaug that decodes new nuisance codes: benchmarks, grids and recipes all call it.

Example::

    import torch
    from flowaug import FlowAug

    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 2  # images (B,3,32,32) in [0,1], labels (B,)
    aug = FlowAug.from_pretrained("cifar10", p=1.0, mode="swap", donor="other_class", generator=0)
    x_aug, y = aug(x, y)                                   # same shape, dtype and device; labels unchanged
    params = aug.forward_parameters(x, y)                  # draw without applying (kornia style)
    again, _ = aug(x, y, params=params)                    # apply exactly those draws
    assert torch.equal(aug(x, y, params=aug.last_params)[0], again)  # replay the last call
    donors = aug.last_params.donor                         # which image gave each its code
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowaug.augmentation.base import Augmentation
from flowaug.augmentation.cache import LatentCache
from flowaug.augmentation.params import DONORS, MODES, NEEDS_GROUPS, NEEDS_LABELS, FlowAugParams, draw_params
from flowaug.flow import Latents
from flowaug.pretrained import load_model, load_pretrained
from flowaug.validation import check_finite_unit_range

GUARD_QUANTILE = 0.97
"""The guard threshold a flow is calibrated to: this quantile of the guard statistic over swaps of
held-out images (:func:`calibrate_guard`), so about 3% of swaps are rejected."""


COUNTERS = ("augmented_count", "fallback_count", "rejected_count", "no_donor_count", "cache_misses")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _check_number(name: str, value: object, low: float, high: float = math.inf) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not low <= value <= high):
        bounds = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
        raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")
    return float(value)


class FlowAug(Augmentation):
    """Semantic augmentation with a pretrained :class:`flowaug.DecoupledFlow`.

    Args:
        flow: a ``DecoupledFlow``, a checkpoint path or a registry name
            (:func:`flowaug.available_pretrained`; :meth:`from_pretrained` says so explicitly);
            default: the shipped flow ``"cifar10"``, so ``FlowAug()`` is ready to use on 32x32 images.
        p: probability that each sample is augmented (independently per sample).
        mode: "swap" (nuisance code of another image of the batch), "prior" (a sample of the
            learned nuisance prior at ``temperature``) or "mix" (own and donor codes interpolated
            with a donor weight drawn uniformly from ``mix_range``).
        temperature: scale of prior samples in "prior" mode (< 1 stays nearer the data).
        mix_range: (low, high) in [0, 1], the donor weight range of "mix" mode.
        donor: "any", "same_class", "other_class" (need labels ``y``), "other_group" or
            "balanced" (need ``groups``); see :mod:`flowaug.augmentation.params`. A sample
            with no allowed donor in the batch is returned unchanged (``no_donor_count``).
        generator: int seed, CPU ``torch.Generator`` or None (seeded from torch's RNG).
        resize: allow inputs whose size differs from the flow's; they are resized (bilinear,
            antialiased) to the flow's size and the result back. Off by default.
        guard: reject decodes the flow finds implausible: where the output's bits/dim under its new
            code minus the input's under its own code (the change of the decode's log-determinant;
            the semantic latent is the same) exceeds the threshold, the image falls back to the input
            (``rejected_count``). A number is the threshold in bits/dim; "auto" takes the flow's
            calibrated threshold (``flow.meta["guard_bits"]``, see :func:`calibrate_guard`) and is
            off for a flow without one; None turns the guard off.

    Call ``aug(x)``, ``aug(x, y)`` or ``aug(x, y, groups=g)``: x is (B,3,H,W) or (3,H,W), float in
    [0,1] (dtype kept) or uint8 (kept), on any device; the output has x's shape, dtype and device;
    ``y`` ((B,) integer labels) is returned unchanged. ``params=`` applies draws made earlier by
    :meth:`forward_parameters` (or ``aug.last_params``) instead of drawing. No autograd flows
    through the flow; it runs in full fp32 even under autocast or with TF32 enabled.
    An empty batch comes back unchanged. Counters: ``augmented_count`` (images changed),
    ``fallback_count`` (non-finite decodes), ``rejected_count`` (guard), ``no_donor_count``,
    ``cache_misses`` (images encoded although a cache exists). Counters of ``DataLoader`` workers
    stay in the workers' copies. After each call ``last_params`` holds its draws, ``last_augmented``
    ((B,) bool, CPU) the images that came back changed and ``last_extra_bits`` ((B,) float32, CPU) the
    guard's statistic of every decoded image (NaN where nothing was decoded), also with the guard off.
    """

    def __init__(
        self,
        flow: str | os.PathLike | nn.Module = "cifar10",
        p: float = 0.5,
        mode: str = "swap",
        temperature: float = 0.7,
        mix_range: tuple[float, float] = (0.5, 1.0),
        donor: str = "any",
        generator: torch.Generator | int | None = None,
        resize: bool = False,
        guard: float | str | None = "auto",
    ) -> None:
        super().__init__(generator)
        _check_choice("mode", mode, MODES)
        _check_choice("donor", donor, DONORS)
        self.p = _check_number("p", p, 0.0, 1.0)
        self.temperature = _check_number("temperature", temperature, 0.0)
        if not isinstance(mix_range, (tuple, list)) or len(mix_range) != 2:
            raise ValueError(f"mix_range must be a pair (low, high), got {mix_range!r}")
        low, high = (_check_number("mix_range", value, 0.0, 1.0) for value in mix_range)
        if low > high:
            raise ValueError(f"mix_range must satisfy low <= high, got {mix_range}")
        if isinstance(flow, (str, os.PathLike)):
            flow = load_model(flow, kind="flow")
        if not isinstance(flow, nn.Module) or not hasattr(flow, "decode"):
            raise TypeError(f"flow must be a DecoupledFlow, a checkpoint path or a registry name, "
                            f"got {type(flow).__name__}")
        if guard == "auto":
            guard = getattr(flow, "meta", {}).get("guard_bits")
        if guard is not None and (isinstance(guard, bool) or not isinstance(guard, (int, float)) or math.isnan(guard)):
            raise ValueError(f"guard must be a number (bits/dim), 'auto' or None, got {guard!r}")
        self.guard = None if guard is None else float(guard)
        self.flow = flow.eval().requires_grad_(False)
        self.mode, self.mix_range, self.donor, self.resize = mode, (low, high), donor, bool(resize)
        self.cache: LatentCache | None = None
        self.last_params: FlowAugParams | None = None
        self.last_augmented: Tensor | None = None
        self.last_extra_bits: Tensor | None = None
        for name in COUNTERS:
            setattr(self, name, 0)

    @classmethod
    def from_pretrained(cls, name: str, **options) -> "FlowAug":
        """FlowAug with the registered flow ``name`` (sha256 verified); ``options`` as the constructor's."""
        return cls(load_pretrained(name), **options)

    def train(self, mode: bool = True) -> "FlowAug":
        """Switching modes never puts the flow into training mode (it stays frozen)."""
        super().train(mode)
        self.flow.eval()
        return self

    def extra_repr(self) -> str:
        config = self.flow.config
        return (f"flow={config.image_size}x{config.image_size} nuisance_dim={config.nuisance_dim}, p={self.p}, "
                f"mode={self.mode!r}, temperature={self.temperature}, mix_range={self.mix_range}, "
                f"donor={self.donor!r}, resize={self.resize}, guard={self.guard}")

    def __repr__(self) -> str:
        return f"FlowAug({self.extra_repr()})"

    def calibrate_guard(self, images: Tensor, quantile: float = GUARD_QUANTILE, batch_size: int = 256) -> float:
        """Set :attr:`guard` to the ``quantile`` of the guard statistic over swaps of ``images``
        ((N,3,H,W) images of the flow's domain, e.g. training images, N >= 2) in batches of
        ``batch_size`` and return it. Draws from this module's generator; counters are unchanged."""
        statistics = []
        settings = ("mode", "p", "donor", "guard", *COUNTERS)
        saved = {name: getattr(self, name) for name in settings}
        self.mode, self.p, self.donor, self.guard = "swap", 1.0, "any", None
        try:
            for start in range(0, images.shape[0] - 1, batch_size):
                self(images[start:start + batch_size])
                statistics.append(self.last_extra_bits[self.last_params.apply])
        finally:
            for name, value in saved.items():
                setattr(self, name, value)
        values = torch.cat(statistics)
        self.guard = float(torch.quantile(values[torch.isfinite(values)], quantile))
        return self.guard

    def forward(self, x: Tensor, y: Tensor | None = None, groups: Tensor | None = None,
                params: FlowAugParams | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """Augment ``x``; with ``y`` return ``(x_aug, y)``. ``groups`` ((B,) int) feed the group donor
        policies; ``params`` replays earlier draws."""
        unbatched = isinstance(x, Tensor) and x.ndim == 3
        batch = self._validated_batch(x)
        if batch.shape[0] == 0:
            return x.clone() if y is None else (x.clone(), y)
        if params is None:
            params = self._draw(batch.shape[0], y, groups, unbatched)
        else:
            if not isinstance(params, FlowAugParams):
                raise TypeError(f"params must be FlowAugParams (from forward_parameters), got {type(params).__name__}")
            params.check(batch.shape[0], self.mode, self.flow.config.nuisance_dim)
        out = self._augment(batch, params)
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
            raise ValueError(f"mode={self.mode!r} takes the nuisance code of another image of the batch, but the "
                             "batch holds a single image; use mode='prior' for single images (e.g. per sample in "
                             "DataLoader workers) or apply FlowAug to batches")
        return draw_params(batch_size, self.p, self.mode, self.donor, labels=labels, groups=group_ids,
                           mix_range=self.mix_range, nuisance_dim=self.flow.config.nuisance_dim,
                           generator=self.call_generator())

    def cache_latents(self, images: Tensor, *, dtype: torch.dtype = torch.float16, batch_size: int = 256,
                      progress: bool = True) -> LatentCache:
        """Encode a fixed dataset ((N,3,H,W) float in [0,1] or uint8) once into :attr:`cache`.

        Afterwards a batch's images are found in the cache by content (see
        :mod:`flowaug.augmentation.cache`) and only the decoder runs for them; images that are not
        in it (e.g. after crop/flip: put FlowAug first) are encoded and counted in ``cache_misses``.
        """
        self.cache = LatentCache.build(self.flow, images, dtype=dtype, batch_size=batch_size, progress=progress)
        return self.cache

    def _validated_batch(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            hint = " (convert PIL images with torchvision.transforms.v2.functional.to_image)" \
                if type(x).__module__.startswith("PIL") else ""
            raise TypeError(f"FlowAug expects a torch.Tensor, got {type(x).__name__}{hint}")
        if x.ndim not in (3, 4):
            raise ValueError(f"FlowAug expects images of shape (B,3,H,W) or (3,H,W), got {tuple(x.shape)}")
        batch = x if x.ndim == 4 else x.unsqueeze(0)
        if batch.shape[1] != 3:
            hint = "; the channels look last: pass x.permute(0, 3, 1, 2)" if batch.shape[-1] == 3 else ""
            raise ValueError(f"FlowAug expects 3 (RGB) channels in dim -3, got {batch.shape[1]} "
                             f"(shape {tuple(x.shape)}){hint}")
        size = self.flow.config.image_size
        if tuple(batch.shape[-2:]) != (size, size) and not self.resize:
            raise ValueError(f"the flow was trained on {size}x{size} images but got {batch.shape[-2]}x{batch.shape[-1]}; "
                             f"pass resize=True to resize to {size}x{size} and back, or use a flow trained at this size")
        if batch.dtype == torch.uint8 or batch.shape[0] == 0:
            return batch
        if not batch.is_floating_point():
            raise TypeError(f"FlowAug expects float images in [0, 1] or uint8 images, got dtype {batch.dtype}")
        try:
            check_finite_unit_range(batch, "FlowAug input")
        except ValueError as error:
            finite = bool(torch.isfinite(batch).all())
            if not finite:
                hint = "look for a division by zero or a broken file upstream"
            elif float(batch.amin()) >= 0 and float(batch.amax()) <= 255:
                hint = "the values look like 0..255: divide by 255"
            else:
                hint = "apply FlowAug before normalisation"
            raise ValueError(f"{error}; {hint}") from None
        return batch

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

    def _augment(self, batch: Tensor, params: FlowAugParams) -> Tensor:
        """Augment the drawn samples of ``batch`` (B,3,H,W); the others are returned bit-exactly."""
        self.no_donor_count += int(params.no_donor.sum())
        selected = params.apply.nonzero().squeeze(1)
        accepted = torch.zeros(batch.shape[0], dtype=torch.bool)
        self.last_augmented = accepted
        self.last_extra_bits = torch.full((batch.shape[0],), math.nan)
        if selected.numel() == 0:
            return batch.clone()
        images = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        with torch.no_grad():  # the flow's own methods run in full fp32 (flowaug.flow.precision)
            decoded, extra_bits = self._decode_new_nuisance(images, selected, params)
        implausible = torch.zeros_like(extra_bits, dtype=torch.bool) if self.guard is None else ~(extra_bits <= self.guard)
        on_device = selected.to(batch.device)
        finite = torch.isfinite(decoded).flatten(1).all(dim=1)
        keep = finite & ~implausible
        decoded = torch.where(keep[:, None, None, None], decoded.clamp(0.0, 1.0), images[on_device])
        status = torch.stack([extra_bits.float(), finite.float(), keep.float()]).cpu()  # one device sync per call
        finite, keep = status[1].bool(), status[2].bool()
        self.last_extra_bits[selected] = status[0]
        self.fallback_count += int((~finite).sum())
        self.rejected_count += int((finite & ~keep).sum())
        self.augmented_count += int(keep.sum())
        accepted[selected] = keep
        if batch.dtype == torch.uint8:
            decoded = (decoded * 255.0).round()
        out = batch.clone()
        out[on_device] = decoded.to(batch.dtype)
        return out

    def _decode_new_nuisance(self, images: Tensor, selected: Tensor, params: FlowAugParams) -> tuple[Tensor, Tensor]:
        """Decodes (S,3,H,W) float32 of the S selected images with their new codes (unchecked), and the
        guard's statistic (S,): the output's bits/dim under its new code minus the input's under its own."""
        size = self.flow.config.image_size
        original_size = tuple(images.shape[-2:])
        if original_size != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True).clamp(0.0, 1.0)
        rows = None if self.cache is None else self.cache.lookup(images)  # once per call, for images and donors
        latents, own_log_det = self._latents_of(images, selected, rows)
        nuisance = self._new_nuisance(images, selected, latents.nuisance, params, rows)
        decoded, new_log_det = self.flow.decode(Latents(latents.semantic, nuisance), with_log_det=True)
        extra_bits = (new_log_det - own_log_det) / (self.flow.num_dims * math.log(2))
        if original_size != (size, size):
            decoded = F.interpolate(decoded, size=original_size, mode="bilinear", antialias=True)
        return decoded, extra_bits

    def _latents_of(self, images: Tensor, which: Tensor, rows: Tensor | None) -> tuple[Latents, Tensor]:
        """Latents and own log-determinants (S,) of batch images ``which``, from the cache where ``rows``
        ((B,) cache rows of the batch, -1 where not cached; None without a cache) has them."""
        which = which.to(images.device)
        if rows is None:
            return self.flow.encode(images[which], validate=False, with_log_det=True)
        own = rows[which]
        hit = own >= 0
        self.cache_misses += int((~hit).sum())
        cached = own.clamp_min(0).to(self.cache.semantic.device)
        semantic = self.cache.semantic[cached].to(images.device, torch.float32)
        nuisance = self.cache.nuisance[cached].to(images.device)
        log_det = self.cache.log_det[cached].to(images.device)
        if not bool(hit.all()):
            missing = (~hit).nonzero().squeeze(1)
            fresh, fresh_log_det = self.flow.encode(images[which[missing]], validate=False, with_log_det=True)
            semantic[missing], nuisance[missing], log_det[missing] = fresh.semantic, fresh.nuisance, fresh_log_det
        return Latents(semantic, nuisance), log_det

    def _nuisance_of(self, images: Tensor, which: Tensor, rows: Tensor | None) -> Tensor:
        """Posterior-mean nuisance codes (S, d) of batch images ``which`` (from the cache when all are in it)."""
        which = which.to(images.device)
        if rows is not None and bool((rows[which] >= 0).all()):
            return self.cache.nuisance[rows[which].to(self.cache.nuisance.device)].to(images.device)
        return self.flow.encode_nuisance(images[which], validate=False)

    def _new_nuisance(self, images: Tensor, selected: Tensor, own: Tensor, params: FlowAugParams,
                      rows: Tensor | None) -> Tensor:
        """(S, d) nuisance codes for the selected images according to ``mode``."""
        if self.mode == "prior":
            base = params.prior_noise[selected].to(own.device) * self.temperature
            return self.flow.nuisance_from_noise(base).to(own.dtype)
        donor_codes = self._nuisance_of(images, params.donor[selected], rows)
        if self.mode == "swap":
            return donor_codes
        weight = params.mix_weight[selected].to(own.device)[:, None]
        return (1.0 - weight) * own + weight * donor_codes
