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
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from flowaug.data.base import to_float_chw
from flowaug.data.specs import load_train_val
from flowaug.errors import CheckpointError, FlowaugError
from flowaug.fileio import atomic_torch_save, atomic_write_text, claim_run_folder, read_checkpoint
from flowaug.flow import DecoupledFlow, get_preset, save_flow
from flowaug.flow.model import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from flowaug.seeding import seeded_generator
from flowaug.training.checkpoint import check_resume
from flowaug.training.flow_advice import schedule_warnings
from flowaug.training.flow_config import (INIT_STREAM, PERMUTATION_STREAM, RESUME_MAY_CHANGE, RESUME_MUST_MATCH,
                                          SAMPLES_STREAM, STEP_STREAM, VALIDATION_STREAM, PretrainConfig,
                                          TrainingDivergedError, check_anchors, kl_weight_at, lr_at)
from flowaug.training.ema import update_ema
from flowaug.training.flow_init import guard_meta, warm_start
from flowaug.training.flow_samples import write_sample_grids
from flowaug.training.runtime import MetricsLog, Runtime, run_progress

CHECKPOINT_NAME = "checkpoint.pt"
EXPORT_NAME = "flow.pt"
SAMPLE_TEMPERATURE = 0.7
GUARD_CALIBRATION_IMAGES = 1000


def _load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    ckpt = read_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "flow", device)
    if "train_state" not in ckpt:
        raise CheckpointError(f"{path} is an exported flow without training state (no train_state); "
                              f"it cannot be resumed: start a new --out")
    return ckpt


