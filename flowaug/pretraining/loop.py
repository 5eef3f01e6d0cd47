"""The flow pretraining engine: ``pretrain(PretrainConfig) -> Path``.

One loop serves the CLI, the recipe and ``torchrun`` (DDP). Resume with unchanged settings
is exact by construction: every random draw comes from a generator seeded by the run seed and a
position (epoch for the data order, global step and rank for flips and the flow's
dequantisation/posterior noise), the learning rate is a function of the global step, and
a checkpoint holds everything else (model, optimizer, grad scaler, EMA, counters).

``--amp`` wraps the loss in ``torch.autocast`` (bf16 on CPU, fp16 with a GradScaler on
CUDA). It is meant for GPUs: on CPU bf16 is usually slower. The loss comes back fp32, but the
convolutions inside the couplings (and so their log-scales) run in low precision; on the
``tiny`` preset the bf16 loss differs from fp32 by about 0.005 bits/dim. Non-finite steps are
skipped and counted either way, so an fp16 overflow costs a step, not the run.

Files under ``out``: ``checkpoint.pt`` (latest, loadable by ``DecoupledFlow.from_checkpoint``),
``flow.pt`` (inference export, EMA weights), ``config.json``, ``metrics.jsonl`` and
``samples/epoch_XXX_{recon,swap,prior}.png``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from flowaug.data.base import to_float_chw
from flowaug.errors import CheckpointError, FlowaugError
from flowaug.fileio import atomic_torch_save, atomic_write_text, claim_run_folder, read_checkpoint
from flowaug.augmentation.flowaug import GUARD_QUANTILE, FlowAug
from flowaug.flow import DecoupledFlow, FlowConfig, get_preset, save_flow
from flowaug.flow.model import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from flowaug.pretraining.advice import short_run_advice
from flowaug.pretraining.datasets import load_pretrain_data
from flowaug.pretraining.samples import write_sample_grids
from flowaug.seeding import seeded_generator
from flowaug.training import run_progress

CHECKPOINT_NAME = "checkpoint.pt"
EXPORT_NAME = "flow.pt"
# Fields that define the training trajectory: a resume must use the same values.
RESUME_MUST_MATCH = ("dataset", "preset", "image_size", "batch_size", "seed", "max_train_images",
                     "hflip", "ema", "val_fraction", "init_from")
# Schedule settings a user may change on purpose when resuming (e.g. a lower lr after a divergence,
# more epochs): the resume is then no longer the uninterrupted run, so the change is printed and
# recorded as a {"kind": "resume"} line in metrics.jsonl.
RESUME_MAY_CHANGE = ("epochs", "lr", "warmup_steps", "kl_warmup_steps", "kl_weight", "colour_anchor",
                     "grad_clip", "amp")
# Random streams, mixed into the seed so no two uses share a generator state.
_PERMUTATION, _STEP, _VALIDATION, _SAMPLES, _INIT = range(5)
SAMPLE_TEMPERATURE = 0.7
GUARD_CALIBRATION_IMAGES = 1000


class TrainingDivergedError(FlowaugError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclass
class PretrainConfig:
    """Everything a pretraining run depends on (stored in every checkpoint).

    Attributes:
        dataset: spec for :func:`~flowaug.pretraining.datasets.load_pretrain_data`
            (``cifar10``, ``cifar100``, ``folder:PATH``, ``npz:PATH``).
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
        for name in ("warmup_steps", "kl_warmup_steps", "checkpoint_every", "grad_clip", "colour_anchor"):
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
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def kl_weight_at(step: int, cfg: PretrainConfig) -> float:
    """KL weight at global ``step``: linear from 0 to ``cfg.kl_weight`` over ``cfg.kl_warmup_steps``
    (``cfg.kl_weight`` without warm-up)."""
    ramp = min(1.0, step / cfg.kl_warmup_steps) if cfg.kl_warmup_steps else 1.0
    return cfg.kl_weight * ramp


