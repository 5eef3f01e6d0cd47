"""``flowaug explain``: FIDO maps of a classifier on a few images, as a PNG grid and JSON numbers.

    flowaug explain --checkpoint runs/spurious/erm/seed0/model.pt --images spurious@test_shift --out runs/explain
    flowaug explain --checkpoint cifar10-classifier --images cifar10 --data-root ../shared/data --out runs/explain

Images: a dataset spec (:mod:`flowaug.data.specs`), e.g. ``spurious@test_shift`` (SpuriousBackgrounds,
exact foreground masks), ``cifar10`` (the test split) or ``folder:PATH``; without masks, background reliance is measured against the centre square, a proxy
stated in the JSON. Each image is explained for the class the model predicts. The grid shows per image: the image, the SSR map, the SDR map and
the image with everything outside the SSR region infilled.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from flowaug.arguments import HelpFormatter, positive_int
from flowaug.attribution.fido import SAMPLERS, fido, make_infill
from flowaug.attribution.scores import background_reliance, centre_square, region_auc, region_iou
from flowaug.data.specs import load_image_sample
from flowaug.errors import FlowaugError
from flowaug.pretrained import load_model
from flowaug.fileio import atomic_write_text
from flowaug.masking.early import FILLS
from flowaug.models.predict import predict
from flowaug.plots import save_labelled_grid

CIFAR_PROXY_BORDER = 8   # the centre 16 x 16 of a 32 x 32 image stands in for the object


def explain(args: argparse.Namespace) -> dict[str, Any]:
    model = load_model(args.checkpoint, kind="classifier").eval()
    sample = load_image_sample(args.images, args.count, args.seed, args.data_root)
    images, masks, labels, description = sample.images, sample.masks, sample.labels, sample.description
    predicted = predict(model, images)
    options = dict(steps=args.steps, masks_per_step=args.masks_per_step, infill=args.infill, progress=True)
    maps = {objective: fido(model, images, predicted, objective, args.sampler,
                            torch.Generator().manual_seed(args.seed), **options).maps
            for objective in ("ssr", "sdr")}
    foreground = masks if masks is not None else centre_square(images.shape[-1], CIFAR_PROXY_BORDER).expand(
        len(images), -1, -1, -1)
    ssr_region = (maps["ssr"] > 0.5).float()
    kept_only = make_infill(args.infill, generator=torch.Generator().manual_seed(args.seed))(images, ssr_region)
    kept_predicted = predict(model, kept_only)
    report = {
        "checkpoint": str(args.checkpoint), "images": description, "count": len(images),
        "settings": {"sampler": args.sampler, **{k: v for k, v in options.items() if k != "progress"},
                     "seed": args.seed, "explained_class": "predicted", "region_threshold": 0.5},
        "foreground": "exact masks" if masks is not None else
        f"proxy: the centre {images.shape[-1] - 2 * CIFAR_PROXY_BORDER}-pixel square (no masks exist)",
        "accuracy": None if labels is None else float((predicted == labels).float().mean()),
        "accuracy_ssr_region_only": None if labels is None else float((kept_predicted == labels).float().mean()),
        "prediction_kept_ssr_region_only": float((kept_predicted == predicted).float().mean()),
        "per_image": [],
    }
    for objective, values in maps.items():
        report[f"{objective}_background_reliance"] = float(background_reliance(values, foreground).mean())
        report[f"{objective}_iou"] = float(region_iou(values, foreground).mean())
        report[f"{objective}_auc"] = float(region_auc(values, foreground).nanmean())
    reliance = background_reliance(maps["ssr"], foreground)
    for i in range(len(images)):
        report["per_image"].append({"label": None if labels is None else int(labels[i]), "predicted": int(predicted[i]),
                                    "ssr_background_reliance": float(reliance[i]),
                                    "ssr_area": float(ssr_region[i].mean())})
    rows = [("image", images), ("SSR map", maps["ssr"]), ("SDR map", maps["sdr"]), ("SSR region only", kept_only)]
    if masks is not None:
        rows.insert(1, ("foreground", masks))
    args.out.mkdir(parents=True, exist_ok=True)
    save_labelled_grid(rows, f"FIDO ({args.sampler} concrete dropout) of {Path(str(args.checkpoint)).name} on "
                       f"{description}", args.out / "explain_grid.png", args.zoom)
    atomic_write_text(json.dumps(report, indent=2) + "\n", args.out / "explain.json")
    return report


def run_explain(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise FlowaugError(f"--out {args.out} is a file; choose a folder")
    report = explain(args)
    print(f"wrote {args.out / 'explain_grid.png'} and explain.json: SSR background reliance "
          f"{report['ssr_background_reliance']:.3f} ({report['foreground']}), SSR IoU {report['ssr_iou']:.3f}")
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("explain", help="FIDO attribution maps of a classifier (PNG grid + JSON)",
                                   description=__doc__.splitlines()[0],
                                   formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="classifier checkpoint path or registry name")
    parser.add_argument("--images", default="spurious@test_shift",
                        help="dataset spec KIND[:PATH][@SPLIT]: spurious[@SPLIT] (exact masks), cifar10, cifar100 "
                             "(default split test), folder:PATH, npz:PATH")
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
