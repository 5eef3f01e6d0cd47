"""``BackgroundTransplant``: the object of an image on a donor's background, the donor's object removed.

Where the shortcut is what the background *is* (a pattern, a texture) no colour op can move it:
the background content has to come from elsewhere. With foreground masks (training masks,
SpuriousBackgrounds' exact masks, a mask predictor's) each drawn image keeps its object and takes
the whole background of a donor of the batch. The donor's own object leaves a hole; ``fill`` says
what goes there:

- ``"shift"`` (non-learned): the donor's background from the same image shifted by half its size
  (then a quarter, ...), the first shift that lands on background; pixels no shift reaches take the
  background's mean colour. Exact for periodic backgrounds whose period divides the shift;
- ``"mean"`` (non-learned): the hole in the mean colour of the donor's background, a flat patch;
- ``"flow"``: the donor is encoded by a :class:`~flowaug.flow.model.DecoupledFlow`, the semantic
  latent under the hole (at every multiscale level) is redrawn from N(0, T^2) and decoded under the
  donor's own code, so the flow paints the hole as it models backgrounds of that kind.

Pixels outside the donor's (dilated) hole are the donor's exactly; the object comes back exactly
where the image's mask is 1 and blends where it is fractional.

Example::

    import torch
    from flowaug import BackgroundTransplant

    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 2
    masks = torch.zeros(8, 1, 32, 32); masks[..., 8:24, 8:24] = 1.0     # 1 = object
    aug = BackgroundTransplant(p=1.0, fill="shift", generator=0)
    x_aug, y = aug(x, y, masks=masks)                                    # masks are required
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

from flowaug.augmentation.donor import DonorAugmentation, check_choice, check_number
from flowaug.augmentation.params import FlowAugParams
from flowaug.flow.model import DecoupledFlow, Latents
from flowaug.pretrained import load_model

FILLS = ("shift", "mean", "flow")


def dilate(holes: Tensor, pixels: int) -> Tensor:
    """Boolean masks (B,1,H,W) grown by ``pixels`` in every direction (a square neighbourhood)."""
    if pixels == 0:
        return holes
    return F.max_pool2d(holes.float(), 2 * pixels + 1, stride=1, padding=pixels) > 0


def shift_fill(images: Tensor, holes: Tensor) -> Tensor:
    """``images`` (B,3,H,W) with the ``holes`` (B,1,H,W) bool filled from the image itself, shifted
    (cyclically) by (H/2, W/2), (H/2, 0), (0, W/2), then by quarters and eighths: each hole pixel
    takes the first shifted pixel that is not in a hole; what none reaches takes the mean colour
    of the pixels outside the holes (:func:`mean_fill`)."""
    height, width = images.shape[-2:]
    filled, remaining = images.clone(), holes.clone()
    for divisor in (2, 4, 8):
        dy, dx = height // divisor, width // divisor
        for shift in ((dy, dx), (dy, 0), (0, dx), (-dy, dx)):
            take = remaining & ~torch.roll(holes, shift, dims=(-2, -1))
            filled = torch.where(take, torch.roll(images, shift, dims=(-2, -1)), filled)
            remaining &= ~take
    return torch.where(remaining, mean_fill(images, holes), filled)


def mean_fill(images: Tensor, holes: Tensor) -> Tensor:
    """``images`` (B,3,H,W) with the ``holes`` (B,1,H,W) bool in the mean colour of each image's
    pixels outside its holes."""
    outside = (~holes).float()
    mean = (images * outside).sum((2, 3), keepdim=True) / outside.sum((2, 3), keepdim=True).clamp_min(1.0)
    return torch.where(holes, mean.expand_as(images), images)


@torch.no_grad()
def flow_fill(flow: DecoupledFlow, images: Tensor, holes: Tensor, noise: Tensor) -> Tensor:
    """``images`` (B,3,S,S) with the ``holes`` (B,1,S,S) bool painted by ``flow``: every semantic latent
    entry whose cell overlaps a hole is replaced by ``noise`` (B, 3*S*S), already scaled by the
    temperature; decoded under each image's own code. Unclamped; may hold non-finite values."""
    latents = flow.encode(images, validate=False)
    redraw = []
    for channels, height, width in flow.piece_shapes:
        cells = F.adaptive_max_pool2d(holes.float(), (height, width)) > 0  # (B,1,h,w)
        redraw.append(cells.expand(-1, channels, -1, -1).flatten(1))
    semantic = torch.where(torch.cat(redraw, dim=1), noise, latents.semantic)
    painted = flow.decode(Latents(semantic, latents.nuisance))
    return torch.where(holes, painted, images)


