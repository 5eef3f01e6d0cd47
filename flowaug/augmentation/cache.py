"""Latent cache: encode a fixed dataset once, then each FlowAug call only decodes.

Rows are found by the images' content, not by a dataset index: each image's 64-bit fingerprint
(its pixels quantised to 8 bits, hashed with fixed random weights in exact integer arithmetic) is
looked up among the cached ones. A batch image that is not in the cache (cropped, flipped, from
another split) is never mistaken for a cached one: FlowAug encodes it instead and counts it in
``cache_misses``. Two images with the same 8-bit pixels share latents, which is what they should do.

Memory: N * 3*H*W values for the semantic latents (2 bytes each in float16, 4 in float32) plus
N * nuisance_dim float32 codes and N int64 fingerprints. For CIFAR-10's 50,000 training images at
32x32 that is 307 MB in float16 (614 MB in float32) plus 6.4 MB of codes (d = 32) and 0.4 MB.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

_FINGERPRINT_SEED = 20261202


def fingerprint(x: Tensor) -> Tensor:
    """64-bit content keys (B,) int64 of images (B, C, H, W): float in [0, 1] or uint8, any device.

    Pixels are quantised to 0..255 and summed with fixed pseudo-random weights below 2**36 in
    int64 (no overflow up to 2**17 values per image), so the key is exact: it does not depend on the
    device, the batch or the summation order.
    """
    levels = x.flatten(1).to(torch.int64) if x.dtype == torch.uint8 else (x.flatten(1).double() * 255).round().long()
    return (levels * _fingerprint_weights(levels.shape[1]).to(levels.device)).sum(1)


@functools.lru_cache(maxsize=8)
def _fingerprint_weights(length: int) -> Tensor:
    return torch.randint(0, 2**36, (length,), generator=torch.Generator().manual_seed(_FINGERPRINT_SEED))


@dataclass(frozen=True)
class LatentCache:
    """Codes of a fixed dataset, row i belonging to image i.

    semantic: (N, 3*H*W) in ``semantic.dtype``; nuisance: (N, d) float32; log_det: (N,) float32,
    log|det dx/d eps| of each image under its own code (for FlowAug's guard); sorted_keys: (N,)
    int64 fingerprints (:func:`fingerprint`) in ascending order and key_rows: (N,) the row of each.
    All on one device.
    """

    semantic: Tensor
    nuisance: Tensor
    log_det: Tensor
    sorted_keys: Tensor
    key_rows: Tensor

    def __len__(self) -> int:
        return self.semantic.shape[0]

    @property
    def nbytes(self) -> int:
        """Memory held by the cache in bytes."""
        return sum(t.nbytes for t in (self.semantic, self.nuisance, self.log_det, self.sorted_keys, self.key_rows))

    def lookup(self, x: Tensor) -> Tensor:
        """Cache rows (B,) int64 of the images x (B, 3, H, W) (-1 where an image is not cached), on x's device."""
        keys = fingerprint(x).to(self.sorted_keys.device)
        position = torch.searchsorted(self.sorted_keys, keys).clamp_max(len(self) - 1)
        hit = self.sorted_keys[position] == keys
        return torch.where(hit, self.key_rows[position], torch.full_like(position, -1)).to(x.device)

    @classmethod
    @torch.no_grad()
    def build(cls, flow: nn.Module, images: Tensor, *, dtype: torch.dtype = torch.float16, batch_size: int = 256,
              device: torch.device | str | None = None, progress: bool = True) -> "LatentCache":
        """Encode ``images`` ((N,3,H,W) float in [0,1] or uint8, any device) with ``flow``.

        The cache is stored on ``device`` (default: the images' device) with semantic latents
        in ``dtype`` (float16 halves the memory; decoding from it is no longer bit-exact).
        """
        if dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"cache dtype must be float16, bfloat16 or float32, got {dtype}")
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
            found = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a non-empty tensor of shape (N,3,H,W), got {found}")
        flow_device = next(flow.parameters()).device
        device = images.device if device is None else torch.device(device)
        parts: dict[str, list[Tensor]] = {"semantic": [], "nuisance": [], "log_det": [], "keys": []}
        for start in tqdm(range(0, images.shape[0], batch_size), desc="encoding latents", disable=not progress):
            batch = images[start:start + batch_size].to(flow_device)
            parts["keys"].append(fingerprint(batch).to(device))
            batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
            latents, log_det = flow.encode(batch, with_log_det=True)
            parts["semantic"].append(latents.semantic.to(device, dtype))
            parts["nuisance"].append(latents.nuisance.to(device, torch.float32))
            parts["log_det"].append(log_det.to(device, torch.float32))
        sorted_keys, key_rows = torch.sort(torch.cat(parts.pop("keys")))
        return cls(**{name: torch.cat(tensors) for name, tensors in parts.items()}, sorted_keys=sorted_keys,
                   key_rows=key_rows)
