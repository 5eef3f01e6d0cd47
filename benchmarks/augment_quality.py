"""Does an augmentation keep the object? FlowAug in every mode, with and without its guard, beside
colour baselines, judged by a colour-invariant judge and by a colour-trained classifier.

Run from the repository root:

    .venv/bin/python benchmarks/augment_quality.py --flow cifar10 --judge cifar10-judge

Every FlowAug output comes from calling ``FlowAug(flow, p=1, mode, ...)`` on batches of
``--batch-size`` test images (donors are other images of the batch, as in training); the donors
are read from ``aug.last_params``. Each FlowAug run is made twice with the same draws
(``aug(x, params=aug.last_params)``): guard off, then guard on (``--guard``), so the guard's
effect is measured on exactly the same swaps. Baselines: FlowAug's non-learned twin
RegionalColourSwap (swap and mix, donors from the same batches as FlowAug's), kornia
ColorJitter(0.4, 0.4, 0.4, 0.1), ColorJitter(0.8, 0.8, 0.8, 0.3), a hue rotation by 0.25-0.5 of
the colour circle, grayscale.

Measures (``flowaug.quality``; over the images an augmentation changed, unless it says "all"):

- object_kept: the colour-invariant judge's accuracy on the outputs / on their originals (a
  classifier of standardised luminance trained under strong photometric augmentation: colour
  change alone cannot fool it);
- label_kept: the same with the colour-trained reference classifier (punishes honest colour change);
- structure_retention, mean_abs_change (all images), border colour correlation with the donor
  and with the original (swap, mix);
- rejected / fallback / changed fractions, and the guard's statistic (extra bits/dim of the output
  under its new code) quantiles.

Writes ``--out`` (JSON) and a 16 x 8 grid of random test images under swap with the guard on
(``<out stem>_swap_grid.png``: originals in the first row).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import kornia.augmentation as K
import kornia.enhance
import torch
from torch import Tensor, nn
from tqdm import tqdm

from flowaug.plots import save_labelled_grid
from common import REPO, add_quality_args, cifar10_test_batch, command_line, environment, write_json

from flowaug.augmentation import FlowAug, RegionalColourSwap
from flowaug.augmentation.baselines import GlobalRNGOp
from flowaug.errors import FlowaugError
from flowaug.pretrained import load_model
from flowaug.quality import label_preservation, mean_abs_change, nuisance_transfer, structure_retention

GRID_COLUMNS, GRID_ROWS = 16, 8
TARGETS = {"object_kept": 0.95, "rejected_fraction_max": 0.05, "border_corr_donor": 0.75,
           "structure_retention": 0.85, "mean_abs_change": 0.10}


class HueRotation(nn.Module):
    """Rotate every image's hue by a random 0.25-0.5 of the colour circle, either direction."""

    def forward(self, x: Tensor) -> Tensor:
        turn = 0.25 + 0.25 * torch.rand(x.shape[0], device=x.device)
        sign = torch.where(torch.rand(x.shape[0], device=x.device) < 0.5, -1.0, 1.0)
        return kornia.enhance.adjust_hue(x, (sign * turn * 2 * math.pi)[:, None, None])


