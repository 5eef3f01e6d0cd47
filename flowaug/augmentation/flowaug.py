"""``FlowAug``: keep an image's semantic latent, give it a new nuisance code, decode.

Same object, new colour cast / background tone, label unchanged.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowaug.augmentation.cache import LatentCache
from flowaug.augmentation.params import DONORS, MODES, AugmentParams, draw_params
from flowaug.flow import Latents
from flowaug.pretrained import load_model
from flowaug.validation import check_finite_unit_range


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


class FlowAug(nn.Module):
    """Semantic augmentation with a pretrained :class:`flowaug.DecoupledFlow`.

    Args:
        flow: a registry name (see :func:`flowaug.available_pretrained`), a checkpoint path or
            a ``DecoupledFlow``.
        p: probability that each sample is augmented (independently per sample).
        mode: "swap" (nuisance code of another image of the batch), "prior" (a sample of
            the learned nuisance prior at ``temperature``) or "mix" (own and donor codes
            interpolated with a donor weight drawn uniformly from ``mix_range``).
        temperature: scale of prior samples in "prior" mode (< 1 stays nearer the data).
        mix_range: (low, high) in [0, 1], the donor weight range of "mix" mode.
        donor: "any", "same_class" or "other_class" (the last two need labels).
        generator: a CPU ``torch.Generator`` or an int seed for reproducible draws; ``None`` uses
            torch's global RNG. Inside ``DataLoader`` workers each worker draws from its own
            generator seeded by (seed, worker id), so workers do not repeat each other's draws.
        resize: allow inputs whose size differs from the flow's; they are resized
            (bilinear, antialiased) to the flow's size and the result back. Off by default:
            images are never resized silently.

    Call ``aug(x)`` or ``aug(x, y)``: x is (B,3,H,W) or (3,H,W), float in [0,1] (any float
    dtype, kept) or uint8 (kept), on any device; the output has x's shape, dtype and
    device. ``y`` ((B,) integer labels) is returned unchanged and enables class-aware
    donors. No autograd flows through the flow; it runs in full fp32 even under autocast or with
    TF32 enabled (:func:`flowaug.flow.precision.full_fp32`).
    A decoded image that is not finite falls back to its input; ``fallback_count``
    counts those, ``augmented_count`` the images that were augmented.
    """

    def __init__(
        self,
        flow: str | nn.Module = "cifar10",
        p: float = 0.5,
        mode: str = "swap",
        temperature: float = 0.7,
        mix_range: tuple[float, float] = (0.5, 1.0),
        donor: str = "any",
        generator: torch.Generator | int | None = None,
        resize: bool = False,
    ) -> None:
        super().__init__()
        _check_choice("mode", mode, MODES)
        _check_choice("donor", donor, DONORS)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 maps zero base noise through the prior), got {temperature}")
        low, high = mix_range
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"mix_range must satisfy 0 <= low <= high <= 1, got {mix_range}")
        if isinstance(flow, (str, os.PathLike)):
            flow = load_model(flow, kind="flow")
        self.flow = flow.eval().requires_grad_(False)
        self.p, self.mode, self.temperature = p, mode, temperature
        self.mix_range, self.donor, self.resize = (float(low), float(high)), donor, resize
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator (draws are made on the CPU and moved), "
                             f"got one on {generator.device}")
        self.generator = generator
        self._worker_generator: torch.Generator | None = None
        self.cache: LatentCache | None = None
        self.fallback_count = 0
        self.augmented_count = 0

    def train(self, mode: bool = True) -> "FlowAug":
        """Switching modes never puts the flow into training mode (it stays frozen)."""
        super().train(mode)
        self.flow.eval()
        return self

    def __repr__(self) -> str:
        config = self.flow.config
        return (
            f"FlowAug(flow=DecoupledFlow({config.image_size}x{config.image_size}, nuisance_dim={config.nuisance_dim}), "
            f"p={self.p}, mode={self.mode!r}, temperature={self.temperature}, "
            f"mix_range={self.mix_range}, donor={self.donor!r}, resize={self.resize})"
        )

    def forward(
        self, x: Tensor, y: Tensor | None = None, index: Tensor | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Augment ``x``; with ``y`` return ``(x_aug, y)``. ``index`` ((B,) int) gives each image's
        row in :attr:`cache` so its latents are read instead of encoded."""
        unbatched = x.ndim == 3
        batch = self._validated_batch(x)
        labels = self._validated_labels(y, batch.shape[0], unbatched)
        rows = None if index is None else self._validated_index(index, batch.shape[0])
        generator = self._call_generator()
        params = draw_params(batch.shape[0], self.p, labels, self.donor, self.mix_range, generator)
        augmented = self._augment(batch, params, rows, generator)
        out = augmented[0] if unbatched else augmented
        return out if y is None else (out, y)

    def _call_generator(self) -> torch.Generator | None:
        """``generator``, or inside a DataLoader worker one seeded by (its initial seed, worker id)."""
        worker = torch.utils.data.get_worker_info()
        if self.generator is None or worker is None:
            return self.generator
        if self._worker_generator is None:  # every worker process holds its own copy of this module
            seed = (self.generator.initial_seed() * 1_000_003 + worker.id + 1) % 2**63
            self._worker_generator = torch.Generator().manual_seed(seed)
        return self._worker_generator

    def cache_latents(self, images: Tensor, *, dtype: torch.dtype = torch.float16, batch_size: int = 256,
                      progress: bool = True) -> LatentCache:
        """Encode a fixed dataset ((N,3,H,W) float in [0,1] or uint8) once into :attr:`cache`.

        Afterwards call ``aug(x, y, index=idx)`` with each batch's dataset indices: only the
        decoder runs per step. FlowAug must then see the images untransformed (put it before
        crop/flip). See :class:`~flowaug.augmentation.cache.LatentCache` for the memory cost.
        """
        self.cache = LatentCache.build(self.flow, images, dtype=dtype, batch_size=batch_size, progress=progress)
        return self.cache

    def _validated_batch(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"FlowAug expects a torch.Tensor, got {type(x).__name__}")
        if x.ndim not in (3, 4):
            raise ValueError(f"FlowAug expects images of shape (B,3,H,W) or (3,H,W), got {tuple(x.shape)}")
        batch = x if x.ndim == 4 else x.unsqueeze(0)
        if batch.shape[1] != 3:
            raise ValueError(f"FlowAug expects 3 (RGB) channels in dim -3, got {batch.shape[1]} (shape {tuple(x.shape)})")
        size = self.flow.config.image_size
        if tuple(batch.shape[-2:]) != (size, size) and not self.resize:
            raise ValueError(
                f"the flow was trained on {size}x{size} images but got {batch.shape[-2]}x{batch.shape[-1]}; "
                f"pass resize=True to resize to {size}x{size} and back, or use a flow trained at this size"
            )
        if batch.dtype == torch.uint8:
            return batch
        if not batch.is_floating_point():
            raise TypeError(f"FlowAug expects float images in [0, 1] or uint8 images, got dtype {batch.dtype}")
        check_finite_unit_range(batch, "FlowAug input", hint="; apply FlowAug before normalisation")
        return batch

    def _validated_labels(self, y: Tensor | None, batch_size: int, unbatched: bool) -> Tensor | None:
        if y is None:
            if self.donor != "any":
                raise ValueError(f"donor={self.donor!r} needs labels: call aug(x, y)")
            if self.mode != "prior" and batch_size < 2:
                raise ValueError(self._single_image_message())
            return None
        labels = torch.as_tensor(y)
        expected = () if unbatched else (batch_size,)
        if tuple(labels.shape) != expected and not (unbatched and tuple(labels.shape) == (1,)):
            raise ValueError(f"labels must have shape {expected} for images of batch size {batch_size}, got {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
        if self.mode != "prior" and batch_size < 2:
            raise ValueError(self._single_image_message())
        return labels.reshape(batch_size).cpu()

    def _single_image_message(self) -> str:
        return (
            f"mode={self.mode!r} takes the nuisance code of another image of the batch, but the batch "
            "holds a single image; use mode='prior' for single images (e.g. per-sample in DataLoader "
            "workers) or apply FlowAug to batches"
        )

    def _validated_index(self, index: Tensor, batch_size: int) -> Tensor:
        if self.cache is None:
            raise ValueError("index was passed but there is no latent cache: call aug.cache_latents(images) first")
        rows = torch.as_tensor(index)
        if rows.is_floating_point() or tuple(rows.reshape(-1).shape) != (batch_size,):
            raise ValueError(f"index must hold {batch_size} integer dataset indices, got {tuple(rows.shape)} {rows.dtype}")
        rows = rows.reshape(batch_size).cpu()
        if rows.min() < 0 or rows.max() >= len(self.cache):
            raise IndexError(f"index values must lie in [0, {len(self.cache)}) (the cache size), "
                             f"got [{int(rows.min())}, {int(rows.max())}]")
        return rows

    def _augment(self, batch: Tensor, params: AugmentParams, rows: Tensor | None,
               generator: torch.Generator | None) -> Tensor:
        """Augment the drawn samples of ``batch`` (B,3,H,W); the others are returned bit-exactly."""
        apply = params.apply.clone()
        if self.mode != "prior":
            apply &= params.donor != torch.arange(batch.shape[0])
        selected = apply.nonzero().squeeze(1)
        if selected.numel() == 0:
            return batch.clone()
        images = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
        with torch.no_grad():  # the flow's own methods run in full fp32 (flowaug.flow.precision)
            decoded = self._decode_new_nuisance(images, selected, params, rows, generator)
        originals = images[selected.to(batch.device)]
        finite = torch.isfinite(decoded).flatten(1).all(dim=1)
        decoded = torch.where(finite[:, None, None, None], decoded.clamp(0.0, 1.0), originals)
        self.fallback_count += int((~finite).sum())
        self.augmented_count += int(finite.sum())
        if batch.dtype == torch.uint8:
            decoded = (decoded * 255.0).round()
        out = batch.clone()
        out[selected.to(batch.device)] = decoded.to(batch.dtype)
        return out

    def _decode_new_nuisance(self, images: Tensor, selected: Tensor, params: AugmentParams,
                             rows: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """(S,3,H,W) float32 decodes of the S selected images with new nuisance codes (unchecked)."""
        size = self.flow.config.image_size
        original_size = tuple(images.shape[-2:])
        if original_size != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True).clamp(0.0, 1.0)
        semantic, own = self._latents_of(images, selected, rows)
        nuisance = self._new_nuisance(images, selected, own, params, rows, generator)
        decoded = self.flow.decode(Latents(semantic, nuisance))
        if original_size != (size, size):
            decoded = F.interpolate(decoded, size=original_size, mode="bilinear", antialias=True)
        return decoded

    def _latents_of(self, images: Tensor, which: Tensor, rows: Tensor | None) -> tuple[Tensor, Tensor]:
        """Semantic latents (S, 3HW) and own nuisance codes (S, d) of batch images ``which``."""
        if rows is None:
            return self.flow.encode(images[which.to(images.device)], validate=False)  # checked in forward
        cached = rows[which].to(self.cache.semantic.device)
        return (self.cache.semantic[cached].to(images.device, torch.float32),
                self.cache.nuisance[cached].to(images.device))

    def _nuisance_of(self, images: Tensor, which: Tensor, rows: Tensor | None) -> Tensor:
        """Nuisance codes (S, d) of batch images ``which`` (posterior means)."""
        if rows is None:
            return self.flow.encode_nuisance(images[which.to(images.device)], validate=False)
        return self.cache.nuisance[rows[which].to(self.cache.nuisance.device)].to(images.device)

    def _new_nuisance(self, images: Tensor, selected: Tensor, own: Tensor, params: AugmentParams,
                      rows: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """(S, d) nuisance codes for the selected images according to ``mode``."""
        if self.mode == "prior":
            codes = self.flow.sample_nuisance(selected.numel(), temperature=self.temperature,
                                              generator=generator)
            return codes.to(own.device, own.dtype)
        donor_codes = self._nuisance_of(images, params.donor[selected], rows)
        if self.mode == "swap":
            return donor_codes
        weight = params.mix_weight[selected].to(own.device)[:, None]
        return (1.0 - weight) * own + weight * donor_codes
