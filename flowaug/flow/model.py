"""DecoupledFlow: a Glow-style multiscale flow over images conditioned on a nuisance code.

Model (after Wolf, Ma et al. ICLR 2021; docs/pretraining.md describes it):

- images x in [0, 1] are modelled in centred pixel space ``y = x - 0.5`` (no logit
  transform: decode is an affine-only chain, so an unclamped decode of a valid code stays
  close to [0, 1]);
- a posterior encoder gives q(g|x) = N(mean, std^2) over the nuisance code g (B, d);
  p(g) is a learned vector flow (:class:`~flowaug.flow.nuisance.NuisancePrior`);
- the image flow has ``levels`` levels of [squeeze, ``steps_per_level`` x (ActNorm,
  invertible 1x1 conv, affine coupling with FiLM(g))], then for all but the last level a
  learned split prior conditioned on the kept half and g, which standardises the half that
  leaves the flow; the coarsest latent gets a g-conditioned per-channel affine. The
  semantic latent ``eps`` (B, 3*H*W) concatenates the standardised pieces (finest first),
  so eps ~ N(0, I) under the model and encode -> decode is exact given g; with
  ``conditioning="colour"`` g instead enters only a smooth colour map at the image end
  (:class:`~flowaug.flow.layers.ColourField`) and the image flow is unconditioned;
- training maximises the ELBO with uniform dequantisation ``(x*255 + u)/256`` and one
  reparameterised sample of g; the KL term is estimated as ``log q(g|x) - log p(g)``.
"""
from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import normflows as nf
import torch
from torch import Tensor, nn

from flowaug.errors import CheckpointError
from flowaug.fileio import atomic_torch_save, read_checkpoint
from flowaug.flow.config import IMAGE_END_CONDITIONINGS, FlowConfig
from flowaug.flow.layers import ActNorm, AffineCoupling, ColourField, ContextAffine, FlowStep, PatternField, SplitPriorNet
from flowaug.flow.nuisance import NuisancePrior, PosteriorEncoder, standard_normal_log_prob
from flowaug.flow.precision import full_fp32
from flowaug.models.layers import luma
from flowaug.validation import check_float_images

CHECKPOINT_FORMAT = "flowaug-flow"
CHECKPOINT_VERSION = 1


class Latents(NamedTuple):
    """The two codes of an image batch.

    semantic: (B, 3*H*W) float32, all multiscale pieces flattened and concatenated (finest first).
    nuisance: (B, nuisance_dim) float32, the global code g.
    """

    semantic: Tensor
    nuisance: Tensor


