"""Does FlowAug move the background where the bias lives? Swaps on SpuriousBackgrounds, through
FlowAug and its non-learned twin RegionalColourSwap, on the whole image and on the background only,
and through BackgroundTransplant (the donor's whole background, its object hole filled).

Run from the repository root (the judge is the ``reference`` run of the cue's spurious sweep: a
small CNN trained at rho = 0.1, where the background says nothing, so it reads the shape):

    .venv/bin/python benchmarks/spurious_flowaug.py --flow spurious \\
        --judge runs/sweep_spurious/reference/seed0/model.pt
    .venv/bin/python benchmarks/spurious_flowaug.py --cue texture --flow spurious-texture \\
        --judge runs/sweep_spurious_texture/reference/seed0/model.pt \\
        --out benchmarks/results/spurious_texture_flowaug.json

Each run (:data:`RUNS`) calls ``FlowAug(flow, p=1, mode="swap", donor=policy, generator=seed)``,
``RegionalColourSwap(p=1, donor=policy, generator=seed)`` or ``BackgroundTransplant(p=1,
fill="shift" | "mean" | "flow", flow=flow, generator=seed)`` (always with masks) on the test
split (rho = 0.95, so 95% of the images are aligned) in batches of ``--batch-size`` with their
groups, and with the exact masks (``masks=``) in the ``masked`` runs; donors are read from
``aug.last_params``. Measures, over the images that changed (FlowAug's guard rejections are
counted apart):

- group_changed / took_donor_group (colour cue only: the background's hue group by
  :func:`flowaug.data.spurious.background_group` on the exact mask): the output's group differs
  from the original's / is the donor's;
- conflicting_after (all images, colour cue): the share of outputs whose background group is not
  their class, the training signal against the shortcut (the split itself has about 5%);
- pattern_moved / pattern_kept (texture cue only: the background's pattern family, read by a small
  CNN trained here on background-only images of the training split, object filled with grey, see
  :func:`train_pattern_judge`; its accuracy on the test backgrounds is in the JSON): over the
  changed images whose donor has another family, the share whose output background shows the
  donor's family / its own;
- object_kept: the judge's accuracy on the outputs divided by its accuracy on their originals;
- background_change / foreground_change: mean |output - original| outside / inside the exact mask.

``fills`` (:func:`fill_errors`): how well BackgroundTransplant paints the donor's hole, on freshly
rendered images whose true backgrounds (without objects) the renderer knows: mean |output - the
donor's true background| over the hole (the donor's mask grown by 1 px, less the image's own
object), for each fill (the flow's at several temperatures) and none (the donor's object left
in). A flat fill scores well on this error without drawing any pattern: read it beside the
images. The colour cue's backgrounds are not periodic (4x4 blocks of random brightness), the
texture cue's are.

The ``paste`` row is a reference, not an augmentation flowaug ships: the image's object (exact
mask) pasted onto the whole image of its donor in the first run, hole not filled, i.e. what a
complete change of background content looks like to these measures (the donor's own object stays
where the image's object does not cover it).

Writes ``--out`` (JSON) and ``<out stem>_grid.png``: 16 test images (original, donor, then every
run with policy ``any``).
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
from flowaug import BackgroundTransplant, FlowAug, RegionalColourSwap, build_classifier, load_classifier
from flowaug.augmentation import DonorAugmentation
from flowaug.augmentation.transplant import dilate
from flowaug.data.spurious import CUES, PATTERNS, SpuriousBackgrounds, background_group, render_batch
from flowaug.models.predict import predict
from flowaug.pretrained import load_model
from flowaug.training import train_classifier

FILL_TEMPERATURES = (0.3, 0.7, 1.0)
RUNS = (("flowaug", "any", False), ("flowaug", "other_group", False), ("flowaug", "balanced", False),
        ("flowaug", "any", True), ("regionalswap", "any", False), ("regionalswap", "any", True),
        ("transplant-shift", "any", True), ("transplant-mean", "any", True), ("transplant-flow", "any", True))
"""(augmentation, donor policy, background only)."""


def build(name: str, flow: str, policy: str, seed: int) -> DonorAugmentation:
    if name == "flowaug":
        return FlowAug(flow, p=1.0, mode="swap", donor=policy, generator=seed)
    if name.startswith("transplant-"):
        fill = name.removeprefix("transplant-")
        return BackgroundTransplant(p=1.0, donor=policy, fill=fill, flow=flow if fill == "flow" else None,
                                    generator=seed)
    return RegionalColourSwap(p=1.0, mode="swap", donor=policy, generator=seed)


@torch.no_grad()
def swap_all(aug: DonorAugmentation, tensors: tuple[Tensor, ...], masked: bool, batch_size: int
             ) -> tuple[Tensor, Tensor, Tensor]:
    """Outputs for every image, each one's donor index into the images and whether it changed."""
    images, labels, groups, masks = tensors
    outputs, donors, changed = [], [], []
    for start in range(0, len(images), batch_size):
        rows = slice(start, start + batch_size)
        outputs.append(aug(images[rows], labels[rows], groups=groups[rows], masks=masks[rows] if masked else None)[0])
        donors.append(aug.last_params.donor + start)
        changed.append(aug.last_augmented.cpu())
    return torch.cat(outputs), torch.cat(donors), torch.cat(changed)


