"""FIDO attribution measured: samplers against masks per step, background reliance of the benchmark's
classifiers, classifying the SSR region alone, and SSR maps of a CIFAR-10 classifier per CIFAR10-B subgroup.

Run from the repository root after the spurious sweep (``recipes/sweep_spurious.json``) has trained
its seed-0 models under ``--runs``:

    .venv/bin/python benchmarks/attribution.py --runs runs/sweep_spurious --data-root ../shared/data

Parts (every map from :func:`flowaug.attribution.fido`, SSR objective, mean infill, explaining the
class the model predicts; a region is ``map > 0.5``):

- ``samplers``: the rho = 0.1 ``reference`` classifier on ``--sampler-images`` test_shift images.
  For 1, 2, 4, 8, 16, 32 masks per step and each sampler: the variance of the gradient estimate
  (over 16 independent draws, per pixel, averaged; at the start and after 50 steps of a shared
  simplified run with 32 masks), the maps' IoU and AUC against the exact foreground after
  ``--steps`` steps, and seconds per image.
- ``reliance``: SSR background reliance (share of map mass outside the exact foreground) of each
  method's seed-0 classifier on ``--reliance-images`` aligned and as many conflicting test_shift
  images, with IoU; methods whose classifier takes masks (early/late masking) are left out: early
  masking cannot see the background at all, by construction.
- ``ssr_region_only``: ERM's accuracy on those images before and after infilling everything
  outside its SSR region, the classifier unchanged.
- ``cifar10``: SSR maps of ``cifar10-classifier`` on CIFAR-10 test images (JPEG-q75 proxy),
  background reliance against the centre 16 x 16 square (a proxy: CIFAR has no masks) per
  CIFAR10-B subgroup.

Writes ``--out`` (JSON) and ``<out stem>_grid.png`` (ERM and reference SSR maps on the same
conflicting images).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from flowaug.plots import save_labelled_grid
from common import REPO, command_line, environment, write_json
from flowaug import load_classifier
from flowaug.attribution import SAMPLERS, background_reliance, centre_square, fido, region_auc, region_iou
from flowaug.attribution.fido import make_infill, objective_term
from flowaug.attribution.samplers import sample_masks
from flowaug.data.base import to_float_chw
from flowaug.data.spurious import SpuriousBackgrounds
from flowaug.models.predict import predict
from flowaug.pretrained import load_model

MASK_COUNTS = (1, 2, 4, 8, 16, 32)
SETTINGS = dict(objective="ssr", infill="mean")
RELIANCE_METHODS = ("erm", "reference", "colorjitter", "flowaug-any", "flowaug-other_group", "flowaug-balanced")


def gradient_variance(model: nn.Module, images: Tensor, labels: Tensor, theta: Tensor, sampler: str,
                      masks: int, draws: int, seed: int) -> float:
    """Mean per-pixel variance of d(loss)/d(theta) over ``draws`` independent estimates with ``masks`` masks."""
    fill = make_infill("mean")
    generator = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(draws):
        logits = theta.clone().requires_grad_(True)
        z = sample_masks(logits, sampler, masks, 0.5, generator).flatten(0, 1)
        term = objective_term(model, images.repeat(masks, 1, 1, 1), labels.repeat(masks), z, "ssr", fill)
        term.sum().backward()
        grads.append(logits.grad / masks)
    return float(torch.stack(grads).var(0).mean())


def samplers_part(reference: nn.Module, count: int, steps: int, seed: int) -> dict[str, Any]:
    images, labels, _, masks = SpuriousBackgrounds("test_shift", num_images=1000).tensors()
    pick = torch.randperm(1000, generator=torch.Generator().manual_seed(seed))[:count]
    images, masks = images[pick], masks[pick]
    labels = predict(reference, images)
    warm = fido(reference, images, labels, sampler="simplified", generator=torch.Generator().manual_seed(seed),
                steps=50, masks_per_step=32, progress=False, **SETTINGS).maps
    thetas = {"start": torch.zeros_like(warm), "after 50 steps": torch.logit(warm.clamp(1e-6, 1 - 1e-6))}
    rows = []
    for masks_per_step in MASK_COUNTS:
        for sampler in SAMPLERS:
            start = time.perf_counter()
            result = fido(reference, images, labels, sampler=sampler, generator=torch.Generator().manual_seed(seed),
                          steps=steps, masks_per_step=masks_per_step, progress=False, **SETTINGS)
            seconds = time.perf_counter() - start
            row = {"sampler": sampler, "masks_per_step": masks_per_step,
                   "iou": float(region_iou(result.maps, masks).mean()),
                   "auc": float(region_auc(result.maps, masks).nanmean()),
                   "seconds_per_image": seconds / len(images),
                   "gradient_variance": {name: gradient_variance(reference, images, labels, theta, sampler,
                                                                 masks_per_step, 16, seed)
                                         for name, theta in thetas.items()}}
            rows.append(row)
            print("samplers", row, flush=True)
    return {"images": len(images), "steps": steps, "rows": rows}


def reliance_part(runs: Path, count: int, steps: int, seed: int) -> tuple[dict[str, Any], dict[str, Tensor]]:
    images, labels, groups, masks = SpuriousBackgrounds("test_shift", num_images=5000).tensors()
    generator = torch.Generator().manual_seed(seed)
    aligned = torch.nonzero(labels == groups).squeeze(1)
    conflicting = torch.nonzero(labels != groups).squeeze(1)
    pick = torch.cat([aligned[torch.randperm(len(aligned), generator=generator)[:count]],
                      conflicting[torch.randperm(len(conflicting), generator=generator)[:count]]])
    images, labels, masks = images[pick], labels[pick], masks[pick]
    is_aligned = torch.arange(len(pick)) < count
    results, maps = {}, {}
    for method in RELIANCE_METHODS:
        path = runs / method / "seed0" / "model.pt"
        if not path.is_file():
            print(f"reliance: {path} missing, skipped", flush=True)
            continue
        model = load_classifier(path).eval()
        guess = predict(model, images)
        result = fido(model, images, guess, sampler="simplified", generator=torch.Generator().manual_seed(seed),
                      steps=steps, masks_per_step=4, progress=False, **SETTINGS)
        reliance, iou = background_reliance(result.maps, masks), region_iou(result.maps, masks)
        kept = make_infill("mean")(images, (result.maps > 0.5).float())
        results[method] = {
            subset: {"background_reliance": float(reliance[rows].mean()), "iou": float(iou[rows].mean()),
                     "accuracy": float((guess[rows] == labels[rows]).float().mean()),
                     "accuracy_ssr_region_only": float((predict(model, kept[rows]) == labels[rows]).float().mean())}
            for subset, rows in (("aligned", is_aligned), ("conflicting", ~is_aligned))}
        results[method]["foreground_area"] = float(masks.mean())
        maps[method] = result.maps
        print("reliance", method, results[method], flush=True)
    return ({"images_per_subset": count, "steps": steps, "methods": results},
            {"images": images[~is_aligned][:16], "masks": masks[~is_aligned][:16],
             **{m: v[~is_aligned][:16] for m, v in maps.items()}})


def cifar_part(data_root: str, count: int, steps: int, seed: int) -> dict[str, Any]:
    from flowaug.data import CIFAR10B

    data = CIFAR10B(data_root)
    model = load_model("cifar10-classifier", kind="classifier").eval()
    pick = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(seed))[:count]
    images = to_float_chw(data.images[pick.numpy()])
    subgroups = torch.from_numpy(data.subgroups[pick.numpy()])
    result = fido(model, images, predict(model, images), sampler="simplified",
                  generator=torch.Generator().manual_seed(seed), steps=steps, masks_per_step=4, progress=False,
                  **SETTINGS)
    reliance = background_reliance(result.maps, centre_square(32, 8).expand(len(images), -1, -1, -1))
    per_subgroup = {int(g): {"images": int((subgroups == g).sum()), "ring_reliance": float(reliance[subgroups == g].mean())}
                    for g in torch.unique(subgroups)}
    return {"data": f"{data.description}, {count} random test images", "proxy": "mass outside the centre 16x16 "
            "square (75% of the area): a uniform map scores 0.75", "ring_reliance": float(reliance.mean()),
            "per_subgroup": per_subgroup}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs/sweep_spurious")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared/data"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--sampler-images", type=int, default=16)
    parser.add_argument("--reliance-images", type=int, default=40, help="aligned images (and as many conflicting)")
    parser.add_argument("--cifar-images", type=int, default=200)
    parser.add_argument("--parts", default="samplers,reliance,cifar10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/attribution.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_start = time.perf_counter()
    parts = args.parts.split(",")
    report: dict[str, Any] = {"benchmark": "attribution", "command": command_line(), "settings": SETTINGS,
                              "environment": environment(torch.device("cpu"), load_start)}
    if "reliance" in parts:
        report["reliance"], shown = reliance_part(args.runs, args.reliance_images, args.steps, args.seed)
        write_json(report, args.out)
        rows = [("conflicting image", shown["images"]), ("foreground", shown["masks"].expand(-1, 3, -1, -1))]
        rows += [(f"SSR {m}", shown[m].expand(-1, 3, -1, -1)) for m in ("erm", "reference") if m in shown]
        save_labelled_grid(rows, "FIDO SSR maps (simplified sampler, mean infill) on SpuriousBackgrounds "
                           "test_shift conflicting images", args.out.with_name(args.out.stem + "_grid.png"), zoom=2.0)
    if "samplers" in parts:
        report["samplers"] = samplers_part(load_classifier(args.runs / "reference/seed0/model.pt").eval(),
                                           args.sampler_images, args.steps, args.seed)
        write_json(report, args.out)
    if "cifar10" in parts:
        report["cifar10"] = cifar_part(args.data_root, args.cifar_images, args.steps, args.seed)
        print("cifar10", report["cifar10"], flush=True)
    write_json(report, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
