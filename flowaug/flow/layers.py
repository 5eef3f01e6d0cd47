"""Flow pieces of the DecoupledFlow, in normflows' shape.

Direction convention (normflows'): ``forward`` maps latent -> data, ``inverse`` maps
data -> latent; both return ``(output, log_det)`` where ``log_det`` is the log absolute
Jacobian determinant of that direction, shape (B,) or a scalar broadcastable to (B,).
Conditioned pieces take the nuisance code as ``context`` (B, d).
"""
from __future__ import annotations

import warnings

import normflows as nf
import torch
from torch import Tensor, nn
from torch.nn import functional as F


def zero_init(*layers: nn.Module) -> None:
    """Zero the weight and bias of each layer (a coupling that starts as the identity)."""
    for layer in layers:
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


class CodeLinear(nn.Linear):
    """Zero-initialised linear map of the nuisance code, (B, d) -> (B, out).

    With ``d = 0`` (an image flow the code never enters, ``conditioning="colour"``) it is a
    learned constant, its bias; the state-dict names match a ``d > 0`` map, so a warm start
    from a conditioned flow keeps the bias (the conditioned flow at g = 0).
    """

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


def soft_clamp(raw: Tensor, bound: float) -> Tensor:
    """``bound * tanh(raw / bound)``: ~``raw`` near 0, never beyond ``+-bound``, smooth."""
    return bound * torch.tanh(raw / bound)


