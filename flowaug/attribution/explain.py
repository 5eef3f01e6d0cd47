"""``flowaug explain``: FIDO maps of a classifier on a few images, as a PNG grid and JSON numbers.

    flowaug explain --checkpoint runs/spurious/erm/seed0/model.pt --images spurious:test_shift --out runs/explain
    flowaug explain --checkpoint cifar10-classifier --images cifar10 --data-root ../shared/data --out runs/explain

Images: ``spurious[:SPLIT]`` (SpuriousBackgrounds, exact foreground masks; default split
test_shift) or ``cifar10`` / ``cifar100`` (the test split; no masks exist, so background reliance
is measured against the centre square, a proxy stated in the JSON). Each image is explained for
the class the model predicts. The grid shows per image: the image, the SSR map, the SDR map and
the image with everything outside the SSR region infilled.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from flowaug.arguments import positive_int
from flowaug.attribution.fido import SAMPLERS, fido, make_infill
from flowaug.attribution.scores import background_reliance, centre_square, region_auc, region_iou
from flowaug.errors import FlowaugError
from flowaug.fileio import atomic_path, atomic_write_text
from flowaug.masking.early import FILLS

CIFAR_PROXY_BORDER = 8   # the centre 16 x 16 of a 32 x 32 image stands in for the object


def load_images(spec: str, count: int, data_root: str | None, seed: int) -> tuple[Tensor, Tensor | None, Tensor, str]:
    """(images float (N,3,H,W) in [0,1], exact foreground masks or None, labels, description).

    SpuriousBackgrounds: ``count`` images drawn with ``seed`` from a split of max(count, 1000);
    CIFAR: the first ``count`` test images."""
    kind, _, split = spec.partition(":")
    if kind == "spurious":
        from flowaug.data.spurious import SpuriousBackgrounds

        data = SpuriousBackgrounds(split or "test_shift", num_images=max(count, 1000))
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count]
        images, labels, _, masks = data.tensors()
        return images[pick], masks[pick], labels[pick], data.description
    if kind in ("cifar10", "cifar100") and not split:
        from flowaug.data import load_cifar

        data = load_cifar(kind, "test", data_root)
        images = torch.from_numpy(data.images[:count]).permute(0, 3, 1, 2).float() / 255.0
        return images, None, torch.from_numpy(data.labels[:count]), data.description
    raise FlowaugError(f"unknown --images {spec!r}; use spurious, spurious:SPLIT, cifar10 or cifar100")


def grid_figure(rows: list[tuple[str, Tensor]], title: str, path: Path, zoom: float) -> None:
    """A labelled PNG: one row per (label, images (k,3,H,W) or maps (k,1,H,W) in [0,1])."""
    from torchvision.utils import make_grid

    tiles = torch.cat([row.expand(-1, 3, -1, -1) for _, row in rows]).cpu()
    k, size = rows[0][1].shape[0], tiles.shape[-1]
    grid = make_grid(tiles, nrow=k, padding=2, pad_value=1.0).permute(1, 2, 0).numpy()
    figure = Figure(figsize=(0.45 * zoom * k + 1.2, 0.45 * zoom * len(rows) + 0.5))
    axes = figure.subplots()
    axes.imshow(grid, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([2 + (size + 2) * i + size / 2 for i in range(len(rows))], [label for label, _ in rows],
                    fontsize=8)
    axes.set_title(title, fontsize=8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def explain(args: argparse.Namespace) -> dict[str, Any]:
    from flowaug.pretrained import load_model

    model = load_model(args.checkpoint, kind="classifier").eval()
    images, masks, labels, description = load_images(args.images, args.count, args.data_root, args.seed)
    with torch.no_grad():
        predicted = model(images).argmax(1)
    options = dict(steps=args.steps, masks_per_step=args.masks_per_step, infill=args.infill, progress=True)
    maps = {objective: fido(model, images, predicted, objective, args.sampler,
                            torch.Generator().manual_seed(args.seed), **options).maps
            for objective in ("ssr", "sdr")}
    foreground = masks if masks is not None else centre_square(images.shape[-1], CIFAR_PROXY_BORDER).expand(
        len(images), -1, -1, -1)
    ssr_region = (maps["ssr"] > 0.5).float()
    kept_only = make_infill(args.infill, generator=torch.Generator().manual_seed(args.seed))(images, ssr_region)
    with torch.no_grad():
        kept_predicted = model(kept_only).argmax(1)
    report = {
        "checkpoint": str(args.checkpoint), "images": description, "count": len(images),
        "settings": {"sampler": args.sampler, **{k: v for k, v in options.items() if k != "progress"},
                     "seed": args.seed, "explained_class": "predicted", "region_threshold": 0.5},
        "foreground": "exact masks" if masks is not None else
        f"proxy: the centre {images.shape[-1] - 2 * CIFAR_PROXY_BORDER}-pixel square (no masks exist)",
        "accuracy": float((predicted == labels).float().mean()),
        "accuracy_ssr_region_only": float((kept_predicted == labels).float().mean()),
        "per_image": [],
    }
    for objective, values in maps.items():
        report[f"{objective}_background_reliance"] = float(background_reliance(values, foreground).mean())
        report[f"{objective}_iou"] = float(region_iou(values, foreground).mean())
        report[f"{objective}_auc"] = float(region_auc(values, foreground).nanmean())
    reliance = background_reliance(maps["ssr"], foreground)
    for i in range(len(images)):
        report["per_image"].append({"label": int(labels[i]), "predicted": int(predicted[i]),
                                    "ssr_background_reliance": float(reliance[i]),
                                    "ssr_area": float(ssr_region[i].mean())})
    rows = [("image", images), ("SSR map", maps["ssr"]), ("SDR map", maps["sdr"]), ("SSR region only", kept_only)]
    if masks is not None:
        rows.insert(1, ("foreground", masks))
    args.out.mkdir(parents=True, exist_ok=True)
    grid_figure(rows, f"FIDO ({args.sampler} concrete dropout) of {Path(str(args.checkpoint)).name} on {description}",
                args.out / "explain_grid.png", args.zoom)
    atomic_write_text(json.dumps(report, indent=2) + "\n", args.out / "explain.json")
    return report


def run_explain(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise FlowaugError(f"--out {args.out} is a file; choose a folder")
    report = explain(args)
    print(f"wrote {args.out / 'explain_grid.png'} and explain.json: accuracy {100 * report['accuracy']:.1f}%, "
          f"SSR background reliance {report['ssr_background_reliance']:.3f} ({report['foreground']}), "
          f"SSR IoU {report['ssr_iou']:.3f}")
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("explain", help="FIDO attribution maps of a classifier (PNG grid + JSON)",
                                   description=__doc__.splitlines()[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="classifier checkpoint path or registry name")
    parser.add_argument("--images", default="spurious:test_shift",
                        help="spurious[:SPLIT] (exact masks) | cifar10 | cifar100 (test split)")
    parser.add_argument("--data-root", help="data root for cifar10/cifar100 (default: $FLOWAUG_DATA or ~/.cache)")
    parser.add_argument("--out", type=Path, required=True, help="folder for explain_grid.png and explain.json")
    parser.add_argument("--count", type=positive_int, default=16, help="images explained")
    parser.add_argument("--sampler", choices=SAMPLERS, default="simplified")
    parser.add_argument("--steps", type=positive_int, default=100)
    parser.add_argument("--masks-per-step", type=positive_int, default=4)
    parser.add_argument("--infill", choices=FILLS, default="mean",
                        help="what replaces removed pixels (mean removes colour too; blur keeps it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zoom", type=float, default=2.0, help="tile size factor of the PNG")
    parser.set_defaults(func=run_explain)