BASELINES: dict[str, Callable[[], nn.Module]] = {
    "colorjitter(0.4,0.4,0.4,0.1)": lambda: K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0),
    "colorjitter(0.8,0.8,0.8,0.3)": lambda: K.ColorJitter(0.8, 0.8, 0.8, 0.3, p=1.0),
    "hue rotation 0.25-0.5": HueRotation,
    "grayscale": lambda: K.RandomGrayscale(p=1.0),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_quality_args(parser)
    parser.add_argument("--judge", default="cifar10-judge", help="colour-invariant judge (path or registry name)")
    parser.add_argument("--classifier", default="cifar10-classifier", help="colour-trained reference classifier")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.5, 0.7, 1.0])
    parser.add_argument("--mix-range", type=float, nargs=2, default=[0.5, 1.0])
    parser.add_argument("--guard", type=float, help="guard threshold in extra bits/dim (default: the flow's "
                        "calibrated one, else calibrated on the next --images test images)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "augment_quality.json")
    args = parser.parse_args()
    if args.images < 2 or args.batch_size < 2 or args.images % args.batch_size == 1:
        parser.error("--images and --batch-size must be >= 2 and no batch may hold a single image")
    return args


def judged(model: nn.Module, output: Tensor, original: Tensor, labels: Tensor, changed: Tensor) -> float:
    """Accuracy of ``model`` on the changed outputs / on their originals (NaN if nothing changed)."""
    if not changed.any():
        return math.nan
    return label_preservation(model, output[changed], original[changed], labels[changed])["label_preservation"]


def measures(output: Tensor, images: Tensor, labels: Tensor, changed: Tensor, donor: Tensor | None,
             judge: nn.Module, classifier: nn.Module) -> dict[str, Any]:
    """The measures of one run over N images (see the module docstring)."""
    result: dict[str, Any] = {
        "object_kept": judged(judge, output, images, labels, changed),
        "label_kept": judged(classifier, output, images, labels, changed),
        "structure_retention": structure_retention(output[changed], images[changed]) if changed.any() else math.nan,
        "mean_abs_change": mean_abs_change(output, images),
        "changed_fraction": changed.double().mean().item(),
    }
    if donor is not None and changed.sum() >= 2:
        transfer = nuisance_transfer(output[changed], images[changed], images[donor[changed]])
        result.update(border_corr_donor=transfer["corr_donor"], border_corr_original=transfer["corr_original"])
    return result


def run_flowaug(flow: nn.Module, images: Tensor, labels: Tensor, mode: str, temperature: float,
                args: argparse.Namespace, judge: nn.Module, classifier: nn.Module) -> list[dict[str, Any]]:
    """FlowAug with the guard off and on (same draws) over all images; one result per guard setting."""
    device = torch.device(args.device)
    aug = FlowAug(flow, p=1.0, mode=mode, temperature=temperature, mix_range=tuple(args.mix_range),
                  generator=args.seed, guard=None)
    outputs: dict[str, list[Tensor]] = {"off": [], "on": []}
    changed: dict[str, list[Tensor]] = {"off": [], "on": []}
    donors, extra_bits = [], []
    for start in range(0, images.shape[0], args.batch_size):
        batch = images[start:start + args.batch_size].to(device)
        for setting, guard in (("off", None), ("on", args.guard)):
            aug.guard = guard
            params = aug.last_params if setting == "on" else None
            outputs[setting].append(aug(batch, params=params).cpu())
            changed[setting].append(aug.last_augmented.clone())
            if setting == "off":
                extra_bits.append(aug.last_extra_bits.cpu())
        if mode != "prior":
            donors.append(aug.last_params.donor + start)
    donor = torch.cat(donors) if donors else None
    bits = torch.cat(extra_bits)
    rejected = torch.cat(changed["off"]) & ~torch.cat(changed["on"])
    results = []
    for setting in ("off", "on"):
        output, was_changed = torch.cat(outputs[setting]), torch.cat(changed[setting])
        result = {"mode": mode, "temperature": temperature if mode == "prior" else None,
                  "guard": None if setting == "off" else args.guard,
                  **measures(output, images, labels, was_changed, donor, judge, classifier)}
        if setting == "on":
            result["rejected_fraction"] = rejected.double().mean().item()
        else:
            finite = bits[torch.isfinite(bits)]
            result["extra_bits_quantiles"] = {f"q{int(q * 100)}": torch.quantile(finite, q).item()
                                              for q in (0.5, 0.9, 0.95, 0.99)} if finite.numel() else None
            result["fallback_fraction"] = 1 - torch.isfinite(bits).double().mean().item()
        results.append(result)
    return results


def run_regional_swap(mode: str, images: Tensor, labels: Tensor, args: argparse.Namespace, judge: nn.Module,
                      classifier: nn.Module) -> dict[str, Any]:
    """RegionalColourSwap (p=1) over all images in FlowAug's batches, its donors from ``last_params``."""
    aug = RegionalColourSwap(p=1.0, mode=mode, mix_range=tuple(args.mix_range), generator=args.seed)
    outputs, changed, donors = [], [], []
    for start in range(0, images.shape[0], args.batch_size):
        outputs.append(aug(images[start:start + args.batch_size].to(args.device)).cpu())
        changed.append(aug.last_augmented.clone())
        donors.append(aug.last_params.donor + start)
    return {"mode": f"regionalswap {mode}", "temperature": None, "guard": None,
            **measures(torch.cat(outputs), images, labels, torch.cat(changed), torch.cat(donors), judge, classifier)}


def run_baseline(name: str, images: Tensor, labels: Tensor, seed: int, judge: nn.Module,
                 classifier: nn.Module) -> dict[str, Any]:
    output = GlobalRNGOp(BASELINES[name](), generator=seed)(images)
    changed = (output - images).flatten(1).abs().amax(1) > 0
    return {"mode": name, "temperature": None, "guard": None,
            **measures(output, images, labels, changed, None, judge, classifier)}


def swap_grid(flow: nn.Module, images: Tensor, args: argparse.Namespace) -> list[tuple[str, Tensor]]:
    """Originals of 16 random test images, then 7 guarded swap draws with donors from the whole set."""
    pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(args.seed))[:GRID_COLUMNS]
    aug = FlowAug(flow, p=1.0, mode="swap", generator=args.seed, guard=args.guard)
    batch = images[: args.batch_size].clone()
    batch[:GRID_COLUMNS] = images[pick]
    rows = [("original", images[pick])]
    rows += [(f"swap #{i + 1}", aug(batch.to(args.device))[:GRID_COLUMNS].cpu()) for i in range(GRID_ROWS - 1)]
    return rows


