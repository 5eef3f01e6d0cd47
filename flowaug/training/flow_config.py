"""Settings of a flow pretraining run (:class:`PretrainConfig`, stored in every checkpoint), which of
them a resume may change, and the schedules they define."""
from __future__ import annotations

from dataclasses import dataclass

from flowaug.errors import FlowaugError
from flowaug.flow.config import IMAGE_END_CONDITIONINGS, FlowConfig
from flowaug.training.schedules import linear_ramp, warmup_cosine

# Fields that define the training trajectory: a resume must use the same values.
RESUME_MUST_MATCH = ("dataset", "preset", "image_size", "batch_size", "seed", "max_train_images",
                     "hflip", "ema", "val_fraction", "init_from")
# Schedule settings a user may change on purpose when resuming (e.g. a lower lr after a divergence,
# more epochs): the resume is then no longer the uninterrupted run, so the change is printed and
# recorded as a {"kind": "resume"} line in metrics.jsonl.
RESUME_MAY_CHANGE = ("epochs", "lr", "warmup_steps", "kl_warmup_steps", "kl_weight", "colour_anchor",
                     "pattern_anchor", "grad_clip", "amp")
# Random streams, mixed into the seed so no two uses share a generator state.
PERMUTATION_STREAM, STEP_STREAM, VALIDATION_STREAM, SAMPLES_STREAM, INIT_STREAM = range(5)


