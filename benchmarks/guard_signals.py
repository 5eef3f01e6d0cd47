"""Which per-image signal singles out the FlowAug outputs that lost their object? The guard's density
statistic beside structure signals, each as a rejection rule at a fixed rejection budget.

Run from the repository root:

    .venv/bin/python benchmarks/guard_signals.py --flow cifar10 --modes swap prior mix

Every output comes from calling ``FlowAug(flow, p=1, mode, guard=None)`` on batches of test images.
An output "lost its object" when the colour-invariant judge (``--judge``) classifies the original
correctly and the output wrongly. Signals (higher = more suspicious):

- density: FlowAug's own guard statistic (``aug.last_extra_bits``: the output's bits/dim under its
  new code minus the input's under its own);
- structure: 1 - correlation of the grayscale Sobel gradient-magnitude maps of input and output
  (whole image);
- luminance: 1 - correlation of the grayscale images;
- re-encoding: relative change of the semantic latent when the output is encoded again.

For each signal: ROC AUC as a detector of lost objects, and for each rejection budget b the rule
"reject where the signal exceeds its (1 - b) quantile over a calibration set" (the next ``--images``
test images, same draws procedure), with the rejected fraction and "object kept" (judge accuracy on
the outputs kept / on their originals) on the evaluation images. ``oracle`` rejects lost objects
first: the best any signal could do at that budget.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import mannwhitneyu
from torch import Tensor, nn
from tqdm import tqdm

from common import REPO, add_quality_args, cifar10_test_batch, command_line, environment, write_json

from flowaug.augmentation import FlowAug
from flowaug.errors import FlowaugError
from flowaug.pretrained import load_model
from flowaug.models.layers import luma
from flowaug.quality import correlation, gradient_magnitude

SIGNALS = ("density", "structure", "luminance", "re-encoding")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_quality_args(parser)
    parser.add_argument("--judge", default="cifar10-judge", help="colour-invariant judge (path or registry name)")
    parser.add_argument("--modes", nargs="+", default=["swap", "prior", "mix"], choices=["swap", "prior", "mix"])
    parser.add_argument("--temperature", type=float, default=0.7, help="prior mode's temperature")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.03, 0.05, 0.10],
                        help="rejection budgets (fractions of images)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "guard_signals.json")
    args = parser.parse_args()
    if args.images < 2 or args.batch_size < 2 or args.images % args.batch_size == 1:
        parser.error("--images and --batch-size must be >= 2 and no batch may hold a single image")
    if not all(0 < budget < 1 for budget in args.budgets):
        parser.error("--budgets must lie in (0, 1)")
    return args


@torch.no_grad()
def signals_and_outcomes(aug: FlowAug, judge: nn.Module, images: Tensor, labels: Tensor,
                         batch_size: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Each signal (N,) for FlowAug's outputs of ``images``, and whether the judge is right on the
    originals and on the outputs ((N,) bool each)."""
    values: dict[str, list[Tensor]] = {name: [] for name in SIGNALS}
    right_before, right_after = [], []
    for start in range(0, images.shape[0], batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        out = aug(x)
        values["density"].append(aug.last_extra_bits.double())
        values["structure"].append(1 - correlation(gradient_magnitude(x).flatten(1), gradient_magnitude(out).flatten(1)))
        values["luminance"].append(1 - correlation(luma(x).flatten(1), luma(out).flatten(1)))
        semantic = aug.flow.encode(x, validate=False).semantic
        again = aug.flow.encode(out, validate=False).semantic
        values["re-encoding"].append(((again - semantic).norm(dim=1) / semantic.norm(dim=1)).double())
        right_before.append(judge(x).argmax(1) == y)
        right_after.append(judge(out).argmax(1) == y)
    signals = {name: torch.cat(parts).nan_to_num(nan=np.inf).numpy() for name, parts in values.items()}
    return signals, torch.cat(right_before).numpy(), torch.cat(right_after).numpy()


def object_kept(right_before: np.ndarray, right_after: np.ndarray, kept: np.ndarray) -> float:
    """Judge accuracy on the kept outputs / on their originals (rejected images fall back to the input)."""
    return float(right_after[kept].sum() / right_before[kept].sum())


def evaluate_mode(flow: nn.Module, judge: nn.Module, images: Tensor, labels: Tensor, mode: str,
                  args: argparse.Namespace) -> dict[str, Any]:
    aug = FlowAug(flow, p=1.0, mode=mode, temperature=args.temperature, generator=args.seed, guard=None)
    n = args.images
    signals, before, after = signals_and_outcomes(aug, judge, images, labels, args.batch_size)
    lost = before & ~after  # the first n images are evaluated, the next n calibrate the thresholds
    result: dict[str, Any] = {
        "mode": mode, "temperature": args.temperature if mode == "prior" else None,
        "lost_fraction": float(lost[:n].mean()),
        "gained_fraction": float((~before & after)[:n].mean()),
        "object_kept_without_guard": object_kept(before[:n], after[:n], np.ones(n, bool)),
        "signals": {},
    }
    for name, score in signals.items():
        positives, negatives = score[:n][lost[:n]], score[:n][~lost[:n]]
        auc = mannwhitneyu(positives, negatives).statistic / (len(positives) * len(negatives))
        rules = []
        for budget in args.budgets:
            threshold = float(np.quantile(score[n:], 1 - budget))
            kept = score[:n] <= threshold
            rules.append({"budget": budget, "threshold": threshold, "rejected_fraction": float(1 - kept.mean()),
                          "object_kept": object_kept(before[:n], after[:n], kept)})
        result["signals"][name] = {"auc": float(auc), "rules": rules}
    order = np.argsort(~lost[:n], kind="stable")  # lost objects first
    oracle = []
    for budget in args.budgets:
        kept = np.ones(n, bool)
        kept[order[:round(budget * n)]] = False
        oracle.append({"budget": budget, "rejected_fraction": float(1 - kept.mean()),
                       "object_kept": object_kept(before[:n], after[:n], kept)})
    result["oracle"] = oracle
    return result


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    load_start, started = os.getloadavg()[0], time.time()
    try:
        images, labels, description = cifar10_test_batch(args.data_root, 2 * args.images)
        flow = load_model(args.flow, "flow")
        judge = load_model(args.judge, "classifier").eval()
    except (FlowaugError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{description}: {args.images} evaluation + {args.images} calibration test images, flow {args.flow}")
    results = [evaluate_mode(flow, judge, images, labels, mode, args) for mode in tqdm(args.modes, desc="modes")]
    for result in results:
        print(f"{result['mode']}: lost {result['lost_fraction']:.3f}, object kept without guard "
              f"{result['object_kept_without_guard']:.3f}")
        for name, entry in [*result["signals"].items(), ("oracle", {"auc": None, "rules": result["oracle"]})]:
            rules = "  ".join(f"b={rule['budget']:.2f}: rejected {rule['rejected_fraction']:.3f} kept "
                              f"{rule['object_kept']:.3f}" for rule in entry["rules"])
            auc = "" if entry["auc"] is None else f"AUC {entry['auc']:.3f}"
            print(f"  {name:12s} {auc:10s} {rules}")
    report = {"benchmark": "guard_signals", "data": description, "command": command_line(), "flow": args.flow,
              "judge": args.judge, "images": args.images, "batch_size": args.batch_size, "seed": args.seed,
              "results": results, "environment": environment(torch.device("cpu"), load_start),
              "wall_time_s": round(time.time() - started, 1)}
    write_json(report, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
