"""``flowaug evaluate``: a classifier checkpoint on clean, CIFAR-B, CIFAR-C, CIFAR-10.1 and
SpuriousBackgrounds suites (:func:`flowaug.evaluate`), as report.json and PNG plots."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from flowaug.arguments import HelpFormatter, positive_int
from flowaug.data import ALL_CORRUPTIONS
from flowaug.data.cifar_c import SEVERITIES
from flowaug.evaluation import SUITES, evaluate, headline
from flowaug.fileio import atomic_write_text
from flowaug.plots import write_report_plots
from flowaug.pretrained import load_model


def run_cli(args: argparse.Namespace) -> int:
    """``flowaug evaluate``: load a checkpoint, evaluate, write report.json and PNG plots to ``--out``."""
    model = load_model(args.checkpoint, kind="classifier")
    report = evaluate(model, args.suites, args.data_root, dataset=args.dataset, batch_size=args.batch_size,
                      device=args.device, corruptions=args.corruptions, severities=args.severities,
                      limit=args.limit, c_dir=args.c_dir)
    report["checkpoint"] = {"path": str(args.checkpoint), "meta": getattr(model, "meta", {})}
    out = Path(args.out)
    atomic_write_text(json.dumps(report, indent=2) + "\n", out / "report.json")
    plots = write_report_plots(report, out)
    for name, entry in report["suites"].items():
        print(f"{name}: {headline(entry)}  [{entry['description']}]")
    print(f"wrote {out / 'report.json'} and {len(plots)} plot(s)")
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register ``flowaug evaluate``."""
    parser = subparsers.add_parser("evaluate", help="evaluate a classifier checkpoint on clean/B/C/10.1 suites",
                                   description=run_cli.__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="classifier checkpoint (save_classifier) or registry name, e.g. cifar10-classifier")
    parser.add_argument("--suites", nargs="+", default=["clean", "cifar10b"], choices=list(SUITES))
    parser.add_argument("--data-root", default=None, help="data root (default: $FLOWAUG_DATA)")
    parser.add_argument("--out", required=True, type=Path, help="output folder for report.json and PNGs")
    parser.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100"],
                        help="what 'clean' means")
    parser.add_argument("--batch-size", type=positive_int, default=500)
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N images of each set")
    parser.add_argument("--c-dir", default=None, help="folder with the CIFAR-C .npy files")
    parser.add_argument("--corruptions", nargs="+", default=None, choices=list(ALL_CORRUPTIONS))
    parser.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES), choices=list(SEVERITIES))
    parser.set_defaults(func=run_cli)
