"""Helpers shared by the FlowAug benchmarks (augment_cost.py, augment_quality.py).

Not a package module: the scripts put ``benchmarks/`` on ``sys.path`` by running from it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from flowaug.data import load_cifar
from flowaug.fileio import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
DEFAULT_FLOW = "cifar10"  # the shipped flow (registry name); --flow also takes a checkpoint path


def cifar10_test_batch(data_root: str | os.PathLike, count: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``count`` CIFAR-10 test images as float32 (count, 3, 32, 32) in [0, 1] on the CPU,
    their int64 labels (count,) and the data description (e.g. "CIFAR-10 (JPEG-q75 proxy)")."""
    data = load_cifar("cifar10", "test", data_root)
    if not 1 <= count <= len(data.labels):
        raise ValueError(f"asked for {count} test images; the split has {len(data.labels)}")
    images = torch.from_numpy(data.images[:count]).permute(0, 3, 1, 2).float() / 255.0
    return images.contiguous(), torch.from_numpy(data.labels[:count]).long(), data.description


def command_line() -> str:
    """The command that is running, as typed from the repository root."""
    return " ".join(shlex.quote(part) for part in [Path(sys.executable).name, *sys.argv])


def environment(device: torch.device, load_start: float) -> dict[str, Any]:
    """Versions, device, threads and the 1-minute load average at the start and now (the machine may be shared)."""
    import kornia
    import torchvision

    cpus = os.cpu_count() or 1
    load_end = os.getloadavg()[0]
    busy = max(load_start, load_end) > 0.5 * cpus
    info: dict[str, Any] = {
        "torch": torch.__version__, "torchvision": torchvision.__version__, "kornia": kornia.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "device": str(device), "threads": torch.get_num_threads(), "cpu_count": cpus,
        "load_average_start": round(load_start, 2), "load_average_end": round(load_end, 2),
        "load_note": (f"1-minute load average {load_start:.1f} at start, {load_end:.1f} at end on {cpus} CPUs: "
                      + ("the machine was shared with other jobs; absolute CPU timings are pessimistic, "
                         "the side-by-side ratios are the portable numbers" if busy else "the machine was mostly idle")),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def json_safe(value: Any) -> Any:
    """NaN/inf -> None recursively, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Atomically write ``report`` as indented strict JSON."""
    atomic_write_text(json.dumps(json_safe(report), indent=2) + "\n", Path(path))


def add_quality_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the quality benchmarks: which flow, on which data, with which seed."""
    parser.add_argument("--flow", default=DEFAULT_FLOW, help="flow checkpoint path or registry name (default: cifar10)")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--images", type=int, default=1000, help="first N test images")
    parser.add_argument("--batch-size", type=int, default=256, help="images per flow batch (donors come from it)")
    parser.add_argument("--seed", type=int, default=0)
