"""Quality of FlowAug augmentations, per mode and prior temperature, through the real transform.

Run from the repository root (on a shared CPU, under ``nice``):

    nice -n 10 .venv/bin/python benchmarks/augment_quality.py [--flow runs/flow-cpu-small/flow.pt]

The first ``--images`` CIFAR-10 test images go through ``FlowAug(flow, p=1, mode, temperature,
generator=seed)`` in batches of ``--batch-size`` (swap and mix donors are other images of the same
batch, as in training), for mode "swap", "prior" at each ``--temperatures`` and "mix". The donors
FlowAug draws are replayed from a copy of its generator (``flowaug.augmentation.params.draw_params``)
and checked against a direct decode. Measures (``flowaug.quality``, docs/DESIGN.md):

- label preservation: reference-classifier accuracy on the outputs / on the originals;
- nuisance transfer: border-colour (outer 4-pixel ring) correlation of the output with the donor and
  with the original, shift toward the donor (swap, mix); prior samples have no donor, so for every
  mode the border-colour spread across images (std per channel, channel mean) of outputs and
  originals and the mean RGB distance of each output's border colour from its original's are given;
- structure retention (central gradient-map correlation) and mean absolute change;
- finite fraction: 1 - FlowAug ``fallback_count`` / images (a non-finite decode falls back to the
  original image, which the other measures then see unchanged).

Writes ``--out`` (JSON) and one PNG grid per mode beside it (``<out stem>_<mode>.png``: originals in
the first row, augmentations below).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from common import REPO, add_quality_args, cifar10_test_batch, command_line, environment, save_grid, write_json

from flowaug.augmentation import FlowAug
from flowaug.augmentation.params import draw_params
from flowaug.errors import FlowaugError
from flowaug.flow import Latents
from flowaug.pretrained import load_model
from flowaug.quality import augmentation_quality, border_colour

REPLAY_TOLERANCE = 1e-4
GRID_BATCH = 64
MAX_GRID_BYTES = 200 * 1024  # CIFAR tiles compress poorly (~2-3 KB each): keep grids small


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_quality_args(parser)
    parser.add_argument("--grid-columns", type=int, default=6, help="images per grid row")
    parser.add_argument("--grid-draws", type=int, default=4, help="augmentation rows per grid (per temperature "
                        "for prior: half of it, at least 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "augment_quality.json")
    args = parser.parse_args()
    if args.images < 2 or args.batch_size < 2 or not 1 <= args.grid_columns <= min(args.images, GRID_BATCH):
        parser.error(f"--images and --batch-size must be >= 2, --grid-columns in [1, min(--images, {GRID_BATCH})]")
    if args.images % args.batch_size == 1:
        parser.error("the last batch would hold a single image, which has no swap/mix donor; change --batch-size")
    return args


@dataclass(frozen=True)
class Augmented:
    """FlowAug outputs (N,3,S,S) float32 in [0,1] on the CPU, the donor of each image (N,) int64 index
    into the same N images (-1 for prior) and FlowAug's counters."""

    output: Tensor
    donor: Tensor
    fallback_count: int
    augmented_count: int


def replay_donors(aug: FlowAug, batch_size: int) -> tuple[Tensor, Tensor]:
    """The donors (B,) and mix weights (B,) FlowAug's next call will draw, from a copy of its generator."""
    replay = torch.Generator().set_state(aug.generator.get_state())
    params = draw_params(batch_size, aug.p, None, aug.donor, aug.mix_range, replay)
    return params.donor, params.mix_weight


@torch.no_grad()
def check_replay(aug: FlowAug, batch: Tensor, output: Tensor, donor: Tensor, weight: Tensor, count: int = 4) -> None:
    """Decode the first ``count`` images directly with the replayed donors; they must equal FlowAug's outputs."""
    flow, device = aug.flow, batch.device
    semantic, own = flow.encode(batch[:count])
    donor_codes = flow.encode_nuisance(batch[donor[:count].to(device)])
    w = torch.ones(count, 1, device=device) if aug.mode == "swap" else weight[:count, None].to(device)
    expected = flow.decode(Latents(semantic, (1 - w) * own + w * donor_codes)).clamp(0, 1).cpu()
    finite = torch.isfinite(expected).flatten(1).all(1)
    error = (expected[finite] - output[:count][finite]).abs().max().item() if finite.any() else 0.0
    if error > REPLAY_TOLERANCE:
        raise RuntimeError(f"replayed donors do not reproduce FlowAug's outputs (max error {error:.2e}); "
                           "FlowAug's parameter draws changed: update replay_donors")


def augment_all(flow: nn.Module, images: Tensor, mode: str, temperature: float, mix_range: tuple[float, float],
                seed: int, batch_size: int, device: torch.device) -> Augmented:
    """Run ``FlowAug(p=1)`` batch by batch over ``images`` (N,3,S,S) on the CPU, recording donors."""
    aug = FlowAug(flow, p=1.0, mode=mode, temperature=temperature, mix_range=mix_range, generator=seed)
    outputs, donors = [], []
    for start in tqdm(range(0, images.shape[0], batch_size), desc=f"{mode} T={temperature:g}", unit="batch",
                      leave=False):
        batch = images[start:start + batch_size].to(device)
        donor, weight = replay_donors(aug, batch.shape[0])
        output = aug(batch).cpu()
        if mode != "prior" and start == 0:
            check_replay(aug, batch, output, donor, weight)
        outputs.append(output)
        donors.append(donor + start if mode != "prior" else torch.full_like(donor, -1))
    return Augmented(torch.cat(outputs), torch.cat(donors), aug.fallback_count, aug.augmented_count)