def print_table(results: list[dict[str, Any]]) -> None:
    columns = ["object_kept", "label_kept", "border_corr_donor", "structure_retention", "mean_abs_change",
               "changed_fraction", "rejected_fraction"]
    print(f"\n{'run':34s} " + " ".join(f"{c[:17]:>17s}" for c in columns))
    for row in results:
        run = row["mode"] + ("" if row["temperature"] is None else f" T={row['temperature']:g}")
        run += "" if row["guard"] is None else f" guard {row['guard']:g}"
        values = ["-" if row.get(c) is None else f"{row[c]:.4f}" for c in columns]
        print(f"{run:34s} " + " ".join(f"{v:>17s}" for v in values))


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_start, started = os.getloadavg()[0], time.time()
    try:
        held_out, _, _ = cifar10_test_batch(args.data_root, 2 * args.images)
        images, labels, description = cifar10_test_batch(args.data_root, args.images)
        flow = load_model(args.flow, "flow").to(device)
        judge = load_model(args.judge, "classifier").to(device).eval()
        classifier = load_model(args.classifier, "classifier").to(device).eval()
    except (FlowaugError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.guard is None:
        calibrator = FlowAug(flow, generator=args.seed)
        args.guard = calibrator.guard if calibrator.guard is not None else \
            calibrator.calibrate_guard(held_out[args.images:].to(device), batch_size=args.batch_size)
    print(f"{description}: {args.images} test images, batches of {args.batch_size}, flow {args.flow}, "
          f"guard {args.guard:.4f} bits/dim, device {device}")
    runs = [("swap", 0.7), *(("prior", t) for t in args.temperatures), ("mix", 0.7)]
    results: list[dict[str, Any]] = []
    for mode, temperature in tqdm(runs, desc="FlowAug runs", unit="run"):
        results += run_flowaug(flow, images, labels, mode, temperature, args, judge, classifier)
    results += [run_regional_swap(mode, images, labels, args, judge, classifier) for mode in ("swap", "mix")]
    results += [run_baseline(name, images, labels, args.seed, judge, classifier) for name in BASELINES]
    print_table(results)
    grid_path = args.out.with_name(f"{args.out.stem}_swap_grid.png")
    save_labelled_grid(swap_grid(flow, images, args),
                       f"FlowAug swap, guard {args.guard:g}: {description}, flow {args.flow}", grid_path, zoom=2)
    report = {
        "benchmark": "augment_quality", "data": description, "command": command_line(),
        "images": args.images, "batch_size": args.batch_size, "seed": args.seed, "mix_range": args.mix_range,
        "flow": {"source": args.flow, "config": flow.config.to_dict(), "meta": getattr(flow, "meta", {})},
        "judge": {"source": args.judge, "meta": getattr(judge, "meta", {})},
        "classifier": {"source": args.classifier, "meta": getattr(classifier, "meta", {})},
        "targets": TARGETS, "runs": results, "grid": grid_path.name,
        "notes": ["every FlowAug output comes from FlowAug(p=1); guard off and on use the same draws (params replay)",
                  "object_kept / label_kept / structure_retention / border correlations are over the images the "
                  "augmentation changed; mean_abs_change is over all images"],
        "environment": environment(device, load_start), "wall_time_s": round(time.time() - started, 1),
    }
    write_json(report, args.out)
    print(f"wrote {args.out} and {grid_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