class _Run:
    """One pretraining run (one process; rank 0 writes files)."""

    def __init__(self, cfg: PretrainConfig, runtime: Runtime, started: float) -> None:
        self.cfg, self.runtime, self.started = cfg, runtime, started
        self.device = runtime.device
        self.is_main = runtime.rank == 0
        self.out = Path(cfg.out)
        self.ckpt_path = self.out / CHECKPOINT_NAME
        self.metrics = MetricsLog(self.out / "metrics.jsonl", runtime)
        if cfg.batch_size % runtime.world_size:
            raise FlowaugError(f"batch size {cfg.batch_size} must be divisible by the number of "
                               f"processes ({runtime.world_size}); it is the global batch")
        try:
            self.flow_config = get_preset(cfg.preset, image_size=cfg.image_size)
        except ValueError as error:
            raise FlowaugError(f"invalid --preset/--image-size: {error}") from error
        self.changed_on_resume: dict[str, list[Any]] = {}
        ckpt = self._existing_checkpoint()

        data = load_train_val(cfg.dataset, cfg.data_root, cfg.image_size, cfg.val_fraction, cfg.seed)
        train = data.train[: cfg.max_train_images] if cfg.max_train_images else data.train
        self.description = data.description
        self.train = torch.from_numpy(np.ascontiguousarray(train))
        self.val = torch.from_numpy(np.ascontiguousarray(data.val[: cfg.val_images]))
        check_anchors(cfg, self.flow_config, data.train_masks is not None)
        self.train_masks = None if data.train_masks is None else torch.from_numpy(data.train_masks[: len(train)])
        self.steps_per_epoch = len(self.train) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise FlowaugError(f"batch size {cfg.batch_size} exceeds the {len(self.train)} training images; "
                               f"lower --batch-size")

        torch.manual_seed(cfg.seed)
        self.flow = DecoupledFlow(self.flow_config).to(self.device)
        init = torch.randperm(len(self.train), generator=seeded_generator("cpu", cfg.seed, INIT_STREAM))
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
        self.loss_module = self.flow if runtime.world_size == 1 else DistributedDataParallel(
            self.flow, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.is_main:
            self.metrics.start(self.global_step if ckpt is not None else None)
            if ckpt is None:
                self._write_config()
            else:
                self.metrics.append({"kind": "resume", "step": self.global_step, "changed": self.changed_on_resume})
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
        self.changed_on_resume = check_resume(self._resume_settings(ckpt["train_state"]["pretrain_config"], ckpt["config"]),
                                              self._resume_settings(dataclasses.asdict(self.cfg),
                                                                    self.flow_config.to_dict()),
                                              self.ckpt_path, RESUME_MAY_CHANGE)
        return ckpt

    @staticmethod
    def _resume_settings(pretrain: dict[str, Any], flow: dict[str, Any]) -> dict[str, Any]:
        """What a resume compares: the trajectory and schedule fields of the config (a field an older
        checkpoint lacks counts as its default), and the flow's config."""
        defaults = {field.name: field.default for field in dataclasses.fields(PretrainConfig)}
        return {**{k: pretrain.get(k, defaults[k]) for k in RESUME_MUST_MATCH + RESUME_MAY_CHANGE},
                "flow config": flow}

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
                  "world_size": self.runtime.world_size, "device": str(self.device)}
        atomic_write_text(json.dumps(record, indent=2) + "\n", self.out / "config.json")

    def _wall_time(self) -> float:
        return self.counters["wall_time_s"] + time.monotonic() - self.started

    def _batch(self, perm: torch.Tensor, step_in_epoch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's share of the global batch at ``step_in_epoch``: float (b,3,H,W) in [0,1] and,
        where the data has them, float masks (b,1,H,W) (1 = object), flipped alike, on device."""
        b = self.cfg.batch_size
        idx = self.runtime.shard(perm[step_in_epoch * b: (step_in_epoch + 1) * b])
        x = to_float_chw(self.train[idx])
        m = None if self.train_masks is None else self.train_masks[idx][:, None].float()
        if self.cfg.hflip:
            flip_gen = seeded_generator("cpu", self.cfg.seed, STEP_STREAM, self.global_step, self.runtime.rank)
            flip = torch.rand(len(x), generator=flip_gen)[:, None, None, None] < 0.5
            x = torch.where(flip, x.flip(-1), x)
            m = None if m is None else torch.where(flip, m.flip(-1), m)
        return x.to(self.device), None if m is None else m.to(self.device)

    def _train_step(self, x: torch.Tensor, masks: torch.Tensor | None) -> float | None:
        """One optimizer step on ``x`` (and its ``masks``, for the pattern anchor); returns the global mean
        loss (bits/dim) or None if skipped."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.global_step, self.total_steps, cfg)
        noise = seeded_generator(self.device, cfg.seed, STEP_STREAM, self.global_step, self.runtime.rank, 1)
        self.optimizer.zero_grad(set_to_none=True)
        amp_dtype = torch.bfloat16 if self.device.type == "cpu" else torch.float16
        autocast = torch.autocast(self.device.type, dtype=amp_dtype) if cfg.amp else nullcontext()
        with autocast:
            loss = self.loss_module(x, noise, kl_weight_at(self.global_step, cfg), cfg.colour_anchor,
                                    cfg.pattern_anchor, masks if cfg.pattern_anchor else None)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.flow.parameters(), cfg.grad_clip or math.inf)
        loss_value = self.runtime.mean(loss.detach().float())
        finite = math.isfinite(loss_value) and bool(torch.isfinite(grad_norm))
        if finite:
            self.scaler.step(self.optimizer)
            self.counters["updates"] += 1
            if self.ema is not None:
                update_ema(self.ema, self.flow, self.counters["updates"], cfg.ema)
        self.scaler.update()
        return loss_value if finite else None

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
            self.metrics.append({"kind": "step", "step": self.global_step, "epoch": epoch + 1,
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
        generator = seeded_generator(self.device, self.cfg.seed, VALIDATION_STREAM)
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
            generator = seeded_generator(self.device, self.cfg.seed, SAMPLES_STREAM)
            c["nonfinite_samples"] += write_sample_grids(model, x, self.out / "samples", epoch + 1,
                                                         generator, SAMPLE_TEMPERATURE)
            model.train()
            self.metrics.append({"kind": "epoch", "step": self.global_step, "epoch": epoch + 1,
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
        return self.runtime.any(over_time) or at_step

    def run(self) -> Path:
        """Train to the end of ``cfg.epochs`` or until stopped; return the exported ``flow.pt`` path."""
        cfg = self.cfg
        if self.is_main:
            tqdm.write(f"pretraining {cfg.preset} on {self.description}: {len(self.train)} train / "
                       f"{len(self.val)} val images, {self.steps_per_epoch} steps/epoch x {cfg.epochs} epochs, "
                       f"{self.runtime.world_size} process(es) on {self.device}, out {self.out}")
            for advice in schedule_warnings(cfg, self.total_steps, self.steps_per_epoch):
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
            perm = torch.randperm(len(self.train), generator=seeded_generator("cpu", cfg.seed, PERMUTATION_STREAM, epoch))
            bar.set_description(f"pretraining, epoch {epoch + 1}/{cfg.epochs}")
            while self.step_in_epoch < self.steps_per_epoch and not stop:
                loss = self._train_step(*self._batch(perm, self.step_in_epoch))
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
    runtime = Runtime.from_env(cfg.device)
    try:
        with claim_run_folder(cfg.out) if runtime.rank == 0 else nullcontext():
            return _Run(cfg, runtime, started).run()
    finally:
        runtime.close()