def border_spread(output: Tensor, original: Tensor, width: int = 4) -> dict[str, float]:
    """Border-colour spread across images (std per RGB channel, channel mean) of outputs and originals,
    and the mean RGB distance of each output's border colour from its original's (all in [0, 1] units)."""
    out, orig = border_colour(output, width).double(), border_colour(original, width).double()
    return {"border_std_output": out.std(0).mean().item(), "border_std_original": orig.std(0).mean().item(),
            "border_shift_from_original": (out - orig).norm(dim=1).mean().item()}


def measure(result: Augmented, images: Tensor, labels: Tensor, classifier: nn.Module,
            batch_size: int) -> dict[str, Any]:
    """All quality measures of one run (see the module docstring)."""
    donor = None if (result.donor < 0).all() else images[result.donor]
    total = result.fallback_count + result.augmented_count
    return {
        **augmentation_quality(result.output, images, labels, classifier, donor=donor, batch_size=batch_size),
        **border_spread(result.output, images),
        "finite_fraction": 1 - result.fallback_count / total,
        "fallback_count": result.fallback_count,
        "augmented_count": result.augmented_count,
    }


def grid_rows(flow: nn.Module, images: Tensor, mode: str, temperatures: list[float], args: argparse.Namespace,
              device: torch.device) -> list[tuple[str, Tensor]]:
    """Originals, then FlowAug draws of a batch of the first images (``--grid-columns`` shown per row)."""
    batch, k = images[:GRID_BATCH].to(device), args.grid_columns
    rows = [("original", images[:k])]
    draws = [(t, max(1, args.grid_draws // 2)) for t in temperatures] if mode == "prior" else [(0.7, args.grid_draws)]
    for temperature, count in draws:
        aug = FlowAug(flow, p=1.0, mode=mode, temperature=temperature, mix_range=tuple(args.mix_range),
                      generator=args.seed)
        label = f"T={temperature:g}" if mode == "prior" else mode
        rows += [(f"{label} #{i + 1}", aug(batch)[:k].cpu()) for i in range(count)]
    return rows


def print_table(results: list[dict[str, Any]]) -> None:
    columns = ["label_preservation", "border_corr_donor", "border_corr_original", "border_std_output",
               "structure_retention", "mean_abs_change", "finite_fraction"]
    print(f"\n{'run':10s} " + " ".join(f"{c[:20]:>20s}" for c in columns))
    for row in results:
        run = row["mode"] if row["temperature"] is None else f"prior T={row['temperature']:g}"
        values = ["n/a" if row[c] is None else f"{row[c]:.4f}" for c in columns]
        print(f"{run:10s} " + " ".join(f"{v:>20s}" for v in values))


def flow_label(flow: nn.Module, source: str) -> str:
    meta = getattr(flow, "meta", {})
    state = "" if meta.get("finished", True) else f", UNFINISHED (step {meta.get('global_step')})"
    return f"flow {source}{state}"


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_start, started = os.getloadavg()[0], time.time()
    try:
        images, labels, description = cifar10_test_batch(args.data_root, args.images)
        flow = load_model(args.flow, "flow").to(device)
        classifier = load_model(args.classifier, "classifier").to(device).eval()
    except (FlowaugError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    label = flow_label(flow, args.flow)
    print(f"{description}: {args.images} test images, batches of {args.batch_size}, {label}, device {device}")

    runs = [("swap", 0.7), *(("prior", t) for t in args.temperatures), ("mix", 0.7)]
    results, grids = [], {}
    for mode, temperature in tqdm(runs, desc="runs", unit="run"):
        augmented = augment_all(flow, images, mode, temperature, tuple(args.mix_range), args.seed,
                                args.batch_size, device)
        measures = measure(augmented, images, labels, classifier, args.batch_size)
        results.append({"mode": mode, "temperature": temperature if mode == "prior" else None, **measures})
    for mode in dict.fromkeys(mode for mode, _ in runs):
        path = args.out.with_name(f"{args.out.stem}_{mode}.png")
        save_grid(grid_rows(flow, images, mode, args.temperatures, args, device),
                  f"FlowAug {mode}: {description}, {label}", path)
        grids[mode] = {"path": str(path), "bytes": path.stat().st_size}
        if path.stat().st_size > MAX_GRID_BYTES:
            print(f"warning: {path} is {path.stat().st_size // 1024} KB (> {MAX_GRID_BYTES // 1024} KB); "
                  "lower --grid-columns or --grid-draws")
    print_table(results)

    report = {
        "benchmark": "augment_quality",
        "data": description,
        "command": command_line(),
        "images": args.images, "batch_size": args.batch_size, "seed": args.seed, "mix_range": args.mix_range,
        "flow": {"source": args.flow, "config": flow.config.to_dict(), "meta": getattr(flow, "meta", {})},
        "classifier": {"source": args.classifier, "meta": getattr(classifier, "meta", {})},
        "runs": results,
        "grids": grids,
        "notes": ["every output comes from FlowAug(p=1) with generator=seed; donors are other images of the "
                  "same batch; a fallback image equals its original in every measure",
                  "border_corr_donor / border_shift_toward_donor are undefined (null) for prior mode: no donor"],
        "environment": environment(device, load_start),
        "wall_time_s": round(time.time() - started, 1),
    }
    write_json(report, args.out)
    print(f"wrote {args.out} and {len(grids)} grids: " + ", ".join(f"{g['path']} ({g['bytes'] // 1024} KB)"
                                                                   for g in grids.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
