"""Latent cache: encode a fixed dataset's semantic latents once, then each step only decodes.

Memory: N * 3*H*W values for the semantic latents (2 bytes each in float16, 4 in
float32) plus N * nuisance_dim float32 codes. For CIFAR-10's 50,000 training images at
32x32 that is 50,000 * 3,072 * 2 B = 307 MB in float16 (614 MB in float32) plus 6.4 MB
of nuisance codes (d = 32).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class LatentCache:
    """Semantic latents (N, 3*H*W) in ``semantic.dtype`` and nuisance codes (N, d) float32,
    row i belonging to image i of the dataset the cache was built from."""

    semantic: Tensor
    nuisance: Tensor

    def __len__(self) -> int:
        return self.semantic.shape[0]

    @property
    def nbytes(self) -> int:
        """Memory held by the cache in bytes."""
        return self.semantic.nbytes + self.nuisance.nbytes

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        flow: nn.Module,
        images: Tensor,
        *,
        dtype: torch.dtype = torch.float16,
        batch_size: int = 256,
        device: torch.device | str | None = None,
        progress: bool = True,
    ) -> "LatentCache":
        """Encode ``images`` ((N,3,H,W) float in [0,1] or uint8, any device) with ``flow``.

        The cache is stored on ``device`` (default: the images' device) with semantic latents
        in ``dtype`` (float16 halves the memory; decoding from it is no longer bit-exact).
        """
        if dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"cache dtype must be float16, bfloat16 or float32, got {dtype}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N,3,H,W), got {tuple(images.shape)}")
        flow_device = next(flow.parameters()).device
        device = images.device if device is None else torch.device(device)
        semantic, nuisance = [], []
        for start in tqdm(range(0, images.shape[0], batch_size), desc="encoding latents", disable=not progress):
            batch = images[start:start + batch_size].to(flow_device)
            batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
            latents = flow.encode(batch)
            semantic.append(latents.semantic.to(device, dtype))
            nuisance.append(latents.nuisance.to(device, torch.float32))
        return cls(torch.cat(semantic), torch.cat(nuisance))
