"""One checkpoint and resume policy for every trainer.

A run's settings split in two: those that define its trajectory must match on resume (else the
resumed run would not continue the same one), and schedule settings a user may change on purpose
(more epochs, a lower learning rate after a divergence), which are reported. Files are written
atomically (:func:`flowaug.fileio.atomic_torch_save`), so an interrupted write never leaves a torn
checkpoint. Resuming is exact because every trainer derives its random draws from (seed, position):
see :func:`flowaug.seeding.seeded_generator`.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from flowaug.errors import CheckpointError
from flowaug.fileio import atomic_torch_save, read_checkpoint

TRAIN_STATE_FORMAT = "flowaug-train-state"
TRAIN_STATE_VERSION = 1


def check_resume(saved: Mapping[str, Any], now: Mapping[str, Any], path: str | os.PathLike,
                 may_change: Iterable[str] = ()) -> dict[str, list[Any]]:
    """Compare the settings a checkpoint was written with (``saved``) to this run's (``now``).

    Every key outside ``may_change`` must be equal: otherwise raises :class:`CheckpointError` naming
    each difference. Returns the ``may_change`` keys that differ, as ``{name: [checkpoint value, now]}``.
    """
    may_change = set(may_change)
    keys = sorted(set(saved) | set(now))
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}"
             for k in keys if k not in may_change and saved.get(k) != now.get(k)]
    if diffs:
        raise CheckpointError(f"cannot resume {path}: the run was started with other settings ({'; '.join(diffs)}). "
                              f"Resume with the original settings or use a new output folder.")
    return {k: [saved.get(k), now.get(k)] for k in keys if k in may_change and saved.get(k) != now.get(k)}


def save_train_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, history: list[dict[str, Any]],
                     config: dict[str, Any]) -> None:
    """Atomically write model, optimizer and scheduler state, the per-epoch ``history`` and the run's
    ``config`` (plain data: every entry must match on resume)."""
    atomic_torch_save({
        "format": TRAIN_STATE_FORMAT, "version": TRAIN_STATE_VERSION, "config": config,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "history": history,
    }, path)


def load_train_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler,
                     config: dict[str, Any]) -> list[dict[str, Any]]:
    """Restore a :func:`save_train_state` file into the given objects and return its history.

    Raises :class:`CheckpointError` when the file is missing or corrupt or was written with another
    ``config`` (:func:`check_resume` with nothing allowed to change).
    """
    state = read_checkpoint(path, TRAIN_STATE_FORMAT, TRAIN_STATE_VERSION, "training state", "cpu")
    check_resume(state["config"], config, path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["history"]
