"""A small Vision Transformer whose background patches can be dropped (late masking for ViTs).

Built from ``torch.nn.TransformerEncoder`` (pre-norm layers): unlike torchvision's
``VisionTransformer`` it takes a key-padding mask, which is what dropping tokens needs, and torch
is a dependency already (timm is not).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowaug.models.layers import Normalize

READOUTS = ("gap", "cls")


class SmallViT(nn.Module):
    """ViT for 32 x 32 images: 4 x 4 patches (64 tokens), ``depth`` pre-norm encoder layers.

    ``model(x)`` sees every patch; ``model(x, mask)`` (mask (B,1,H,W), 1 = foreground) drops the
    background patches (a patch counts as foreground when any of its pixels is): they neither
    attend nor are attended to, and the class is read from the average of the foreground patch
    tokens (``readout="gap"``) or from the CLS token (``"cls"``), as in Aniraj et al.'s late masking.
    An image without foreground keeps every patch.
    """

    def __init__(self, num_classes: int = 10, readout: str = "gap", image_size: int = 32, patch: int = 4,
                 dim: int = 128, depth: int = 4, heads: int = 4, mlp: int = 256) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; choose one of {', '.join(READOUTS)}")
        self.readout, self.patch = readout, patch
        self.normalize = Normalize()
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        tokens = (image_size // patch) ** 2
        self.position = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if readout == "cls" else None
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        tokens = self.embed(self.normalize(x)).flatten(2).transpose(1, 2) + self.position  # (B, N, D)
        keep = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        if mask is not None:
            keep = F.max_pool2d(mask.to(x.dtype), self.patch).flatten(1) > 0
            keep = keep | ~keep.any(1, keepdim=True)
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1)
            keep = torch.cat([torch.ones_like(keep[:, :1]), keep], 1)
        encoded = self.norm(self.encoder(tokens, src_key_padding_mask=~keep))
        if self.cls is not None:
            return self.head(encoded[:, 0])
        weights = keep.unsqueeze(-1).to(encoded.dtype)
        return self.head((encoded * weights).sum(1) / weights.sum(1))