def judge_accuracy(judge: torch.nn.Module, images: Tensor, labels: Tensor) -> float:
    return float((predict(judge, images) == labels).float().mean())


def background_only(images: Tensor, masks: Tensor) -> Tensor:
    """(N, 3, H, W) with the object (mask 1) filled with mid grey."""
    return torch.lerp(images, torch.full_like(images, 0.5), masks)


def train_pattern_judge(epochs: int, seed: int) -> tuple[torch.nn.Module, float]:
    """A small CNN reading the background pattern family (:data:`PATTERNS`) of background-only images,
    trained on the texture cue's training split; returns it and its accuracy on the test backgrounds
    (families are drawn independently of colour, so it has to read the pattern)."""
    torch.manual_seed(seed)  # the initial weights
    model = build_classifier("small", len(PATTERNS))
    train = SpuriousBackgrounds("train", 0.95, cue="texture", seed=seed).tensors()
    train_classifier(model, background_only(train[0], train[3]), train[2], epochs=epochs, seed=seed,
                     channels_last=False, progress=False)
    test = SpuriousBackgrounds("test", 0.95, 2000, cue="texture", seed=seed).tensors()
    return model.eval(), judge_accuracy(model, background_only(test[0], test[3]), test[2])


def paste(tensors: tuple[Tensor, ...], donor: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The reference row: each image's object (exact mask) pasted onto its ``donor`` image."""
    images, masks = tensors[0], tensors[3]
    return torch.lerp(images[donor], images, masks), donor, donor != torch.arange(len(images))


def fill_errors(flow: str, cue: str, num_images: int, seed: int) -> dict[str, float]:
    """Mean absolute error (0-1 scale) of each fill against the donor's true background, over its hole."""
    images, masks, backgrounds = render_batch(num_images, cue, seed)
    model = load_model(flow, kind="flow")
    augs = {fill: BackgroundTransplant(p=1.0, fill=fill, generator=seed) for fill in ("shift", "mean")}
    augs.update({f"flow T={t:g}": BackgroundTransplant(p=1.0, fill="flow", flow=model, temperature=t, generator=seed)
                 for t in FILL_TEMPERATURES})
    errors = {}
    for name, aug in augs.items():
        output = aug(images, masks=masks)
        donor = aug.last_params.donor  # the same donors for every fill (one seed)
        hole = (dilate(masks[donor] > 0, aug.dilation) & (masks == 0)).expand_as(images)
        errors[name] = float((output - backgrounds[donor]).abs()[hole].mean())
        if "none" not in errors:  # the unfilled reference, once: every fill has the same donors and holes
            errors["none"] = float((images[donor] - backgrounds[donor]).abs()[hole].mean())
    return errors


def measure(output: Tensor, donor: Tensor, changed: Tensor, judge: torch.nn.Module, tensors: tuple[Tensor, ...],
            cue: str, pattern_judge: torch.nn.Module | None = None) -> dict[str, Any]:
    """The measures above for ``tensors`` = (images, labels, groups, masks) of the test split."""
    images, labels, groups, masks = tensors
    foreground = masks.expand_as(images).bool()
    difference = (output - images).abs()
    c = changed
    result = {
        "changed_fraction": float(c.float().mean()),
        "object_kept": judge_accuracy(judge, output[c], labels[c]) / judge_accuracy(judge, images[c], labels[c]),
        "background_change": float(difference[c][~foreground[c]].mean()),
        "foreground_change": float(difference[c][foreground[c]].mean()),
    }
    if cue == "colour":
        after = background_group(output, masks)
        result.update(group_changed=float((after[c] != groups[c]).float().mean()),
                      took_donor_group=float((after[c] == groups[donor[c]]).float().mean()),
                      conflicting_before=float((groups != labels).float().mean()),
                      conflicting_after=float((after != labels).float().mean()))
    if pattern_judge is not None:
        other = c & (groups[donor] != groups)
        seen = predict(pattern_judge, background_only(output[other], masks[other]))
        result.update(pattern_moved=float((seen == groups[donor[other]]).float().mean()),
                      pattern_kept=float((seen == groups[other]).float().mean()))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cue", choices=CUES, default="colour", help="what the background group decides")
    parser.add_argument("--flow", default="spurious", help="flow checkpoint path or registry name")
    parser.add_argument("--judge", required=True, help="classifier checkpoint trained at rho = 0.1 (model.pt)")
    parser.add_argument("--images", type=int, default=2000, help="test images (rho = 0.95 test split)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pattern-epochs", type=int, default=3,
                        help="epochs of the texture cue's pattern judge (trained here on the training split)")
    parser.add_argument("--fill-images", type=int, default=512, help="rendered images for the fill errors")
    parser.add_argument("--runs", nargs="+", choices=sorted({name for name, _, _ in RUNS}),
                        help="only these augmentations' rows and the paste reference (default: every row and the fills)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/spurious_flowaug.json")
    args = parser.parse_args(argv)
    runs = RUNS if args.runs is None else tuple(run for run in RUNS if run[0] in args.runs)
    torch.set_num_threads(1)
    load_start = time.perf_counter()
    judge = load_classifier(args.judge).eval()
    split = SpuriousBackgrounds("test", 0.95, args.images, cue=args.cue)
    report: dict[str, Any] = {
        "benchmark": "spurious_flowaug", "command": command_line(), "data": split.description,
        "flow": args.flow, "judge": args.judge, "runs": {},
        "environment": environment(torch.device("cpu"), load_start),
    }
    pattern_judge = None
    if args.cue == "texture":
        pattern_judge, report["pattern_judge_accuracy"] = train_pattern_judge(args.pattern_epochs, args.seed)
        print(f"pattern judge: {report['pattern_judge_accuracy']:.3f} on test backgrounds", flush=True)
    tensors = split.tensors()
    shown = torch.randperm(args.batch_size, generator=torch.Generator().manual_seed(args.seed))[:16]
    grid = [("original", tensors[0][shown])]
    first_donors = None  # the paste reuses the first run's donors, so the grid's donor row is its donor too
    for name, policy, masked in (*runs, ("paste", "any", True)):
        aug = None if name == "paste" else build(name, args.flow, policy, args.seed)
        output, donor, changed = paste(tensors, first_donors) if aug is None else \
            swap_all(aug, tensors, masked, args.batch_size)
        first_donors = donor if first_donors is None else first_donors
        label = f"{name}/{policy}" + ("/masked" if masked else "")
        report["runs"][label] = {**measure(output, donor, changed, judge, tensors, args.cue, pattern_judge),
                                 "rejected_fraction": getattr(aug, "rejected_count", 0) / len(output)}
        print(label, {k: round(v, 3) for k, v in report["runs"][label].items()}, flush=True)
        if policy == "any":
            if len(grid) == 1:
                grid.append(("donor", tensors[0][donor[shown]]))
            grid.append((label.replace("/any", ""), output[shown]))
    if args.runs is None:
        report["fills"] = fill_errors(args.flow, args.cue, args.fill_images, args.seed)
        print("fill error (mean |fill - true background| over the donor's hole):",
              {k: round(v, 4) for k, v in report["fills"].items()}, flush=True)
    write_json(report, args.out)
    save_labelled_grid(grid, f"swaps (donor policy any) on SpuriousBackgrounds test, cue {args.cue}, flow {args.flow}",
                       args.out.with_name(args.out.stem + "_grid.png"), zoom=2.0)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