@dataclass
class _Dist:
    """Process-group facts; a single process is world size 1 with no group."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool

    @classmethod
    def from_env(cls, device: str) -> _Dist:
        """Join the ``torchrun`` process group from the environment (gloo on CPU, nccl on CUDA)."""
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch_device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(torch_device)
        if world_size == 1:
            return cls(0, 1, torch_device, owns_group=False)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), torch_device, owns_group=owns)

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, value: torch.Tensor) -> float:
        """Mean of a scalar tensor over ranks."""
        if self.world_size > 1:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world_size
        return float(value)

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()


@torch.no_grad()
def guard_meta(flow: DecoupledFlow, images: torch.Tensor, seed: int, batch_size: int = 64) -> dict[str, Any]:
    """FlowAug's guard threshold for ``flow``, calibrated on swaps of ``images`` (uint8 (N,H,W,3), e.g. the
    first training images, so no test image informs it), as checkpoint meta (see ``FlowAug.calibrate_guard``).
    FlowAug freezes its flow, so it gets a copy: ``flow`` may be the model being trained."""
    if len(images) < 2:
        return {}
    device = flow.initialized.device
    aug = FlowAug(copy.deepcopy(flow), generator=seeded_generator("cpu", seed, _SAMPLES), guard=None)
    threshold = aug.calibrate_guard(to_float_chw(images).to(device), batch_size=batch_size)
    return {"guard_bits": threshold, "guard_calibration": f"quantile {GUARD_QUANTILE} of swaps of the first "
                                                          f"{len(images)} training images"}


def warm_start(flow: DecoupledFlow, source: str) -> dict[str, list[str]]:
    """Copy into ``flow`` every tensor of the flow ``source`` (path or registry name) whose name
    and shape match; return ``{"copied": [...], "kept": [...]}`` (names of ``flow``'s state dict)."""
    from flowaug.pretrained import load_model

    try:
        donor = load_model(source, "flow").state_dict()
    except (ValueError, OSError) as error:
        raise FlowaugError(f"--init-from {source!r}: {error}") from error
    own = flow.state_dict()
    copied = [k for k, v in donor.items() if k in own and own[k].shape == v.shape]
    if not copied:
        raise FlowaugError(f"--init-from {source!r} shares no tensor of matching name and shape with "
                           f"preset {flow.config}; nothing to warm-start from")
    flow.load_state_dict({**own, **{k: donor[k] for k in copied}})
    return {"copied": copied, "kept": sorted(set(own) - set(copied))}


def _load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    ckpt = read_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "flow", device)
    if "train_state" not in ckpt:
        raise CheckpointError(f"{path} is an exported flow without training state (no train_state); "
                              f"it cannot be resumed: start a new --out")
    return ckpt


