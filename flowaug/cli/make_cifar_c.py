"""``flowaug make-cifar-c``: generate CIFAR-10-C / CIFAR-100-C in the official layout
(:mod:`flowaug.data.make_cifar_c`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from flowaug.arguments import HelpFormatter, non_negative_int, positive_int
from flowaug.data.cifar_c import ALL_CORRUPTIONS, SEVERITIES
from flowaug.data import make_cifar_c as generator
from flowaug.data.make_cifar_c import generate_from_test_split


def run(args: argparse.Namespace) -> int:
    """The ``flowaug make-cifar-c`` command."""
    status = generate_from_test_split(args.dataset, args.data_root, args.out, args.limit, args.corruptions,
                                      args.severities, args.seed, args.workers, args.frost_dir)
    for name, state in status.items():
        print(f"  {name}: {state}")
    if any(state.startswith("partial") for state in status.values()):
        print("make-cifar-c: partial blocks are kept in .partial/; rerun with the missing --severities "
              "to write those corruption files")
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register ``make-cifar-c``."""
    parser = subparsers.add_parser(
        "make-cifar-c", help="generate CIFAR-10-C / CIFAR-100-C in the official layout",
        description=generator.__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
    )
    parser.add_argument("--dataset", choices=("cifar10", "cifar100"), default="cifar10")
    parser.add_argument("--data-root", default=None, help="data root with the CIFAR test set (default $FLOWAUG_DATA)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (the CIFAR-C loader's c_dir)")
    parser.add_argument("--corruptions", nargs="+", choices=ALL_CORRUPTIONS, default=list(ALL_CORRUPTIONS),
                        metavar="NAME", help=f"default: all 19 ({', '.join(ALL_CORRUPTIONS)})")
    parser.add_argument("--severities", nargs="+", type=int, choices=SEVERITIES, default=list(SEVERITIES),
                        help="default 1 2 3 4 5; a subset keeps its blocks until the rest are generated")
    parser.add_argument("--limit", type=positive_int, default=None, help="only the first N test images (5N rows per file)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--workers", type=positive_int, default=1, help="worker processes over (corruption, severity) blocks")
    parser.add_argument("--frost-dir", type=Path, default=None,
                        help="folder with the frost textures frost1.png ... frost6.jpg (the official generator draws "
                             "frost1..frost5; default <data-root>/cifar_c_frost)")
    parser.set_defaults(func=run)