class TrainingDivergedError(FlowaugError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on (stored in every checkpoint).

    Attributes:
        dataset: a dataset spec (:mod:`flowaug.data.specs`: ``cifar10``, ``cifar100``, ``spurious``,
            ``spurious:PATH``, ``folder:PATH``, ``npz:PATH``); its train split trains, its val split validates.
        out: run directory.
        preset: flow preset name (:func:`flowaug.flow.get_preset`), built at ``image_size``.
        batch_size: global batch per step (split across DDP ranks; must divide by the world size).
        lr: peak Adam learning rate; linear warmup over ``warmup_steps`` then cosine to 0 at the
            end of ``epochs``.
        kl_warmup_steps: ramp the weight of the KL term of the loss linearly from 0 to 1 over
            this many steps (0 = always 1), so the flow learns to use the nuisance code before
            the KL term prices it; training losses logged during the ramp are below the
            true bits/dim (validation always reports the true negative ELBO).
        kl_weight: the KL term's weight after the ramp (beta); > 1 prices the information the
            nuisance code carries higher (beta-VAE, Higgins et al. 2017), so the code keeps less.
        colour_anchor: weight of :meth:`~flowaug.flow.model.DecoupledFlow.colour_anchor_error` in
            the loss (``"colour"`` presets only; 0 = the plain ELBO): ties the colour map's offsets
            to the image's regional mean colour, so the nuisance code carries the colour layout.
        pattern_anchor: weight of :meth:`~flowaug.flow.model.DecoupledFlow.pattern_anchor_error` in the
            loss (``"texture"`` presets and a dataset with foreground masks, e.g. ``spurious``; 0 = off):
            ties the pattern field to the background's brightness pattern, so the code carries it.
        grad_clip: max gradient norm (0 = no clipping).
        ema: EMA decay of the exported weights (0 = export the raw weights).
        hflip: random horizontal flips of training images.
        max_train_images: use only the first N training images (None = all).
        val_images: size of the fixed validation subset (the first images of the split).
        val_fraction: held-out fraction for sources without a test split.
        sample_images: images per side of the per-epoch sample grids.
        checkpoint_every: also checkpoint every N global steps (0 = only at epoch ends).
        log_every: write a step record to ``metrics.jsonl`` every N global steps.
        time_limit: minutes; stop after the step that exceeds it, writing a checkpoint.
        stop_after_steps: stop (with a checkpoint) once the global step reaches this value.
        max_consecutive_nonfinite: stop the run after this many skipped steps in a row.
        amp: autocast the loss (bf16 on CPU, fp16 + GradScaler on CUDA).
        resume: continue from ``out/checkpoint.pt``.
        threads: torch intra-op threads (None = torch's default).
        device: "auto" (CUDA if available, else CPU), "cpu" or "cuda".
        init_from: warm start from a flow (checkpoint path or registry name): every tensor whose
            name and shape match the new flow is copied, the others keep their initialisation
            (e.g. a new conditioning network starts at zero). None = train from scratch.
    """

    dataset: str
    out: str
    preset: str = "cpu-small"
    data_root: str | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    kl_warmup_steps: int = 0
    kl_weight: float = 1.0
    colour_anchor: float = 0.0
    pattern_anchor: float = 0.0
    grad_clip: float = 50.0
    ema: float = 0.999
    seed: int = 0
    image_size: int = 32
    hflip: bool = True
    max_train_images: int | None = None
    val_images: int = 1000
    val_fraction: float = 0.05
    sample_images: int = 8
    checkpoint_every: int = 1000
    log_every: int = 50
    time_limit: float | None = None
    stop_after_steps: int | None = None
    max_consecutive_nonfinite: int = 20
    amp: bool = False
    resume: bool = False
    threads: int | None = None
    device: str = "auto"
    init_from: str | None = None

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "image_size", "val_images", "sample_images", "log_every",
                    "max_consecutive_nonfinite")
        for name in positive:
            if getattr(self, name) < 1:
                raise FlowaugError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "kl_warmup_steps", "checkpoint_every", "grad_clip", "colour_anchor",
                     "pattern_anchor"):
            if not getattr(self, name) >= 0:
                raise FlowaugError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "kl_weight"):
            if not getattr(self, name) > 0:
                raise FlowaugError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_train_images", "stop_after_steps", "threads"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise FlowaugError(f"{name} must be > 0 (or left unset), got {value}")
        if self.time_limit is not None and not self.time_limit >= 0:
            raise FlowaugError(f"time_limit must be >= 0 minutes (or left unset), got {self.time_limit}")
        if not 0 <= self.ema < 1:
            raise FlowaugError(f"ema decay must be in [0, 1) (0 = off), got {self.ema}")
        if not 0 < self.val_fraction < 1:
            raise FlowaugError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise FlowaugError(f"device must be auto, cpu or cuda, got {self.device!r}")


def lr_at(step: int, total_steps: int, cfg: PretrainConfig) -> float:
    """Learning rate at global ``step``: linear warmup to ``cfg.lr``, then cosine to 0 at ``total_steps``."""
    return warmup_cosine(step, total_steps, cfg.lr, cfg.warmup_steps)


def kl_weight_at(step: int, cfg: PretrainConfig) -> float:
    """KL weight at global ``step``: linear from 0 to ``cfg.kl_weight`` over ``cfg.kl_warmup_steps``
    (``cfg.kl_weight`` without warm-up)."""
    return linear_ramp(step, cfg.kl_warmup_steps, cfg.kl_weight)


def check_anchors(cfg: PretrainConfig, flow: FlowConfig, has_masks: bool) -> None:
    """Refuse an anchor the flow or the data cannot serve, naming what would."""
    if cfg.colour_anchor and flow.conditioning not in IMAGE_END_CONDITIONINGS:
        raise FlowaugError(f"--colour-anchor needs a preset with colour conditioning (e.g. cpu-small-colour); "
                           f"{cfg.preset!r} has {flow.conditioning!r}")
    if cfg.pattern_anchor and flow.conditioning != "texture":
        raise FlowaugError(f"--pattern-anchor needs a preset with texture conditioning (cpu-small-texture); "
                           f"{cfg.preset!r} has {flow.conditioning!r}")
    if cfg.pattern_anchor and not has_masks:
        raise FlowaugError(f"--pattern-anchor needs foreground masks; {cfg.dataset!r} has none (use spurious or "
                           f"spurious:PATH)")