def _record_step(line: str) -> float:
    """The ``step`` of one metrics.jsonl line; a torn or foreign line counts as infinitely late."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def _check_resume(saved: dict[str, Any], cfg: PretrainConfig, flow_config: FlowConfig,
                  saved_flow_config: dict[str, Any], path: Path) -> dict[str, list[Any]]:
    """Refuse a resume that changes the run's trajectory-defining settings; return the schedule
    settings (:data:`RESUME_MAY_CHANGE`) that differ, as ``{name: [checkpoint value, now]}``."""
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {getattr(cfg, k)!r}"
             for k in RESUME_MUST_MATCH if saved.get(k) != getattr(cfg, k)]
    if saved_flow_config != flow_config.to_dict():
        diffs.append(f"flow config: checkpoint {saved_flow_config} vs now {flow_config.to_dict()}")
    if diffs:
        raise CheckpointError(f"cannot resume {path}: the run was started with different settings "
                              f"({'; '.join(diffs)}). Resume with the original settings or use a new --out.")
    return {k: [saved.get(k), getattr(cfg, k)] for k in RESUME_MAY_CHANGE if saved.get(k) != getattr(cfg, k)}


class _Run:
    """One pretraining run (one process; rank 0 writes files)."""

    def __init__(self, cfg: PretrainConfig, dist_ctx: _Dist, started: float) -> None:
        self.cfg, self.dist, self.started = cfg, dist_ctx, started
        self.device = dist_ctx.device
        self.is_main = dist_ctx.rank == 0
        self.out = Path(cfg.out)
        self.ckpt_path = self.out / CHECKPOINT_NAME
        if cfg.batch_size % dist_ctx.world_size:
            raise FlowaugError(f"batch size {cfg.batch_size} must be divisible by the number of "
                               f"processes ({dist_ctx.world_size}); it is the global batch")
        try:
            self.flow_config = get_preset(cfg.preset, image_size=cfg.image_size)
        except ValueError as error:
            raise FlowaugError(f"invalid --preset/--image-size: {error}") from error
        if cfg.colour_anchor and self.flow_config.conditioning != "colour":
            raise FlowaugError(f"--colour-anchor needs a preset with colour conditioning (e.g. cpu-small-colour); "
                               f"{cfg.preset!r} has {self.flow_config.conditioning!r}")
        self.changed_on_resume: dict[str, list[Any]] = {}
        ckpt = self._existing_checkpoint()

        data = load_pretrain_data(cfg.dataset, cfg.data_root, cfg.image_size, cfg.val_fraction, cfg.seed)
        train = data.train[: cfg.max_train_images] if cfg.max_train_images else data.train
        self.description = data.description
        self.train = torch.from_numpy(np.ascontiguousarray(train))
        self.val = torch.from_numpy(np.ascontiguousarray(data.val[: cfg.val_images]))
        self.steps_per_epoch = len(self.train) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise FlowaugError(f"batch size {cfg.batch_size} exceeds the {len(self.train)} training images; "
                               f"lower --batch-size")

        torch.manual_seed(cfg.seed)
        self.flow = DecoupledFlow(self.flow_config).to(self.device)
        init = torch.randperm(len(self.train), generator=seeded_generator("cpu", cfg.seed, _INIT))
        self.flow.initialize(to_float_chw(self.train[init[: max(cfg.batch_size, 256)]]).to(self.device))
        self.warm_started = warm_start(self.flow, cfg.init_from) if cfg.init_from and ckpt is None else None
        self.ema = copy.deepcopy(self.flow).requires_grad_(False) if cfg.ema else None
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=cfg.lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp and self.device.type == "cuda")
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.counters = {"skipped_steps": 0, "consecutive_nonfinite": 0, "updates": 0, "wall_time_s": 0.0,
                         "epoch_loss_sum": 0.0, "epoch_steps": 0, "log_loss_sum": 0.0, "log_steps": 0,
                         "nonfinite_samples": 0}
        self.last_val_bpd: float | None = None
        if ckpt is not None:
            self._restore(ckpt)
        # The flow's forward is its loss, so DDP wraps the flow itself and syncs its gradients.
        self.loss_module = self.flow if dist_ctx.world_size == 1 else DistributedDataParallel(
            self.flow, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.is_main:
            self._prepare_metrics(ckpt is not None)
            if ckpt is None:
                self._write_config()
            else:
                self._log({"kind": "resume", "step": self.global_step, "changed": self.changed_on_resume})
                if self.changed_on_resume:
                    tqdm.write(f"resuming with changed schedule settings {self.changed_on_resume}: the run "
                               f"continues from step {self.global_step} but no longer equals an uninterrupted one")

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.steps_per_epoch

    @property
    def inference_flow(self) -> DecoupledFlow:
        return self.ema if self.ema is not None else self.flow

    def _existing_checkpoint(self) -> dict[str, Any] | None:
        exists = self.ckpt_path.exists() or (self.out / EXPORT_NAME).exists()
        if exists and not self.cfg.resume:
            raise FlowaugError(f"{self.out} already holds a pretraining run; pass --resume to continue it "
                               f"or choose another --out (nothing was overwritten)")
        if not self.cfg.resume:
            return None
        if not self.ckpt_path.exists():
            raise CheckpointError(f"--resume given but {self.ckpt_path} does not exist; drop --resume "
                                  f"to start a new run")
        ckpt = _load_checkpoint(self.ckpt_path, self.device)
        self.changed_on_resume = _check_resume(ckpt["train_state"]["pretrain_config"], self.cfg,
                                               self.flow_config, ckpt["config"], self.ckpt_path)
        return ckpt

    def _restore(self, ckpt: dict[str, Any]) -> None:
        state = ckpt["train_state"]
        self.flow.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if self.device.type == "cuda" and state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.counters.update(state["counters"])
        self.last_val_bpd = ckpt["meta"].get("val_bpd")

    def _write_config(self) -> None:
        record = {"pretrain": dataclasses.asdict(self.cfg), "flow": self.flow_config.to_dict(),
                  "dataset_description": self.description, "train_images": len(self.train),
                  "val_images": len(self.val), "steps_per_epoch": self.steps_per_epoch,
                  "world_size": self.dist.world_size, "device": str(self.device)}
        atomic_write_text(json.dumps(record, indent=2) + "\n", self.out / "config.json")

    def _prepare_metrics(self, resumed: bool) -> None:
        """Start ``metrics.jsonl``; on resume drop records written after the checkpoint's step."""
        path = self.out / "metrics.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if resumed and path.exists() else []
        kept = [line for line in lines if _record_step(line) <= self.global_step]
        atomic_write_text("".join(line + "\n" for line in kept), path)

    def _log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _wall_time(self) -> float:
        return self.counters["wall_time_s"] + time.monotonic() - self.started

    def _batch(self, perm: torch.Tensor, step_in_epoch: int) -> torch.Tensor:
        """This rank's share of the global batch at ``step_in_epoch``, float (b,3,H,W) in [0,1] on device."""
        b = self.cfg.batch_size
        idx = perm[step_in_epoch * b: (step_in_epoch + 1) * b][self.dist.rank:: self.dist.world_size]
        x = to_float_chw(self.train[idx])
        if self.cfg.hflip:
            flip_gen = seeded_generator("cpu", self.cfg.seed, _STEP, self.global_step, self.dist.rank)
            flip = torch.rand(len(x), generator=flip_gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x.to(self.device)

    def _train_step(self, x: torch.Tensor) -> float | None:
        """One optimizer step on ``x``; returns the global mean loss (bits/dim) or None if skipped."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.global_step, self.total_steps, cfg)
        noise = seeded_generator(self.device, cfg.seed, _STEP, self.global_step, self.dist.rank, 1)
        self.optimizer.zero_grad(set_to_none=True)
        amp_dtype = torch.bfloat16 if self.device.type == "cpu" else torch.float16
        autocast = torch.autocast(self.device.type, dtype=amp_dtype) if cfg.amp else nullcontext()
        with autocast:
            loss = self.loss_module(x, noise, kl_weight_at(self.global_step, cfg), cfg.colour_anchor)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.flow.parameters(), cfg.grad_clip or math.inf)
        loss_value = self.dist.mean(loss.detach().float())
        finite = math.isfinite(loss_value) and bool(torch.isfinite(grad_norm))
        if finite:
            self.scaler.step(self.optimizer)
            self._update_ema()
        self.scaler.update()
        return loss_value if finite else None

    @torch.no_grad()
    def _update_ema(self) -> None:
        self.counters["updates"] += 1
        if self.ema is None:
            return
        n = self.counters["updates"]
        decay = min(self.cfg.ema, (1 + n) / (10 + n))
        for e, p in zip(self.ema.parameters(), self.flow.parameters()):
            e.lerp_(p, 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.flow.buffers()):
            e.copy_(b)

    def _count_step(self, loss: float | None, epoch: int) -> None:
        c = self.counters
        if loss is None:
            c["skipped_steps"] += 1
            c["consecutive_nonfinite"] += 1
            if c["consecutive_nonfinite"] >= self.cfg.max_consecutive_nonfinite:
                raise TrainingDivergedError(
                    f"{c['consecutive_nonfinite']} consecutive steps had a non-finite loss or gradient "
                    f"(up to global step {self.global_step}); training stopped. Lower the learning rate "
                    f"(e.g. --lr {self.cfg.lr / 3:.2g}) or set --grad-clip, then continue from the last "
                    f"checkpoint with --resume or start a new --out.")
        else:
            c["consecutive_nonfinite"] = 0
            for prefix in ("epoch", "log"):
                c[f"{prefix}_loss_sum"] += loss
                c[f"{prefix}_steps"] += 1
        if self.global_step % self.cfg.log_every == 0:
            self._log({"kind": "step", "step": self.global_step, "epoch": epoch + 1,
                       "train_bpd": c["log_loss_sum"] / max(1, c["log_steps"]),
                       "lr": self.optimizer.param_groups[0]["lr"], "kl_weight": kl_weight_at(self.global_step, self.cfg),
                       "img_per_s": self._img_per_s("log"),
                       "skipped_steps": c["skipped_steps"], "wall_time_s": self._wall_time()})
            c["log_loss_sum"], c["log_steps"] = 0.0, 0

    def _img_per_s(self, window: str) -> float:
        """Training images/s (all ranks) since the last call for ``window`` ("log" or "epoch")."""
        now = time.monotonic()
        step, since = self._rate_marks[window]
        self._rate_marks[window] = (self.global_step, now)
        return (self.global_step - step) * self.cfg.batch_size / max(1e-9, now - since)

    @torch.no_grad()
    def _validate(self) -> float:
        """Mean bits/dim of the fixed validation subset (fixed generator) under the inference weights."""
        model = self.inference_flow.eval()
        generator = seeded_generator(self.device, self.cfg.seed, _VALIDATION)
        total = 0.0
        for chunk in torch.split(self.val, self.cfg.batch_size):
            total += float(model.bits_per_dim(to_float_chw(chunk).to(self.device), generator=generator).sum())
        model.train()
        return total / len(self.val)

    def _end_epoch(self, epoch: int) -> None:
        """Validation, sample grids, epoch record (rank 0), checkpoint."""
        c = self.counters
        if self.is_main:
            img_per_s = self._img_per_s("epoch")
            self.last_val_bpd = self._validate()
            model = self.inference_flow.eval()
            x = to_float_chw(self.val[: self.cfg.sample_images]).to(self.device)
            generator = seeded_generator(self.device, self.cfg.seed, _SAMPLES)
            c["nonfinite_samples"] += write_sample_grids(model, x, self.out / "samples", epoch + 1,
                                                         generator, SAMPLE_TEMPERATURE)
            model.train()
            self._log({"kind": "epoch", "step": self.global_step, "epoch": epoch + 1,
                       "train_bpd": c["epoch_loss_sum"] / max(1, c["epoch_steps"]),
                       "val_bpd": self.last_val_bpd, "lr": self.optimizer.param_groups[0]["lr"],
                       "img_per_s": img_per_s, "skipped_steps": c["skipped_steps"],
                       "nonfinite_samples": c["nonfinite_samples"], "wall_time_s": self._wall_time()})
            tqdm.write(f"epoch {epoch + 1}/{self.cfg.epochs}: train {c['epoch_loss_sum'] / max(1, c['epoch_steps']):.4f} "
                       f"val {self.last_val_bpd:.4f} bits/dim, {c['skipped_steps']} skipped steps")
            self._rate_marks["epoch"] = (self.global_step, time.monotonic())
        c["epoch_loss_sum"], c["epoch_steps"] = 0.0, 0

    def _meta(self, finished: bool) -> dict[str, Any]:
        return {"dataset": self.description, "dataset_spec": self.cfg.dataset, "preset": self.cfg.preset,
                "image_size": self.cfg.image_size, "epochs_completed": self.epoch,
                "global_step": self.global_step, "val_bpd": self.last_val_bpd,
                "train_images": len(self.train), "wall_time_s": self._wall_time(),
                "weights": "ema" if self.ema is not None else "raw", "finished": finished}

    def _save(self, finished: bool = False) -> None:
        if not self.is_main:
            return
        state = {
            "pretrain_config": dataclasses.asdict(self.cfg), "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch, "global_step": self.global_step, "finished": finished,
            "model": self.flow.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "scheduler": {"kind": "warmup-cosine", "warmup_steps": self.cfg.warmup_steps,
                          "total_steps": self.total_steps, "lr": self.optimizer.param_groups[0]["lr"]},
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
            "counters": {**self.counters, "wall_time_s": self._wall_time()},
        }
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                           "config": self.flow_config.to_dict(),
                           "state_dict": self.inference_flow.state_dict(),
                           "meta": self._meta(finished), "train_state": state}, self.ckpt_path)

    def _export(self, finished: bool) -> Path:
        path = self.out / EXPORT_NAME
        if self.is_main:
            save_flow(self.inference_flow, path, meta={**self._meta(finished), **self._guard_meta()})
        return path

    def _guard_meta(self) -> dict[str, Any]:
        images = self.train[:GUARD_CALIBRATION_IMAGES]
        return guard_meta(self.inference_flow, images, self.cfg.seed, self.cfg.batch_size)

    def _should_stop(self) -> bool:
        cfg = self.cfg
        over_time = cfg.time_limit is not None and time.monotonic() - self.started > 60.0 * cfg.time_limit
        at_step = cfg.stop_after_steps is not None and self.global_step >= cfg.stop_after_steps
        return self.dist.any(over_time) or at_step

    def run(self) -> Path:
        """Train to the end of ``cfg.epochs`` or until stopped; return the exported ``flow.pt`` path."""
        cfg = self.cfg
        if self.is_main:
            tqdm.write(f"pretraining {cfg.preset} on {self.description}: {len(self.train)} train / "
                       f"{len(self.val)} val images, {self.steps_per_epoch} steps/epoch x {cfg.epochs} epochs, "
                       f"{self.dist.world_size} process(es) on {self.device}, out {self.out}")
            if self.total_steps <= cfg.warmup_steps:
                warnings.warn(f"this run has {self.total_steps} steps but --warmup-steps {cfg.warmup_steps}: the "
                              f"learning rate never reaches --lr {cfg.lr:g} (it ends at "
                              f"{lr_at(self.total_steps - 1, self.total_steps, cfg):.2g}) and the flow will barely "
                              f"train; lower --warmup-steps or train for more epochs", stacklevel=2)
            advice = short_run_advice(self.total_steps, self.steps_per_epoch, cfg.batch_size, cfg.image_size,
                                      bool(cfg.init_from))
            if advice:
                warnings.warn(advice, stacklevel=2)
            if self.warm_started:
                kept = self.warm_started["kept"]
                tqdm.write(f"warm start from {cfg.init_from}: {len(self.warm_started['copied'])} tensors "
                           f"copied, {len(kept)} kept at their initialisation {kept[:6]}{' ...' if len(kept) > 6 else ''}")
        self._rate_marks = dict.fromkeys(("log", "epoch"), (self.global_step, time.monotonic()))
        stop = False
        bar = run_progress(self.total_steps, self.global_step, enabled=self.is_main, desc="pretraining")
        while self.epoch < cfg.epochs and not stop:
            epoch = self.epoch
            perm = torch.randperm(len(self.train), generator=seeded_generator("cpu", cfg.seed, _PERMUTATION, epoch))
            bar.set_description(f"pretraining, epoch {epoch + 1}/{cfg.epochs}")
            while self.step_in_epoch < self.steps_per_epoch and not stop:
                loss = self._train_step(self._batch(perm, self.step_in_epoch))
                self.global_step += 1
                self.step_in_epoch += 1
                self._count_step(loss, epoch)
                bar.update()
                if loss is not None:
                    bar.set_postfix(bpd=f"{loss:.3f}", refresh=False)
                stop = self._should_stop()
                periodic = cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0
                if (stop or periodic) and self.step_in_epoch < self.steps_per_epoch:
                    self._save()
            if self.step_in_epoch == self.steps_per_epoch:
                self.epoch, self.step_in_epoch = epoch + 1, 0
                self._end_epoch(epoch)
                self._save(finished=self.epoch >= cfg.epochs)
        bar.close()
        finished = self.epoch >= cfg.epochs
        if self.is_main and not finished:
            tqdm.write(f"stopped at global step {self.global_step} (epoch {self.epoch + 1}, step "
                       f"{self.step_in_epoch}/{self.steps_per_epoch}); continue with --resume")
        return self._export(finished)


def pretrain(cfg: PretrainConfig) -> Path:
    """Pretrain a :class:`DecoupledFlow` as configured; return the path of the exported ``flow.pt``.

    Works in a single process or under ``torchrun`` (one process per device; rank 0 writes
    files and holds ``out`` for the whole run, :func:`flowaug.fileio.claim_run_folder`). Raises
    :class:`FlowaugError` subclasses for bad settings, a clashing or busy ``out``, a mismatched
    resume and divergence.
    """
    started = time.monotonic()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist_ctx = _Dist.from_env(cfg.device)
    try:
        with claim_run_folder(cfg.out) if dist_ctx.rank == 0 else nullcontext():
            return _Run(cfg, dist_ctx, started).run()
    finally:
        dist_ctx.close()
