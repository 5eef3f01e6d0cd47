"""FlowConfig: the DecoupledFlow architecture as data, plus named presets."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

CONDITIONINGS = ("film", "shift", "colour", "texture")
IMAGE_END_CONDITIONINGS = ("colour", "texture")  # g enters only maps at the image end; the Glow is unconditioned


@dataclass(frozen=True)
class FlowConfig:
    """Architecture of a :class:`~flowaug.flow.model.DecoupledFlow`.

    Attributes:
        image_size: height = width of the RGB images the flow models; divisible by ``2**levels``.
        levels: multiscale levels (each starts with a squeeze; all but the last end with a split).
        steps_per_level: flow steps (ActNorm, invertible 1x1 conv, affine coupling) per level.
        hidden_channels: width of the coupling networks.
        nuisance_dim: dimension d of the nuisance code g.
        encoder_channels: base width of the posterior encoder q(g|x) (CNN, widths c, 2c, 4c).
        prior_layers: affine couplings of the learned vector-flow prior p(g).
        prior_hidden: width of the MLPs inside the prior's couplings.
        scale_bound: bound c of every coupling log-scale, ``log s = c * tanh(raw / c)``; it bounds
            the per-step gain to ``exp(c)`` in both directions so off-manifold decodes stay finite.
        shift_bound: bound of every coupling shift (same soft clamp), in ActNorm-normalised units.
        conditioning: how g enters every coupling network: ``"film"`` (scale and shift of both
            hidden layers, FiLM) or ``"shift"`` (a linear map of g added as a per-channel bias after
            the first hidden convolution, as Wolf does: g cannot multiply structure) or
            ``"colour"`` (g enters only a smooth per-pixel colour map at the image end,
            :class:`~flowaug.flow.layers.ColourField`; the image flow is unconditioned, its
            couplings FiLM nets of a zero-width code, so a new code cannot change an edge) or
            ``"texture"`` (the colour map, then a brightness pattern drawn from g and added at the image
            end, :class:`~flowaug.flow.layers.PatternField`: a new code can change the background's
            pattern as well as its colours).
        colour_grid: side K of the colour map's K x K grid (and of the posterior encoder's
            pooling grid) of ``"colour"`` and ``"texture"``; unused by the other conditionings.
    """

    image_size: int = 32
    levels: int = 3
    steps_per_level: int = 6
    hidden_channels: int = 96
    nuisance_dim: int = 32
    encoder_channels: int = 32
    prior_layers: int = 4
    prior_hidden: int = 128
    scale_bound: float = 2.0
    shift_bound: float = 8.0
    conditioning: str = "film"
    colour_grid: int = 4

    def __post_init__(self) -> None:
        for name in ("image_size", "levels", "steps_per_level", "hidden_channels",
                     "nuisance_dim", "encoder_channels", "prior_layers", "prior_hidden", "colour_grid"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FlowConfig.{name} must be a positive int, got {value!r}")
        if self.nuisance_dim < 2:
            raise ValueError(f"FlowConfig.nuisance_dim must be >= 2 (the prior couples two halves), "
                             f"got {self.nuisance_dim}")
        if self.image_size % (2 ** self.levels):
            raise ValueError(f"FlowConfig.image_size={self.image_size} must be divisible by "
                             f"2**levels={2 ** self.levels} (one squeeze per level)")
        for name, limit in (("scale_bound", 10.0), ("shift_bound", 100.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= limit:
                raise ValueError(f"FlowConfig.{name} must be a number in (0, {limit:g}], got {value!r}")

        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"FlowConfig.conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON- and ``weights_only``-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlowConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"FlowConfig.from_dict expects a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown FlowConfig keys {unknown}; valid keys: {sorted(known)}")
        return cls(**d)


PRESETS: dict[str, FlowConfig] = {
    "tiny": FlowConfig(levels=2, steps_per_level=2, hidden_channels=16, nuisance_dim=4,
                       encoder_channels=8, prior_layers=2, prior_hidden=16),
    "tiny-texture": FlowConfig(levels=2, steps_per_level=2, hidden_channels=16, nuisance_dim=4, encoder_channels=8,
                               prior_layers=2, prior_hidden=16, conditioning="texture"),
    "cpu-small": FlowConfig(),
    "cpu-small-shift": FlowConfig(conditioning="shift"),
    "cpu-small-colour": FlowConfig(conditioning="colour"),
    "cpu-small-texture": FlowConfig(conditioning="texture"),
    "gpu-base": FlowConfig(levels=3, steps_per_level=16, hidden_channels=256, nuisance_dim=64,
                           encoder_channels=64, prior_layers=6, prior_hidden=256),
}


def get_preset(name: str, **overrides: Any) -> FlowConfig:
    """The preset ``name`` with fields replaced by ``overrides`` (e.g. ``image_size=64``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown flow preset {name!r}; choose one of {sorted(PRESETS)}")
    return FlowConfig.from_dict({**PRESETS[name].to_dict(), **overrides})
