"""Does FlowAug move the background where the bias lives? Swaps on SpuriousBackgrounds, through FlowAug.

Run from the repository root (the judge is the ``reference`` run of the spurious sweep: a small
CNN trained at rho = 0.1, where the background says nothing, so it reads the shape):

    .venv/bin/python benchmarks/spurious_flowaug.py --flow spurious \\
        --judge runs/sweep_spurious/reference/seed0/model.pt

For each donor policy (any, other_group, balanced) ``FlowAug(flow, p=1, mode="swap", donor=policy,
generator=seed)`` augments the test split (rho = 0.95, so 95% of the images are aligned) in batches
of ``--batch-size`` with their groups; donors are read from ``aug.last_params``. Measures, over the
images FlowAug changed (the guard's rejections are counted apart):

- group_changed: the output's background group (:func:`flowaug.data.spurious.background_group`
  on the exact mask) differs from the original's;
- took_donor_group: the output's background group is the donor's;
- conflicting_after (all images): the share of outputs whose background group is not their class,
  the training signal against the shortcut (the split itself has about 5%);
- object_kept: the judge's accuracy on the outputs divided by its accuracy on their originals;
- background_change / foreground_change: mean |output - original| outside / inside the exact mask.

Writes ``--out`` (JSON) and ``<out stem>_grid.png``: 16 test images (original, donor, swap) under
the ``balanced`` policy.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowaug.plots import save_labelled_grid
from common import REPO, command_line, environment, write_json
from flowaug import FlowAug, load_classifier
from flowaug.data.spurious import SpuriousBackgrounds, background_group

POLICIES = ("any", "other_group", "balanced")


@torch.no_grad()
def swap_all(aug: FlowAug, images: Tensor, labels: Tensor, groups: Tensor, batch_size: int
             ) -> tuple[Tensor, Tensor, Tensor]:
    """FlowAug outputs for every image, each one's donor index into ``images`` and whether it changed."""
    outputs, donors, changed = [], [], []
    for start in range(0, len(images), batch_size):
        rows = slice(start, start + batch_size)
        outputs.append(aug(images[rows], labels[rows], groups=groups[rows])[0])
        donors.append(aug.last_params.donor + start)
        changed.append(aug.last_augmented.cpu())
    return torch.cat(outputs), torch.cat(donors), torch.cat(changed)


@torch.no_grad()
def judge_accuracy(judge: torch.nn.Module, images: Tensor, labels: Tensor) -> float:
    predictions = torch.cat([judge(images[i:i + 500]).argmax(1) for i in range(0, len(images), 500)])
    return float((predictions == labels).float().mean())


def measure(aug: FlowAug, judge: torch.nn.Module, tensors: tuple[Tensor, ...], batch_size: int) -> dict[str, Any]:
    """The measures above for ``tensors`` = (images, labels, groups, masks) of the test split."""
    images, labels, groups, masks = tensors
    output, donor, changed = swap_all(aug, images, labels, groups, batch_size)
    after = background_group(output, masks)
    foreground = masks.expand_as(images).bool()
    difference = (output - images).abs()
    c = changed
    return {
        "changed_fraction": float(c.float().mean()),
        "rejected_fraction": aug.rejected_count / len(images),
        "group_changed": float((after[c] != groups[c]).float().mean()),
        "took_donor_group": float((after[c] == groups[donor[c]]).float().mean()),
        "conflicting_before": float((groups != labels).float().mean()),
        "conflicting_after": float((after != labels).float().mean()),
        "object_kept": judge_accuracy(judge, output[c], labels[c]) / judge_accuracy(judge, images[c], labels[c]),
        "background_change": float(difference[c][~foreground[c]].mean()),
        "foreground_change": float(difference[c][foreground[c]].mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow", default="spurious", help="flow checkpoint path or registry name")
    parser.add_argument("--judge", required=True, help="classifier checkpoint trained at rho = 0.1 (model.pt)")
    parser.add_argument("--images", type=int, default=2000, help="test images (rho = 0.95 test split)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/spurious_flowaug.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_start = time.perf_counter()
    judge = load_classifier(args.judge).eval()
    split = SpuriousBackgrounds("test", 0.95, args.images)
    report: dict[str, Any] = {
        "benchmark": "spurious_flowaug", "command": command_line(), "data": split.description,
        "flow": args.flow, "judge": args.judge, "policies": {},
        "environment": environment(torch.device("cpu"), load_start),
    }
    tensors = split.tensors()
    for policy in POLICIES:
        aug = FlowAug(args.flow, p=1.0, mode="swap", donor=policy, generator=args.seed)
        report["policies"][policy] = measure(aug, judge, tensors, args.batch_size)
        report["guard_bits"] = aug.guard
        print(policy, {k: round(v, 3) for k, v in report["policies"][policy].items()}, flush=True)
    write_json(report, args.out)

    images, labels, groups, _ = tensors
    shown = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[:args.batch_size]
    aug = FlowAug(args.flow, p=1.0, mode="swap", donor="balanced", generator=args.seed)
    output = aug(images[shown], labels[shown], groups=groups[shown])[0]
    first = slice(0, 16)
    save_labelled_grid([("original", images[shown][first]), ("donor", images[shown][aug.last_params.donor][first]),
                        ("swap", output[first])],
                       f"FlowAug swap (donor policy balanced) on SpuriousBackgrounds test, flow {args.flow}",
                       args.out.with_name(args.out.stem + "_grid.png"), zoom=2.0)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