class BackgroundTransplant(DonorAugmentation):
    """Each drawn image keeps its object (``masks``) and takes a donor's background, hole filled.

    Args:
        p: probability that an image is changed, as FlowAug's
            (:class:`~flowaug.augmentation.donor.DonorAugmentation`); mode is "swap" only.
        donor: the donor policy, as FlowAug's.
        generator: an int seed, a ``torch.Generator`` or None.
        fill: how the donor's object is removed from its background, :data:`FILLS` (module docstring).
        flow: the flow that paints holes (``fill="flow"``): a registry name, a checkpoint path or a
            :class:`~flowaug.flow.model.DecoupledFlow`; images must be its size.
        temperature: scale of the latent noise drawn for holes (``fill="flow"``), >= 0.
        dilation: pixels by which the donor's mask grows before it is filled (covers the
            anti-aliased rim of an object).

    Call ``aug(x, y, masks=m)`` (``groups=`` for the group donor policies): ``masks`` (B,1,H,W) in
    [0, 1], 1 = object, are required, the donors' masks come from the same tensor. The fill noise
    is drawn from this module's generator at each call (``params=`` replays which images and donors).
    """

    MODES = ("swap",)

    def __init__(self, p: float = 0.5, donor: str = "any", fill: str = "shift",
                 flow: str | os.PathLike | DecoupledFlow | None = None, temperature: float = 0.7,
                 dilation: int = 1, generator: torch.Generator | int | None = None) -> None:
        super().__init__(p, "swap", (0.5, 1.0), donor, generator)
        check_choice("fill", fill, FILLS)
        if fill == "flow" and flow is None:
            raise ValueError("fill='flow' needs flow= (a registry name, checkpoint path or DecoupledFlow)")
        if fill != "flow" and flow is not None:
            raise ValueError(f"fill={fill!r} is not learned and takes no flow; pass fill='flow' to paint with it")
        if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 0:
            raise ValueError(f"dilation must be an int >= 0 (pixels), got {dilation!r}")
        self.fill, self.temperature, self.dilation = fill, check_number("temperature", temperature, 0.0), dilation
        if isinstance(flow, (str, os.PathLike)):
            flow = load_model(flow, kind="flow")
        self.flow = None if flow is None else flow.eval().requires_grad_(False)

    def extra_repr(self) -> str:
        return (f"p={self.p}, donor={self.donor!r}, fill={self.fill!r}, temperature={self.temperature}, "
                f"dilation={self.dilation}")

    def check_size(self, height: int, width: int) -> None:
        size = None if self.flow is None else self.flow.config.image_size
        if size is not None and (height, width) != (size, size):
            raise ValueError(f"images of {height}x{width} do not fit the fill flow, trained at {size}x{size}; "
                             f"resize them or use a non-learned fill")

    def _augment(self, batch: Tensor, params: FlowAugParams, masks: Tensor | None) -> Tensor:
        if masks is None:
            raise ValueError("BackgroundTransplant needs the objects' masks: call aug(x, y, masks=m) with m "
                             "(B,1,H,W) in [0, 1], 1 = object")
        return super()._augment(batch, params, masks)

    def transform(self, images: Tensor, selected: Tensor, params: FlowAugParams,
                  masks: Tensor | None) -> tuple[Tensor, Tensor]:
        donors = params.donor[selected].to(images.device)
        backgrounds = images[donors]
        holes = dilate(masks[donors] > 0, self.dilation)
        if self.fill != "flow":
            fill = shift_fill if self.fill == "shift" else mean_fill
            return fill(backgrounds, holes), torch.ones(len(selected), dtype=torch.bool)
        noise = torch.randn(len(selected), self.flow.num_dims, generator=self.call_generator())
        filled = flow_fill(self.flow, backgrounds, holes, noise.to(images.device) * self.temperature)
        return filled, torch.isfinite(filled).flatten(1).all(dim=1).cpu()
