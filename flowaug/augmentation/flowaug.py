"""``FlowAug``: keep an image's semantic latent, give it a new nuisance code, decode.

Same object, new colour cast / background tone, label unchanged. This is the only place in
flowaug that decodes new nuisance codes: benchmarks, grids and recipes all call it.

Example::

    import torch
    from flowaug import FlowAug

    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 2  # images (B,3,32,32) in [0,1], labels (B,)
    aug = FlowAug.from_pretrained("cifar10", p=1.0, mode="swap", donor="other_class", generator=0)
    x_aug, y = aug(x, y)                                   # same shape, dtype and device; labels unchanged
    masks = torch.zeros(8, 1, 32, 32); masks[..., 8:24, 8:24] = 1.0  # (B,1,H,W) in [0,1], 1 = object
    background_only, _ = aug(x, y, masks=masks)            # the object's pixels come back unchanged
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

from flowaug.augmentation.cache import LatentCache
from flowaug.augmentation.donor import DonorAugmentation, check_number
from flowaug.augmentation.params import MODES, FlowAugParams
from flowaug.flow import Latents
from flowaug.pretrained import load_model, load_pretrained

GUARD_QUANTILE = 0.97
"""The guard threshold a flow is calibrated to: this quantile of the guard statistic over swaps of
held-out images (:func:`calibrate_guard`), so about 3% of swaps are rejected."""


class FlowAug(DonorAugmentation):
    """Semantic augmentation with a pretrained :class:`flowaug.DecoupledFlow`.

    Args:
        flow: a ``DecoupledFlow``, a checkpoint path or a registry name
            (:func:`flowaug.available_pretrained`; :meth:`from_pretrained` says so explicitly);
            default: the shipped flow ``"cifar10"``, so ``FlowAug()`` is ready to use on 32x32 images.
        p: probability that each sample is augmented (independently per sample).
        mode: "swap" (nuisance code of another image of the batch), "prior" (a sample of the
            learned nuisance prior at ``temperature``) or "mix" (own and donor codes interpolated
            with a donor weight drawn uniformly from ``mix_range``).
        temperature: scale of prior samples in "prior" mode (< 1 stays nearer the data), finite.
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

    Call as every :class:`~flowaug.augmentation.donor.DonorAugmentation`: ``aug(x)``, ``aug(x, y)``,
    ``aug(x, y, groups=g)``, ``masks=m`` to change the background only, ``params=`` to replay. No
    autograd flows through the flow; it runs in full fp32 even under autocast or with TF32 enabled.
    Where the flow's code enters only its colour map (``conditioning="colour"``, the default flow),
    the Glow's encode and decode cancel, so FlowAug runs only the posterior encoder and the colour
    map (the outputs of decoding the semantic latent up to the Glow's own round-trip error: at most
    2.3e-5 on 256 CIFAR-10 test images, mean 3e-7; tested) and needs no latent cache (:attr:`needs_cache`).
    Counters: ``augmented_count`` (images changed), ``fallback_count`` (non-finite decodes),
    ``rejected_count`` (guard), ``no_donor_count``, ``cache_misses`` (images encoded although a
    cache exists). Counters of ``DataLoader`` workers stay in the workers' copies. After each call
    ``last_params`` holds its draws, ``last_augmented`` ((B,) bool, CPU) the images that came back
    changed and ``last_extra_bits`` ((B,) float32, CPU) the guard's statistic of every decoded image
    (NaN where nothing was decoded), also with the guard off.
    """

    MODES = MODES
    COUNTERS = ("augmented_count", "fallback_count", "rejected_count", "no_donor_count", "cache_misses")

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
        super().__init__(p, mode, mix_range, donor, generator)
        self.temperature = check_number("temperature", temperature, 0.0)
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
        self.resize = bool(resize)
        self.cache: LatentCache | None = None
        self.last_extra_bits: Tensor | None = None

    @classmethod
    def from_pretrained(cls, name: str, **options) -> "FlowAug":
        """FlowAug with the registered flow ``name`` (sha256 verified); ``options`` as the constructor's."""
        return cls(load_pretrained(name), **options)

    @property
    def prior_dim(self) -> int:
        return self.flow.config.nuisance_dim

    @property
    def needs_cache(self) -> bool:
        """Whether :meth:`cache_latents` saves work: False where the code enters only the colour map
        (then no semantic latent is computed at all)."""
        return not self.flow.code_enters_image_end_only

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
        settings = ("mode", "p", "donor", "guard", *self.COUNTERS)
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

    def cache_latents(self, images: Tensor, *, dtype: torch.dtype = torch.float16, batch_size: int = 256,
                      progress: bool = True) -> LatentCache:
        """Encode a fixed dataset ((N,3,H,W) float in [0,1] or uint8) once into :attr:`cache`.

        Afterwards a batch's images are found in the cache by content (see
        :mod:`flowaug.augmentation.cache`) and only the decoder runs for them; images that are not
        in it (e.g. after crop/flip: put FlowAug first) are encoded and counted in ``cache_misses``.
        A flow that does not :attr:`need it <needs_cache>` only reads the cached nuisance codes.
        """
        self.cache = LatentCache.build(self.flow, images, dtype=dtype, batch_size=batch_size, progress=progress)
        return self.cache

    def check_size(self, height: int, width: int) -> None:
        size = self.flow.config.image_size
        if (height, width) != (size, size) and not self.resize:
            raise ValueError(f"the flow was trained on {size}x{size} images but got {height}x{width}; "
                             f"pass resize=True to resize to {size}x{size} and back, or use a flow trained at this size")

    def transform(self, images: Tensor, selected: Tensor, params: FlowAugParams,
                  masks: Tensor | None) -> tuple[Tensor, Tensor]:
        """Decodes of the selected images with their new codes; non-finite decodes and (guard on)
        implausible ones are not kept. One device sync per call."""
        decoded, extra_bits = self._decode_new_nuisance(images, selected, params)
        implausible = torch.zeros_like(extra_bits, dtype=torch.bool) if self.guard is None else ~(extra_bits <= self.guard)
        finite = torch.isfinite(decoded).flatten(1).all(dim=1)
        status = torch.stack([extra_bits.float(), finite.float(), (finite & ~implausible).float()]).cpu()
        finite, keep = status[1].bool(), status[2].bool()
        self.last_extra_bits[selected] = status[0]
        self.fallback_count += int((~finite).sum())
        self.rejected_count += int((finite & ~keep).sum())
        return decoded, keep

    def _augment(self, batch: Tensor, params: FlowAugParams, masks: Tensor | None) -> Tensor:
        self.last_extra_bits = torch.full((batch.shape[0],), math.nan)
        return super()._augment(batch, params, masks)

    def _decode_new_nuisance(self, images: Tensor, selected: Tensor, params: FlowAugParams) -> tuple[Tensor, Tensor]:
        """Decodes (S,3,H,W) float32 of the S selected images with their new codes (unchecked), and the
        guard's statistic (S,): the output's bits/dim under its new code minus the input's under its own."""
        size = self.flow.config.image_size
        original_size = tuple(images.shape[-2:])
        if original_size != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True).clamp(0.0, 1.0)
        rows = None if self.cache is None else self.cache.lookup(images)  # once per call, for images and donors
        donors = None if self.mode == "prior" else params.donor[selected]
        if self.flow.code_enters_image_end_only:  # each image that gives or takes a code is encoded once
            needed = selected if donors is None else torch.unique(torch.cat([selected, donors]))
            codes = images.new_zeros(images.shape[0], self.flow.config.nuisance_dim)
            codes[needed.to(images.device)] = self._nuisance_of(images, needed, rows)
            own = codes[selected.to(images.device)]
            donor_codes = None if donors is None else codes[donors.to(images.device)]
            nuisance = self._new_nuisance(selected, own, donor_codes, params)
            decoded, log_det_change = self.flow.recode(images[selected.to(images.device)], own, nuisance)
        else:
            latents, own_log_det = self._latents_of(images, selected, rows)
            donor_codes = None if donors is None else self._nuisance_of(images, donors, rows)
            nuisance = self._new_nuisance(selected, latents.nuisance, donor_codes, params)
            decoded, new_log_det = self.flow.decode(Latents(latents.semantic, nuisance), with_log_det=True)
            log_det_change = new_log_det - own_log_det
        extra_bits = log_det_change / (self.flow.num_dims * math.log(2))
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

    def _new_nuisance(self, selected: Tensor, own: Tensor, donor_codes: Tensor | None,
                      params: FlowAugParams) -> Tensor:
        """(S, d) nuisance codes for the selected images according to ``mode``, from their own codes
        and their donors' (S, d) (None in prior mode)."""
        if self.mode == "prior":
            base = params.prior_noise[selected].to(own.device) * self.temperature
            return self.flow.nuisance_from_noise(base).to(own.dtype)
        if self.mode == "swap":
            return donor_codes
        weight = params.mix_weight[selected].to(own.device)[:, None]
        return (1.0 - weight) * own + weight * donor_codes
