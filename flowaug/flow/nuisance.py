"""The nuisance code g: posterior encoder q(g|x) and learned prior p(g)."""
from __future__ import annotations

import math

import normflows as nf
import torch
from torch import Tensor, nn

from flowaug.flow.layers import AffineCoupling, MLPNet, soft_clamp

LOG_STD_BOUND = 7.0  # posterior std stays in [exp(-7), exp(7)]


def standard_normal_log_prob(u: Tensor) -> Tensor:
    """log N(u; 0, I) summed over all but the batch dim: (B, ...) -> (B,)."""
    return -0.5 * (u.flatten(1).pow(2).sum(1) + u[0].numel() * math.log(2 * math.pi))


class PosteriorEncoder(nn.Module):
    """q(g|x) = N(mean, diag(std^2)) from a small CNN with average pooling to a ``pool`` x ``pool`` grid.

    Input: centred images (B,3,H,W) in [-0.5, 0.5], any H, W. Output: ``(mean, log_std)``,
    each (B, d); ``log_std`` is bounded to ``+-LOG_STD_BOUND``. Global pooling (``pool=1``)
    makes g a summary of spatially uniform properties (colour cast, illumination, background
    tone); a coarse grid lets it say where a colour is (for a :class:`~flowaug.flow.layers.ColourField` of that grid).
    """

    def __init__(self, nuisance_dim: int, channels: int, pool: int = 1):
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(pool), nn.Flatten())
        self.head = nn.Linear(4 * c * pool * pool, 2 * nuisance_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = self.head(self.features(x)).chunk(2, dim=1)
        return mean, soft_clamp(raw, LOG_STD_BOUND)


class NuisancePrior(nn.Module):
    """Learned prior p(g): a RealNVP-style vector flow over a N(0, I) base (normflows' shape).

    ``layers`` bounded affine couplings alternate halves (normflows ``Permute(mode="swap")``);
    a final per-dimension affine (``AffineConstFlow``) lets the prior shrink and shift as a
    whole to the region the posterior means occupy. Starts as N(0, I).
    """

    def __init__(self, dim: int, layers: int, hidden: int, scale_bound: float, shift_bound: float):
        super().__init__()
        flows: list[nf.flows.Flow] = []
        for _ in range(layers):
            flows.append(AffineCoupling(MLPNet(dim // 2, 2 * (dim - dim // 2), hidden),
                                        scale_bound, shift_bound))
            flows.append(nf.flows.Permute(dim, mode="swap"))
        flows.append(nf.flows.AffineConstFlow((dim,)))
        self.flows = nn.ModuleList(flows)
        self.dim = dim

    def log_prob(self, g: Tensor) -> Tensor:
        """log p(g) for g (B, d) -> (B,)."""
        log_det = torch.zeros(g.shape[0], device=g.device, dtype=g.dtype)
        for flow in reversed(self.flows):
            g, ld = flow.inverse(g)
            log_det = log_det + ld
        return standard_normal_log_prob(g) + log_det

    def transform(self, u: Tensor) -> Tensor:
        """Map base samples u (B, d) to codes g (B, d)."""
        for flow in self.flows:
            u, _ = flow(u)
        return u