class DecoupledFlow(nn.Module):
    """Normalizing flow whose latent splits into a semantic part and a nuisance code.

    All image arguments are float tensors (B,3,S,S) in [0, 1] with S = ``config.image_size``,
    on the model's device. Call :meth:`initialize` once on a fixed batch before training.
    """

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        d = config.nuisance_dim
        colour = config.conditioning in IMAGE_END_CONDITIONINGS
        self.encoder = PosteriorEncoder(d, config.encoder_channels, config.colour_grid if colour else 1)
        bounds = (config.scale_bound, config.shift_bound)
        self.prior = NuisancePrior(d, config.prior_layers, config.prior_hidden, *bounds)
        self.colour = ColourField(d, config.colour_grid) if colour else None
        self.pattern = PatternField(d) if config.conditioning == "texture" else None
        flow_d, coupling = (0, "film") if colour else (d, config.conditioning)
        self.squeeze = nf.flows.Squeeze()
        self.levels = nn.ModuleList()
        self.split_priors = nn.ModuleList()
        self.piece_shapes: list[tuple[int, int, int]] = []
        channels, size = 3, config.image_size
        for level in range(config.levels):
            channels, size = channels * 4, size // 2
            self.levels.append(nn.ModuleList(
                FlowStep(channels, config.hidden_channels, flow_d, *bounds, coupling)
                for _ in range(config.steps_per_level)))
            if level < config.levels - 1:
                half = channels // 2
                self.split_priors.append(AffineCoupling(
                    SplitPriorNet(half, 2 * (channels - half), flow_d), *bounds))
                self.piece_shapes.append((channels - half, size, size))
                channels = half
        self.top_prior = ContextAffine(channels, flow_d, *bounds)
        self.piece_shapes.append((channels, size, size))
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def num_dims(self) -> int:
        """Pixels x channels of one image, 3*S*S."""
        return 3 * self.config.image_size ** 2

    def _check_images(self, x: Tensor) -> None:
        check_float_images(x, "images", size=self.config.image_size)

    def _check_generator(self, generator: torch.Generator | None, device: torch.device) -> None:
        if generator is not None and generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device} but the model/data are on "
                             f"{device}; create it with torch.Generator(device={str(device)!r})")

    def _flow_code(self, g: Tensor) -> Tensor:
        """The code the image flow sees: g, or a zero-width code where only the colour map takes g."""
        return g if self.colour is None else g[:, :0]

    def _to_latent(self, y: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Centred image y (B,3,S,S) and code g -> (eps (B, 3*S*S), log|det d eps/dy| (B,))."""
        pieces, log_det = [], torch.zeros(y.shape[0], device=y.device, dtype=y.dtype)
        z = y if self.pattern is None else self.pattern.inverse(y, g)[0]
        if self.colour is not None:
            z, log_det = self.colour.inverse(z, g)
        g = self._flow_code(g)
        for level, steps in enumerate(self.levels):
            z, _ = self.squeeze.inverse(z)
            for step in steps:
                z, ld = step.inverse(z, g)
                log_det = log_det + ld
            if level < len(self.split_priors):
                z, ld = self.split_priors[level].inverse(z, g)
                log_det = log_det + ld
                z, piece = z.tensor_split([z.shape[1] // 2], dim=1)
                pieces.append(piece.flatten(1))
        z, ld = self.top_prior.inverse(z, g)
        pieces.append(z.flatten(1))
        return torch.cat(pieces, dim=1), log_det + ld

    def _to_data(self, eps: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Inverse of :meth:`_to_latent`: (B, 3*S*S), (B, d) -> (centred image (B,3,S,S),
        log|det dy/d eps| (B,))."""
        sizes = [c * h * w for c, h, w in self.piece_shapes]
        pieces = [p.reshape(-1, *shape) for p, shape in
                  zip(eps.split(sizes, dim=1), self.piece_shapes)]
        code, g = g, self._flow_code(g)
        z, log_det = self.top_prior(pieces[-1], g)
        for level in reversed(range(len(self.levels))):
            if level < len(self.split_priors):
                z, ld = self.split_priors[level](torch.cat([z, pieces[level]], dim=1), g)
                log_det = log_det + ld
            for step in reversed(self.levels[level]):
                z, ld = step(z, g)
                log_det = log_det + ld
            z, _ = self.squeeze(z)
        if self.colour is not None:
            z, ld = self.colour(z, code)
            log_det = log_det + ld
        return (z, log_det) if self.pattern is None else (self.pattern(z, code)[0], log_det)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Data-dependent ActNorm initialisation on ONE fixed batch x (B,3,S,S) in [0, 1].

        Call once before training (and before wrapping in DDP); afterwards no layer changes
        itself outside the optimiser. Calling it again re-initialises explicitly.
        """
        self._check_images(x)
        if x.shape[0] < 2:
            raise ValueError("initialize needs a batch of at least 2 images (ActNorm uses batch statistics)")
        actnorms = [m for m in self.modules() if isinstance(m, ActNorm)]
        for actnorm in actnorms:
            actnorm.arm_init()
        g, _ = self.encoder(x - 0.5)
        self._to_latent(x - 0.5, g)
        self.initialized.fill_(True)

    def _negative_elbo_bits(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """The two parts of the negative ELBO per image, in bits/dim, each (B,):
        ``-log p(x|g)`` (with dequantisation) and the KL estimate ``log q(g|x) - log p(g)``;
        and the code sample g (B, d) they used."""
        self._check_images(x)
        self._check_generator(generator, x.device)
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        y = (x * 255 + u) / 256 - 0.5
        mean, log_std = self.encoder(x - 0.5)
        noise = torch.randn(mean.shape, generator=generator, device=x.device, dtype=mean.dtype)
        g = mean + log_std.exp() * noise
        eps, log_det = self._to_latent(y, g)
        log_px_given_g = standard_normal_log_prob(eps) + log_det - self.num_dims * math.log(256)
        kl = standard_normal_log_prob(noise) - log_std.sum(1) - self.prior.log_prob(g)
        to_bits = self.num_dims * math.log(2)
        return -log_px_given_g / to_bits, kl / to_bits, g

    def bits_per_dim(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Negative ELBO of each image in bits/dim, (B,) float32.

        Uses uniform dequantisation ``(x*255 + u)/256`` and one sample g ~ q(g|x); all noise
        is drawn from ``generator`` (on the data's device) when given.
        """
        with full_fp32(x.device.type):
            reconstruction, kl, _ = self._negative_elbo_bits(x, generator)
        return reconstruction + kl

    def loss(self, x: Tensor, generator: torch.Generator | None = None, kl_weight: float = 1.0,
             colour_anchor: float = 0.0, pattern_anchor: float = 0.0, masks: Tensor | None = None) -> Tensor:
        """Training loss (scalar): batch mean of ``-log p(x|g) + kl_weight * KL`` in bits/dim,
        plus ``colour_anchor`` times :meth:`colour_anchor_error` (``"colour"`` and ``"texture"``
        flows) and ``pattern_anchor`` times :meth:`pattern_anchor_error` (``"texture"`` flows; needs
        the foreground ``masks`` (B,1,S,S) in [0, 1], 1 = object).

        ``kl_weight = 1`` is the negative ELBO (:meth:`bits_per_dim`). A weight ramped up from 0
        early in training (KL warm-up, Bowman et al. 2016) keeps the flow from learning to
        ignore the nuisance code before the code carries information (posterior collapse).
        """
        if not bool(self.initialized):
            raise RuntimeError("DecoupledFlow.initialize(x) must be called on a fixed batch "
                               "before training (data-dependent ActNorm init)")
        if colour_anchor and self.colour is None:
            raise ValueError(f"colour_anchor needs a flow with conditioning='colour' or 'texture', this one has "
                             f"{self.config.conditioning!r}")
        if pattern_anchor and (self.pattern is None or masks is None):
            raise ValueError(f"pattern_anchor needs a flow with conditioning='texture' (this one has "
                             f"{self.config.conditioning!r}) and the images' foreground masks")
        reconstruction, kl, g = self._negative_elbo_bits(x, generator)
        loss = (reconstruction + kl_weight * kl).mean()
        if colour_anchor:
            loss = loss + colour_anchor * self.colour_anchor_error(x, g)
        return loss + pattern_anchor * self.pattern_anchor_error(x, g, masks) if pattern_anchor else loss

    def colour_anchor_error(self, x: Tensor, g: Tensor) -> Tensor:
        """Mean squared distance (scalar) between the colour map's offsets at its grid points
        under codes g (B, d) and the mean colour of x (B,3,S,S) in [0, 1] over the matching
        S/K x S/K cells (centred). Added to the loss it makes the code carry where which colour
        is (the ELBO alone is indifferent: the Glow can encode those few numbers as cheaply)."""
        cell = self.config.image_size // self.config.colour_grid
        target = nn.functional.avg_pool2d(x - 0.5, cell)
        return (self.colour.grid_shifts(g) - target).pow(2).mean()

    def pattern_anchor_error(self, x: Tensor, g: Tensor, masks: Tensor) -> Tensor:
        """Mean squared distance (scalar) over background pixels (``masks`` (B,1,S,S) 0, grown by 2
        px) between the pattern under codes g (B, d) and x's background brightness minus its local
        background mean (a 9 x 9 window). Added to the loss it makes the code carry the background's
        pattern, which the pattern field can then draw under another image's code."""
        background = 1.0 - nn.functional.max_pool2d(masks, 5, stride=1, padding=2)
        grey = luma(x)
        local_mean = (nn.functional.avg_pool2d(grey * background, 9, 1, 4, count_include_pad=False)
                      / nn.functional.avg_pool2d(background, 9, 1, 4, count_include_pad=False).clamp_min(1e-3))
        error = (self.pattern.pattern(g, x.shape[2:]) - (grey - local_mean)).pow(2) * background
        return error.sum() / background.sum().clamp_min(1.0)

    def forward(self, x: Tensor, generator: torch.Generator | None = None, kl_weight: float = 1.0,
                colour_anchor: float = 0.0, pattern_anchor: float = 0.0, masks: Tensor | None = None) -> Tensor:
        """Same as :meth:`loss`, so a DDP-wrapped flow trains with ``ddp(x)``; codes come from :meth:`encode`."""
        return self.loss(x, generator, kl_weight, colour_anchor, pattern_anchor, masks)

    def encode(self, x: Tensor, validate: bool = True, with_log_det: bool = False) -> Latents | tuple[Latents, Tensor]:
        """Deterministic codes of x (B,3,S,S) in [0,1]: g = posterior mean, no dequantisation noise.

        ``validate=False`` skips the input checks, for callers that already made them (FlowAug,
        every training step). ``with_log_det`` also returns log|det dx/d eps| at x (B,), in nats:
        the same quantity :meth:`decode` returns, so the two compare (see FlowAug's guard)."""
        if validate:
            self._check_images(x)
        with full_fp32(x.device.type):
            g, _ = self.encoder(x - 0.5)
            eps, log_det = self._to_latent(x - 0.5, g)
        return (Latents(eps, g), -log_det) if with_log_det else Latents(eps, g)

    def encode_nuisance(self, x: Tensor, validate: bool = True) -> Tensor:
        """Posterior-mean nuisance codes (B, d) of x (B,3,S,S) in [0,1]; cheaper than :meth:`encode`
        (only the posterior encoder runs). ``validate`` as in :meth:`encode`."""
        if validate:
            self._check_images(x)
        with full_fp32(x.device.type):
            return self.encoder(x - 0.5)[0]

    def decode(self, latents: Latents, with_log_det: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Images (B,3,S,S) from codes; NOT clamped (exact inverse of :meth:`encode`).

        ``with_log_det`` also returns log|det dx/d eps| (B,) in nats: how much the decode expands
        volume. Under the model, log p(x|g) = log N(eps; 0, I) - that value, so for one ``eps`` a
        larger value means a less likely image."""
        semantic, nuisance = latents
        n, d = self.num_dims, self.config.nuisance_dim
        if semantic.dim() != 2 or semantic.shape[1] != n:
            raise ValueError(f"semantic latent must have shape (B, {n}), got {tuple(semantic.shape)}")
        if nuisance.dim() != 2 or nuisance.shape[1] != d:
            raise ValueError(f"nuisance code must have shape (B, {d}), got {tuple(nuisance.shape)}")
        if semantic.shape[0] != nuisance.shape[0]:
            raise ValueError(f"semantic and nuisance batch sizes differ: "
                             f"{semantic.shape[0]} vs {nuisance.shape[0]}")
        with full_fp32(semantic.device.type):
            y, log_det = self._to_data(semantic, nuisance)
        return (y + 0.5, log_det) if with_log_det else y + 0.5

    @property
    def code_enters_image_end_only(self) -> bool:
        """True for ``conditioning="colour"`` and ``"texture"``: the code sets only the colour map (and
        the pattern) at the image end, so decoding x's semantic latent under a new code is
        :meth:`recode` (the Glow cancels)."""
        return self.colour is not None

    def recode(self, x: Tensor, own: Tensor, new: Tensor) -> tuple[Tensor, Tensor]:
        """``decode(Latents(encode(x).semantic, new))`` of a colour or texture flow without running the
        Glow: x's image-end maps under its code ``own`` (B, d) undone (pattern, then colour map), the
        maps under ``new`` (B, d) applied.

        x: (B,3,S,S) float in [0, 1]. Returns the images (B,3,S,S), NOT clamped, and the change of
        the decode's log|det dx/d eps| (B,) in nats (new code minus own), which is the log-determinant
        of this map. Exact where the full decode carries the Glow's round-trip error (at most 2.3e-5
        on 256 CIFAR-10 test images with ``cifar10``)."""
        if self.colour is None:
            raise ValueError("recode needs a flow whose code enters only its image-end maps "
                             "(conditioning='colour' or 'texture'); decode the semantic latent for other flows")
        with full_fp32(x.device.type):
            y = x - 0.5 if self.pattern is None else self.pattern.inverse(x - 0.5, own)[0]
            neutral, undo_log_det = self.colour.inverse(y, own)
            y, apply_log_det = self.colour(neutral, new)
            y = y if self.pattern is None else self.pattern(y, new)[0]
        return y + 0.5, apply_log_det + undo_log_det

    def sample_nuisance(self, n: int, temperature: float = 1.0,
                        generator: torch.Generator | None = None) -> Tensor:
        """n codes (n, d) from the learned prior p(g), base noise scaled by ``temperature``.

        The base noise is drawn on ``generator``'s device (a CPU generator works for a CUDA
        model, so one seed gives the same codes on every device) and moved to the model.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        device = self.initialized.device
        noise_device = device if generator is None else generator.device
        u = torch.randn(n, self.config.nuisance_dim, generator=generator, device=noise_device)
        return self.nuisance_from_noise(u.to(device) * temperature)

    def nuisance_from_noise(self, u: Tensor) -> Tensor:
        """Codes (n, d) of the learned prior from its base noise u (n, d) (N(0, I) scaled by a temperature)."""
        with full_fp32(u.device.type):
            return self.prior.transform(u)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: Any = "cpu") -> DecoupledFlow:
        """Load a ``flowaug-flow`` checkpoint (``weights_only=True``); returned in eval mode.

        Extra keys (e.g. a trainer's ``train_state``) are ignored; the checkpoint's ``meta``
        dict is attached as ``model.meta``.

        Raises :class:`~flowaug.errors.CheckpointError` for a missing or unreadable file, a wrong
        format or version, an invalid config, or a state dict that does not fit the config.
        """
        ckpt = read_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "flow", map_location)
        try:
            config = FlowConfig.from_dict(ckpt["config"])
            model = cls(config)
            model.load_state_dict(ckpt["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{os.fspath(path)!r}: config and weights do not form a valid "
                                  f"DecoupledFlow ({type(error).__name__}: {str(error)[:300]})") from error
        model.meta = ckpt.get("meta", {})
        return model.eval()


def save_flow(model: DecoupledFlow, path: str | os.PathLike, meta: dict | None = None) -> None:
    """Atomically write ``model`` as a ``flowaug-flow`` checkpoint (weights on CPU).

    ``meta`` holds plain values (str, numbers, bools, lists, dicts) describing the run.
    """
    if not isinstance(model, DecoupledFlow):
        raise TypeError(f"save_flow expects a DecoupledFlow (unwrap DDP first), got {type(model).__name__}")
    atomic_torch_save({
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }, path)