class ActNorm(nf.flows.AffineConstFlow):
    """Per-channel affine map (normflows' ``AffineConstFlow``) with an explicit data-dependent init.

    Unlike ``normflows.flows.ActNorm`` it never initialises itself on the first batch it sees:
    the owning model arms it with :meth:`arm_init`, and the next ``inverse`` call (data -> latent)
    sets ``s, t`` so that its output has zero mean and unit variance per channel. The
    ``initialized`` buffer travels in the state dict, so loaded and DDP-broadcast copies agree.
    """

    def __init__(self, num_channels: int):
        super().__init__((num_channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self._armed = False

    def arm_init(self) -> None:
        """Make the next ``inverse`` call initialise ``s, t`` from its input batch."""
        self._armed = True

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if self._armed:
            with torch.no_grad():
                self.t.copy_(z.mean(dim=(0, 2, 3), keepdim=True))
                self.s.copy_(torch.log(z.std(dim=(0, 2, 3), keepdim=True) + 1e-6))
                self.initialized.fill_(True)
            self._armed = False
        return super().inverse(z)


class InvertibleConv1x1(nf.flows.Invertible1x1Conv):
    """normflows' LU-parametrised invertible 1x1 conv that caches its inverse weight.

    normflows re-inverts L and U in float64 on every latent -> data call; here the inverse is
    reused while no gradient is needed and the parameters are unchanged (keyed on their
    version counters, storage and device), so repeated decoding in eval costs one inversion.
    """

    def __init__(self, num_channels: int):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.lu is deprecated")
            super().__init__(num_channels, use_lu=True)
        self._inverse_cache: tuple[tuple, Tensor] | None = None

    def _assemble_W(self, inverse: bool = False) -> Tensor:
        if not inverse or torch.is_grad_enabled():
            return super()._assemble_W(inverse)
        tensors = (self.L, self.U, self.log_S, self.P, self.sign_S)
        key = tuple((t._version, t.data_ptr(), t.device, t.dtype) for t in tensors)
        if self._inverse_cache is None or self._inverse_cache[0] != key:
            self._inverse_cache = (key, super()._assemble_W(inverse=True))
        return self._inverse_cache[1]


class AffineCoupling(nf.flows.Flow):
    """Conditioned affine coupling with bounded scale and shift, on channel dim 1 of (B,C,...) tensors.

    The input splits into ``a = x[:, :C//2]`` (kept) and ``b = x[:, C//2:]``;
    ``raw_shift, raw_scale = net(a, context).chunk(2, 1)``, ``shift = soft_clamp(raw_shift,
    shift_bound)`` and ``log_scale = soft_clamp(raw_scale, scale_bound)``. The bounds keep
    every step's gain and offset finite in both directions, whatever the code.
    latent -> data (``forward``): ``b = b_z * exp(log_scale) + shift``;
    data -> latent (``inverse``): ``b_z = (b - shift) * exp(-log_scale)``.
    ``net`` maps (B, C//2, ...) and the context to (B, 2*(C - C//2), ...).
    """

    def __init__(self, net: nn.Module, scale_bound: float, shift_bound: float):
        super().__init__()
        self.net = net
        self.scale_bound = scale_bound
        self.shift_bound = shift_bound

    def _params(self, a: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        shift, raw = self.net(a, context).chunk(2, dim=1)
        return soft_clamp(shift, self.shift_bound), soft_clamp(raw, self.scale_bound)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        a, b = z.tensor_split([z.shape[1] // 2], dim=1)
        shift, log_scale = self._params(a, context)
        return torch.cat([a, b * log_scale.exp() + shift], dim=1), log_scale.flatten(1).sum(1)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        a, b = x.tensor_split([x.shape[1] // 2], dim=1)
        shift, log_scale = self._params(a, context)
        return torch.cat([a, (b - shift) * (-log_scale).exp()], dim=1), -log_scale.flatten(1).sum(1)


class ContextAffine(nf.flows.Flow):
    """Per-channel affine map whose bounded shift and log-scale are a linear function of the context.

    Used as the g-conditioned prior of the coarsest latent: ``eps = (z - mu(g)) * exp(-log_s(g))``.
    Input (B,C,H,W), context (B,d). Starts as the identity (zero-initialised weights).
    """

    def __init__(self, num_channels: int, context_dim: int, scale_bound: float, shift_bound: float):
        super().__init__()
        self.linear = CodeLinear(context_dim, 2 * num_channels)
        self.scale_bound = scale_bound
        self.shift_bound = shift_bound

    def _params(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        shift, raw = self.linear(context)[:, :, None, None].chunk(2, dim=1)
        log_scale = soft_clamp(raw, self.scale_bound)
        return soft_clamp(shift, self.shift_bound), log_scale, log_scale.flatten(1).sum(1) * (z.shape[2] * z.shape[3])

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale, log_det = self._params(z, context)
        return z * log_scale.exp() + shift, log_det

    def inverse(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale, log_det = self._params(x, context)
        return (x - shift) * (-log_scale).exp(), -log_det


class ColourField(nf.flows.Flow):
    """Smooth per-pixel colour map set by the code: the only way g enters a ``"colour"`` flow.

    g (B,d) -> a zero-initialised linear map -> (B,6,K,K) -> bilinear upsampling to the image
    (B,6,H,W) -> per pixel and channel a log-scale (bound ``scale_bound``) and a shift (bound
    ``shift_bound``, centred pixel units). latent -> data (``forward``): ``y = u * exp(log_s) + t``;
    data -> latent (``inverse``): ``u = (y - t) * exp(-log_s)``. A K x K field upsampled
    bilinearly changes slowly across the image, so a new code recolours regions (background,
    object) but cannot draw or erase an edge; starts as the identity.
    """

    def __init__(self, context_dim: int, grid: int, scale_bound: float = 1.0, shift_bound: float = 1.0):
        super().__init__()
        self.grid = grid
        self.linear = CodeLinear(context_dim, 6 * grid * grid)
        self.scale_bound = scale_bound
        self.shift_bound = shift_bound

    def _grid_values(self, context: Tensor) -> Tensor:
        """Unbounded log-scales and shifts at the grid points, (B,6,K,K)."""
        return self.linear(context).view(-1, 6, self.grid, self.grid)

    def _params(self, y: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        raw = F.interpolate(self._grid_values(context), size=y.shape[2:], mode="bilinear", align_corners=False)
        log_scale, shift = raw.chunk(2, dim=1)
        return soft_clamp(log_scale, self.scale_bound), soft_clamp(shift, self.shift_bound)

    def grid_shifts(self, context: Tensor) -> Tensor:
        """The map's offsets at its K x K grid points, (B,3,K,K), centred pixel units."""
        return soft_clamp(self._grid_values(context)[:, 3:], self.shift_bound)

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._params(z, context)
        return z * log_scale.exp() + shift, log_scale.flatten(1).sum(1)

    def inverse(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        log_scale, shift = self._params(x, context)
        return (x - shift) * (-log_scale).exp(), -log_scale.flatten(1).sum(1)


class PatternField(nf.flows.Flow):
    """A brightness pattern set by the code, added at the image end: how g draws background texture
    in a ``"texture"`` flow (after its :class:`ColourField`).

    g (B,d) -> a linear map to (B,C,4,4) -> three (2x upsampling, 3x3 conv, ReLU) stages -> a
    zero-initialised 3x3 conv -> one channel, bounded to +-``bound`` by a soft clamp, resized to
    the image and added to every colour channel. latent -> data (``forward``): ``y = u + P(g)``;
    data -> latent (``inverse``): ``u = y - P(g)``; volume-preserving (log-det 0). Unlike the
    colour map it can draw stripes, checks or dots of any phase; starts as the identity.

    Only the last conv starts at zero: the code map keeps PyTorch's default init. With both at
    zero no gradient reaches the code at the start, a saddle: fitted to the pattern anchor, such a
    field explained 0.48 of a four-phase stripe pattern where this one explains 0.99
    (``benchmarks/pattern_anchor_fit.py``).
    """

    def __init__(self, context_dim: int, channels: int = 32, bound: float = 0.25):
        super().__init__()
        self.channels, self.bound = channels, bound
        self.linear = nn.Linear(context_dim, channels * 16)
        stages: list[nn.Module] = []
        for _ in range(3):
            stages += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1),
                       nn.ReLU()]
        self.body = nn.Sequential(*stages, nn.Conv2d(channels, 1, 3, padding=1))
        zero_init(self.body[-1])

    def pattern(self, context: Tensor, size: tuple[int, int]) -> Tensor:
        """The pattern (B,1,H,W) in +-``bound`` (centred pixel units) for codes (B,d)."""
        field = self.body(self.linear(context).view(-1, self.channels, 4, 4))
        if field.shape[2:] != size:
            field = F.interpolate(field, size=size, mode="bilinear", align_corners=False)
        return soft_clamp(field, self.bound)

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        return z + self.pattern(context, z.shape[2:]), z.new_zeros(z.shape[0])

    def inverse(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        return x - self.pattern(context, x.shape[2:]), x.new_zeros(x.shape[0])


class FiLMConvNet(nn.Module):
    """Coupling network: conv3x3 -> FiLM(g) -> ReLU -> conv1x1 -> FiLM(g) -> ReLU -> conv3x3.

    (B,in,H,W) and context g (B,d) -> (B,out,H,W). FiLM scales and shifts the hidden
    activations by ``(1 + gamma(g), beta(g))``, spatially constant. The last conv is
    zero-initialised so the coupling starts as the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int, context_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 1)
        self.conv3 = nn.Conv2d(hidden, out_channels, 3, padding=1)
        self.film = CodeLinear(context_dim, 4 * hidden)
        zero_init(self.conv3)

    def forward(self, a: Tensor, context: Tensor) -> Tensor:
        gamma1, beta1, gamma2, beta2 = self.film(context)[:, :, None, None].chunk(4, dim=1)
        h = F.relu(torch.addcmul(beta1, self.conv1(a), 1 + gamma1))
        h = F.relu(torch.addcmul(beta2, self.conv2(h), 1 + gamma2))
        return self.conv3(h)


class ShiftConvNet(nn.Module):
    """Coupling network conditioned by a shift only (Wolf): conv3x3 -> + W g -> ReLU -> conv1x1 -> ReLU -> conv3x3.

    (B,in,H,W) and context g (B,d) -> (B,out,H,W). The code adds a spatially constant
    per-channel bias after the first hidden convolution and never multiplies activations,
    so it cannot amplify structure. The last conv and the code's map are zero-initialised.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int, context_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 1)
        self.conv3 = nn.Conv2d(hidden, out_channels, 3, padding=1)
        self.shift = CodeLinear(context_dim, hidden)
        zero_init(self.conv3)

    def forward(self, a: Tensor, context: Tensor) -> Tensor:
        h = F.relu(self.conv1(a) + self.shift(context)[:, :, None, None])
        return self.conv3(F.relu(self.conv2(h)))


CONDITIONED_NETS: dict[str, type[nn.Module]] = {"film": FiLMConvNet, "shift": ShiftConvNet}


class SplitPriorNet(nn.Module):
    """Glow's learned split prior, conditioned on g: conv3x3(kept half) + linear(g) bias.

    (B,in,H,W), context (B,d) -> (B,out,H,W); zero-initialised (starts as N(0, I)).
    """

    def __init__(self, in_channels: int, out_channels: int, context_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.linear = CodeLinear(context_dim, out_channels)
        zero_init(self.conv)

    def forward(self, a: Tensor, context: Tensor) -> Tensor:
        return self.conv(a) + self.linear(context)[:, :, None, None]


class MLPNet(nn.Module):
    """Unconditional coupling network for vectors: (B,in) -> (B,out), two hidden ReLU layers.

    ``context`` is accepted for the coupling interface and must be ``None``.
    The last layer is zero-initialised.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                                    nn.Linear(hidden, hidden), nn.ReLU(),
                                    nn.Linear(hidden, out_features))
        zero_init(self.layers[-1])

    def forward(self, a: Tensor, context: None = None) -> Tensor:
        return self.layers(a)


class FlowStep(nf.flows.Flow):
    """One Glow step: ActNorm -> invertible 1x1 conv -> g-conditioned affine coupling (data -> latent).

    ``conditioning`` names the coupling network (a key of :data:`CONDITIONED_NETS`)."""

    def __init__(self, channels: int, hidden: int, context_dim: int, scale_bound: float,
                 shift_bound: float, conditioning: str = "film"):
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.conv = InvertibleConv1x1(channels)
        half = channels // 2
        net = CONDITIONED_NETS[conditioning](half, 2 * (channels - half), hidden, context_dim)
        self.coupling = AffineCoupling(net, scale_bound, shift_bound)

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        z, log_det = self.coupling(z, context)
        z, ld = self.conv(z)
        z, ld2 = self.actnorm(z)
        return z, log_det + ld + ld2

    def inverse(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        x, log_det = self.actnorm.inverse(x)
        x, ld = self.conv.inverse(x)
        x, ld2 = self.coupling.inverse(x, context)
        return x, log_det + ld + ld2
