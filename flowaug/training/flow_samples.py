"""Per-epoch PNG grids that show what the flow learned: reconstructions, nuisance swaps, prior samples."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torchvision.utils import save_image

from flowaug.augmentation import FlowAug, FlowAugParams
from flowaug.fileio import atomic_path
from flowaug.flow import DecoupledFlow


def finite_images(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Clamp (B,3,H,W) to [0, 1] with non-finite values replaced; return it and how many images had any."""
    bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
    return torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0), bad


def _with_headers(grid: torch.Tensor, row_heads: torch.Tensor, col_heads: torch.Tensor | None) -> torch.Tensor:
    """(R*C,3,H,W) grid -> rows prefixed by ``row_heads`` (R,...) and, if given, a top row of ``col_heads``."""
    rows, cols = len(row_heads), len(grid) // len(row_heads)
    body = torch.cat([row_heads[:, None], grid.view(rows, cols, *grid.shape[1:])], dim=1)
    if col_heads is not None:
        top = torch.cat([torch.ones_like(col_heads[:1]), col_heads])[None]
        body = torch.cat([top, body], dim=0)
    return body.flatten(0, 1)


@torch.no_grad()
def write_sample_grids(model: DecoupledFlow, x: torch.Tensor, out_dir: Path, epoch: int,
                       generator: torch.Generator, temperature: float = 0.7) -> int:
    """Write ``epoch_XXX_{recon,swap,prior}.png`` under ``out_dir``; return the count of non-finite decodes.

    ``x`` float (n,3,H,W) in [0, 1] on the model's device. recon: originals over
    reconstructions. swap: rows = structure source, columns = nuisance donor (the first
    column/row show them). prior: rows = structure source, columns = nuisance drawn from the
    prior at ``temperature`` (shared per column; base noise from ``generator``). Swaps and prior
    samples are made by :class:`~flowaug.FlowAug` with explicit parameters (guard off).
    """
    n = len(x)
    recon, bad_recon = finite_images(model.decode(model.encode(x)))
    rows = x.repeat_interleave(n, 0)  # image i of row i, n times
    column = torch.arange(n).repeat(n)
    everyone = torch.ones(n * n, dtype=torch.bool)
    frozen = copy.deepcopy(model)  # FlowAug freezes its flow; the model may be the one being trained
    swap_aug = FlowAug(frozen, p=1.0, mode="swap", guard=None)
    swap = swap_aug(rows, params=FlowAugParams(apply=everyone, no_donor=~everyone, donor=column * n + column))
    noise = torch.randn(n, model.config.nuisance_dim, generator=generator, device=generator.device).cpu()
    prior_aug = FlowAug(frozen, p=1.0, mode="prior", temperature=temperature, guard=None)
    prior = prior_aug(rows, params=FlowAugParams(apply=everyone, no_donor=~everyone, prior_noise=noise[column]))
    grids = {"recon": (torch.cat([x, recon]), n), "swap": (_with_headers(swap, x, x), n + 1),
             "prior": (_with_headers(prior, x, None), n + 1)}
    for name, (grid, nrow) in grids.items():
        with atomic_path(out_dir / f"epoch_{epoch:03d}_{name}.png") as tmp:
            save_image(grid.cpu(), tmp, format="png", nrow=nrow, padding=1)
    return bad_recon + swap_aug.fallback_count + prior_aug.fallback_count
