"""What every trainer shares at run time: the process group, rank slicing, device timing, one
run-wide progress bar, the rank-0 metrics log and the name of the hardware a report was made on."""
from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from flowaug.fileio import atomic_write_text


@dataclass
class Runtime:
    """This process's place in a run: rank, world size and device (one process: rank 0 of 1, no group)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @classmethod
    def from_env(cls, device: str | None = "auto") -> Runtime:
        """Join the ``torchrun`` process group from the environment (gloo on CPU, nccl on CUDA).

        ``device``: "auto" or None (CUDA if available), "cpu" or "cuda"; process r of a CUDA run uses
        GPU ``LOCAL_RANK``. A group someone else opened is joined, not owned (:meth:`close` keeps it)."""
        use_cuda = device == "cuda" or (device in (None, "auto") and torch.cuda.is_available())
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch_device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(torch_device)
        if world_size == 1:
            return cls(0, 1, torch_device)
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), torch_device, owns_group=owns)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    def local_batch(self, batch_size: int) -> int:
        """This rank's share of a global batch; raises ValueError unless ``batch_size`` divides by the world size."""
        if batch_size % self.world_size:
            raise ValueError(f"batch size {batch_size} must divide by the number of processes {self.world_size}; "
                             f"it is the global batch")
        return batch_size // self.world_size

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch's indices: rows r, r + world size, ..."""
        return index[self.rank::self.world_size]

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, value: torch.Tensor) -> float:
        """Mean of a scalar tensor over ranks."""
        if self.world_size > 1:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world_size
        return float(value)

    def barrier(self) -> None:
        """Wait for every rank (no-op in one process)."""
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if this runtime opened it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def synchronize(device: torch.device) -> float:
    """``time.perf_counter()`` after waiting for ``device``'s queued work (so phase times are honest on GPUs)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def run_progress(total_steps: int, done_steps: int = 0, enabled: bool = True, desc: str = "training") -> tqdm:
    """One bar for a whole training run: steps done of all epochs, with an ETA smoothed over many
    steps (tqdm's moving average with factor 0.02), so it stays steady within and across epochs."""
    return tqdm(total=total_steps, initial=done_steps, desc=desc, unit="step", smoothing=0.02, disable=not enabled,
                dynamic_ncols=True)


def format_record(record: dict[str, Any]) -> str:
    """One metrics record as ``key=value`` pairs (floats to 4 significant digits), for the progress bar's log."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())


def _record_step(line: str) -> float:
    """The ``step`` of one metrics.jsonl line; a torn or foreign line counts as infinitely late."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


class MetricsLog:
    """``metrics.jsonl`` of a run, written by rank 0 only: one JSON record per line."""

    def __init__(self, path: str | os.PathLike, runtime: Runtime) -> None:
        self.path, self.enabled = Path(path), runtime.is_main

    def start(self, resumed_at_step: int | None) -> None:
        """Begin the log: empty for a new run; on resume keep only the records of steps up to the
        checkpoint's (``resumed_at_step``), so a resumed run's log equals an uninterrupted one's."""
        if not self.enabled:
            return
        lines = self.path.read_text(encoding="utf-8").splitlines() \
            if resumed_at_step is not None and self.path.exists() else []
        kept = [line for line in lines if _record_step(line) <= (resumed_at_step or 0)]
        atomic_write_text("".join(line + "\n" for line in kept), self.path)

    def append(self, record: dict[str, Any]) -> None:
        """Add one record."""
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the log by ``records`` atomically (a per-epoch history)."""
        if self.enabled:
            atomic_write_text("".join(json.dumps(r) + "\n" for r in records), self.path)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s first ``model name``), else what ``platform`` knows."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The device a run trained on, for its report: the GPU's name, else ``CPU (<model>, <N> cores)``.
    Results can differ in the last digits between CPU models (other vector kernels round differently),
    so reports name the model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({cpu_model()}, {os.cpu_count()} cores)"
