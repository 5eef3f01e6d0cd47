"""Cost of FlowAug's parameter draws and of a whole call without the flow's work, by batch size.

Run from the repository root:

    .venv/bin/python benchmarks/flowaug_draw_cost.py

For B = ``--batch-sizes`` (CPU, one thread) it times, side by side in one process:

- ``draw``: ``flowaug.augmentation.params.draw_params`` (O(B): one sort by label or group), per
  mode and donor policy, and ``forward_parameters``: the same through ``aug.forward_parameters(x, y,
  groups=g)``, which also validates the images (one pass over them);
- ``draw_before``: the draw FlowAug made before parameters became replayable (a B x B random score
  matrix for the donors, kept here only as the baseline of the before/after ratio);
- ``call``: a whole ``aug(x, y)`` with a cheap stand-in flow (encode = flatten, decode = reshape,
  zero log-determinants), so what is timed is FlowAug's own bookkeeping, not the flow.

Reports median seconds per call and the ratio T(4096) / T(1024) of each (4 for linear cost,
16 for quadratic). Writes ``--out`` (JSON).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from common import REPO, command_line, environment, write_json

from flowaug.augmentation import FlowAug
from flowaug.augmentation.params import draw_params
from flowaug.flow import Latents, get_preset

RUNS = [("swap", "any"), ("swap", "same_class"), ("mix", "balanced"), ("prior", "any")]


class StandInFlow(nn.Module):
    """A flow that costs almost nothing: semantic = the pixels, nuisance = the mean colour."""

    def __init__(self) -> None:
        super().__init__()
        self.config = get_preset("tiny", nuisance_dim=4)
        self.num_dims = 3 * 32 * 32
        self.code_enters_image_end_only = False
        self.anchor = nn.Parameter(torch.zeros(()))

    def encode(self, x: Tensor, validate: bool = True, with_log_det: bool = False):
        latents = Latents(x.flatten(1), x.mean(dim=(2, 3)).repeat(1, 2)[:, :4])
        return (latents, torch.zeros(len(x))) if with_log_det else latents

    def encode_nuisance(self, x: Tensor, validate: bool = True) -> Tensor:
        return self.encode(x).nuisance

    def decode(self, latents: Latents, with_log_det: bool = False):
        out = latents.semantic.view(-1, 3, 32, 32) + latents.nuisance[:, :3, None, None] * 0.0
        return (out, torch.zeros(len(out))) if with_log_det else out

    def nuisance_from_noise(self, u: Tensor) -> Tensor:
        return u


def draw_before(batch_size: int, p: float, generator: torch.Generator) -> Tensor:
    """The previous donor draw: a B x B score matrix, argmax per row (quadratic in B)."""
    apply = torch.rand(batch_size, generator=generator) < p
    allowed = torch.ones(batch_size, batch_size, dtype=torch.bool)
    allowed.fill_diagonal_(False)
    scores = torch.rand(batch_size, batch_size, generator=generator).masked_fill(~allowed, -1.0)
    return torch.where(apply, scores.argmax(dim=1), torch.arange(batch_size))


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "flowaug_draw_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start, started = os.getloadavg()[0], time.time()
    flow = StandInFlow()
    rows: list[dict[str, Any]] = []
    for batch_size in args.batch_sizes:
        generator = torch.Generator().manual_seed(batch_size)
        x = torch.rand(batch_size, 3, 32, 32, generator=generator)
        y, g = torch.randint(0, 10, (batch_size,), generator=generator), torch.randint(0, 8, (batch_size,), generator=generator)
        row: dict[str, Any] = {"batch_size": batch_size,
                               "draw_before_s": median_seconds(lambda: draw_before(batch_size, 0.5, generator),
                                                               args.repeats)}
        for mode, donor in RUNS:
            aug = FlowAug(flow, p=0.5, mode=mode, donor=donor, generator=0, guard=None)
            row[f"draw_{mode}_{donor}_s"] = median_seconds(
                lambda: draw_params(batch_size, 0.5, mode, donor, labels=y, groups=g, nuisance_dim=4,
                                    generator=generator), args.repeats)
            row[f"forward_parameters_{mode}_{donor}_s"] = median_seconds(
                lambda: aug.forward_parameters(x, y, groups=g), args.repeats)
            row[f"call_{mode}_{donor}_s"] = median_seconds(lambda: aug(x, y, groups=g), args.repeats)
        rows.append(row)
        print({k: (f"{v * 1e3:.3f} ms" if k.endswith("_s") else v) for k, v in row.items()})
    by_size = {row["batch_size"]: row for row in rows}
    ratios = {}
    if 1024 in by_size and 4096 in by_size:
        ratios = {key.removesuffix("_s"): by_size[4096][key] / by_size[1024][key]
                  for key in by_size[1024] if key.endswith("_s")}
        print("T(4096)/T(1024):", {k: round(v, 2) for k, v in ratios.items()})
    write_json({"benchmark": "flowaug_draw_cost", "command": command_line(), "repeats": args.repeats,
                "flow": "stand-in (flatten / reshape, no flow work)", "rows": rows,
                "ratio_4096_over_1024": ratios, "environment": environment(torch.device("cpu"), load_start),
                "wall_time_s": round(time.time() - started, 1)}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
