"""The flow itself as a density model and a codec: bits/dim, round trip and cost.

Run from the repository root:

    .venv/bin/python benchmarks/flow_quality.py --flow cifar10

``--flow`` takes a checkpoint path or a name of the pretrained registry
(``flowaug.available_pretrained()``). Measured on the CIFAR-10 test split from ``--data-root``:

- round trip: max |decode(encode(x)) - x| on the first ``--images`` test images;
- test bits/dim (negative ELBO) over the first ``--bpd-images`` test images, one fixed generator;
- cost: encode+decode of a batch of ``--cost-batch`` images versus one training step
  (forward, backward, SGD step) of a fresh "small" classifier on the same batch, timed
  alternately in the same process; the ratio is the portable number.

What the augmentations look like and whether they keep the object is measured through FlowAug
itself in ``benchmarks/augment_quality.py``. Prints a target / measured / pass table and writes the
JSON to ``--out``. Exit code 0 when the run completed, whether or not the targets were met.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from tqdm import tqdm

from common import REPO, add_quality_args, cifar10_test_batch, command_line, environment, write_json

from flowaug.errors import FlowaugError
from flowaug.flow import PRESETS, DecoupledFlow
from flowaug.models import build_classifier
from flowaug.pretrained import load_model
from flowaug.quality import round_trip_error

GRID_COLUMNS = 10
BPD_TARGETS = {"cpu-small": 3.15, "cpu-small-colour": 3.15}  # preset -> max test bits/dim (issues 4, 11)
ROUND_TRIP_TARGET = 1e-4
COMPARE: dict[str, Callable[[float, float], bool]] = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}


def preset_of(flow: DecoupledFlow) -> str:
    """The preset name whose config equals the flow's, else "custom"."""
    return next((name for name, config in PRESETS.items() if config == flow.config), "custom")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def mean_bits_per_dim(flow: DecoupledFlow, images: Tensor, batch_size: int, seed: int) -> float:
    """Mean bits/dim over ``images`` (N,3,S,S) with one CPU-seeded generator on the flow's device."""
    device = flow.initialized.device
    generator = torch.Generator(device=device).manual_seed(seed)
    total = 0.0
    for start in tqdm(range(0, images.shape[0], batch_size), desc="bits/dim", unit="batch"):
        total += flow.bits_per_dim(images[start:start + batch_size].to(device), generator).double().sum().item()
    return total / images.shape[0]


def measure_cost(flow: DecoupledFlow, images: Tensor, labels: Tensor, repeats: int, seed: int) -> dict[str, Any]:
    """Seconds per batch of encode+decode vs one "small" classifier training step, timed alternately."""
    device = flow.initialized.device
    x, y = images.to(device), labels.to(device)
    torch.manual_seed(seed)
    classifier = build_classifier("small", 10).to(device).train()
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def flow_step() -> None:
        with torch.no_grad():
            flow.decode(flow.encode(x))

    def classifier_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(classifier(x), y).backward()
        optimizer.step()

    steps = {"flow_encode_decode": flow_step, "classifier_train_step": classifier_step}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for repeat in tqdm(range(repeats + 1), desc="cost", unit="round"):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            if repeat:  # round 0 warms up
                times[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    return {
        "batch": x.shape[0], "repeats": repeats, "device": str(device),
        "ratio_flow_to_classifier_step": seconds["flow_encode_decode"] / seconds["classifier_train_step"],
        "this_machine_only": {
            **{f"{name}_s_median": round(s, 4) for name, s in seconds.items()},
            **{f"{name}_images_per_s": round(x.shape[0] / s, 1) for name, s in seconds.items()},
            "all_times_s": {name: [round(t, 4) for t in values] for name, values in times.items()},
        },
    }


def check(name: str, measured: float | None, comparison: str, bound: float) -> dict[str, Any]:
    defined = measured is not None and not math.isnan(measured)
    passed = COMPARE[comparison](measured, bound) if comparison and defined else None
    return {"measure": name, "target": f"{comparison} {bound:g}" if comparison else None,
            "measured": measured if defined else None, "pass": passed}


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'measure':44s} {'target':>10s} {'measured':>12s}  pass")
    for row in rows:
        measured = "n/a" if row["measured"] is None else f"{row['measured']:.4g}"
        verdict = {True: "yes", False: "NO", None: "-"}[row["pass"]]
        print(f"{row['measure']:44s} {row['target'] or '-':>10s} {measured:>12s}  {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_quality_args(parser)
    parser.add_argument("--bpd-images", type=int, default=10000, help="test images for bits/dim")
    parser.add_argument("--cost-batch", type=int, default=256)
    parser.add_argument("--cost-repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "flow_quality.json")
    args = parser.parse_args()
    if args.images < 2 or args.bpd_images < 1 or args.cost_batch < 2:
        parser.error("--images and --cost-batch need at least 2 images, --bpd-images at least 1")

    device = torch.device(args.device)
    load_start = os.getloadavg()[0]
    started = time.time()
    try:
        flow = load_model(args.flow, "flow").to(device).eval()
        x, y, description = cifar10_test_batch(args.data_root, max(args.images, args.bpd_images, args.cost_batch))
    except (FlowaugError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    images = x[: args.images]
    preset = preset_of(flow)
    print(f"{description}: {x.shape[0]} test images loaded; flow preset {preset}; device {device}; "
          f"{torch.get_num_threads()} threads")

    rows: list[dict[str, Any]] = []
    round_trip = round_trip_error(flow, images, args.batch_size)
    rows.append(check("round_trip_max_error", round_trip, "<=", ROUND_TRIP_TARGET))
    bpd = mean_bits_per_dim(flow, x[: args.bpd_images], args.batch_size, args.seed)
    bpd_target = BPD_TARGETS.get(preset)
    rows.append(check("test_bits_per_dim", bpd, "<=" if bpd_target else "", bpd_target or math.nan))

    cost = measure_cost(flow, x[: args.cost_batch], y[: args.cost_batch], args.cost_repeats, args.seed)
    rows.append(check("cost: encode+decode / classifier train step", cost["ratio_flow_to_classifier_step"],
                      "", math.nan))
    print_table(rows)

    checked = [row["pass"] for row in rows if row["pass"] is not None]
    report = {
        "benchmark": "flow_quality",
        "data": description,
        "command": command_line(),
        "flow": {"source": args.flow, "preset": preset, "config": flow.config.to_dict(),
                 "meta": getattr(flow, "meta", {})},
        "images": args.images, "bpd_images": args.bpd_images, "seed": args.seed,
        "round_trip_max_error": round_trip, "test_bits_per_dim": bpd,
        "cost": cost, "targets": rows,
        "all_targets_met": all(checked), "targets_checked": len(checked), "targets_met": sum(checked),
        "environment": environment(device, load_start),
        "wall_time_s": round(time.time() - started, 1),
    }
    write_json(report, args.out)
    print(f"\n{sum(checked)}/{len(checked)} targets met; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
