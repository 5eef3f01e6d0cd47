"""Predicted foreground masks: a small segmentation network trained on the training masks.

Masking needs a mask for every image it classifies; where exact masks exist only for the training
data, :func:`train_mask_predictor` learns them and :meth:`MaskPredictor.predict` supplies them at
test time. :func:`mask_iou` scores predicted masks against exact ones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowaug.masking.early import check_mask
from flowaug.seeding import seeded_generator


class MaskPredictor(nn.Module):
    """Images (B,3,H,W) in [0,1] -> foreground logits (B,1,H,W).

    Full resolution throughout: 3x3 convolutions with dilations 1, 2, 4, 8, 1 (a receptive field of
    33 pixels, enough to see a 32-pixel image's background as a whole), batch norm and ReLU, then a
    1x1 convolution to one logit per pixel.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for dilation in (1, 2, 4, 8, 1):
            layers += [nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.Conv2d(width, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2.0 - 1.0)

    @torch.no_grad()
    def predict(self, x: Tensor, threshold: float = 0.5, batch_size: int = 500) -> Tensor:
        """Binary masks float (B,1,H,W) in {0,1}: foreground probability above ``threshold``."""
        self.eval()
        return torch.cat([(torch.sigmoid(self(x[i:i + batch_size])) > threshold).to(x.dtype)
                          for i in range(0, len(x), batch_size)])


def train_mask_predictor(images: Tensor, masks: Tensor, *, epochs: int = 2, batch_size: int = 128,
                         lr: float = 3e-3, seed: int = 0, width: int = 32, progress: bool = True) -> MaskPredictor:
    """Train a :class:`MaskPredictor` with per-pixel binary cross-entropy (AdamW, cosine schedule).

    images: float (N,3,H,W) in [0,1]; masks: float (N,1,H,W) in {0,1}, on the same device.
    The shuffling and the initial weights follow ``seed``; the network ends in eval mode.
    """
    check_mask(images, masks)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MaskPredictor(width).to(images.device)
    steps = epochs * max(1, len(images) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    generator = seeded_generator(images.device, seed)
    model.train()
    bar = tqdm(total=steps, desc="mask predictor", disable=not progress, leave=False)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator, device=images.device)
        for start in range(0, max(1, len(images) // batch_size) * batch_size, batch_size):
            index = order[start:start + batch_size]
            loss = F.binary_cross_entropy_with_logits(model(images[index]), masks[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


def mask_iou(predicted: Tensor, target: Tensor) -> Tensor:
    """Intersection over union per image (B,) of binary masks (B,1,H,W); 1 where both are empty."""
    if predicted.shape != target.shape:
        raise ValueError(f"masks differ in shape: {tuple(predicted.shape)} and {tuple(target.shape)}")
    p, t = predicted.flatten(1) > 0.5, target.flatten(1) > 0.5
    union = (p | t).sum(1)
    return torch.where(union > 0, (p & t).sum(1) / union.clamp_min(1), torch.ones_like(union, dtype=torch.float))
