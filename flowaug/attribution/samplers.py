"""Relaxed Bernoulli masks for FIDO: the original concrete dropout and the simplified one.

Both draw a soft mask z in (0, 1) per pixel from logits theta (the map is p = sigmoid(theta)) and
uniform noise u:

- "concrete" (Gal et al. 2017, as FIDO uses it): z = sigmoid((log(p + eps) - log(1 - p + eps)
  + log(u + eps) - log(1 - u + eps)) / temperature), differentiated by autograd through p. Once
  p rounds to 0 or 1 in float32 (|theta| > ~17) the log-odds saturate at +-log(1/eps) and the
  gradient to theta vanishes; near there it is damped.
- "simplified" (Korsch et al., GCPR 2023): the log-odds are theta itself, z = sigmoid((theta +
  log(u + eps) - log(1 - u + eps)) / temperature), with the closed-form gradient
  dz/dtheta = sigmoid'(a) / temperature computed stably from |a| (a = the scaled logit), so no
  round trip through p loses it.

The forward values agree wherever p is representable; the samplers differ in their gradients.
"""
from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-7
SAMPLERS = ("concrete", "simplified")


def logistic_noise(u: Tensor) -> Tensor:
    """log(u / (1 - u)) of uniform noise ``u`` in [0, 1), kept finite by EPS."""
    return torch.log(u + EPS) - torch.log(1.0 - u + EPS)


def concrete_mask(theta: Tensor, u: Tensor, temperature: float) -> Tensor:
    """The original concrete-dropout relaxation (autograd through p = sigmoid(theta))."""
    p = torch.sigmoid(theta)
    return torch.sigmoid((torch.log(p + EPS) - torch.log(1.0 - p + EPS) + logistic_noise(u)) / temperature)


class _SimplifiedConcrete(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta: Tensor, noise: Tensor, temperature: float) -> Tensor:
        scaled = (theta + noise) / temperature
        ctx.save_for_backward(scaled)
        ctx.temperature = temperature
        return torch.sigmoid(scaled)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None]:
        (scaled,) = ctx.saved_tensors
        decay = torch.exp(-scaled.abs())
        return grad_output * decay / (1.0 + decay) ** 2 / ctx.temperature, None, None


def simplified_mask(theta: Tensor, u: Tensor, temperature: float) -> Tensor:
    """Simplified concrete dropout: theta as the log-odds, a closed-form stable gradient."""
    return _SimplifiedConcrete.apply(theta, logistic_noise(u), temperature)


def sample_masks(theta: Tensor, sampler: str, count: int, temperature: float,
                 generator: torch.Generator | None) -> Tensor:
    """``count`` soft masks per map: (count, *theta.shape) in (0, 1), noise from ``generator``."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    u = torch.rand((count, *theta.shape), generator=generator, device=theta.device, dtype=theta.dtype)
    relax = concrete_mask if sampler == "concrete" else simplified_mask
    return relax(theta.expand_as(u), u, temperature)
