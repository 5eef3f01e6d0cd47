"""``flowaug make-spurious``: write the SpuriousBackgrounds benchmark to an ``.npz``
(:mod:`flowaug.data.spurious`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from flowaug.arguments import HelpFormatter
from flowaug.data import spurious
from flowaug.data.spurious import CUES, DEFAULT_SIZES, write_npz


def run_make_spurious(args: argparse.Namespace) -> int:
    cue = "" if args.cue == "colour" else f"_{args.cue}"
    out = Path(args.out) / f"spurious{cue}_rho{args.correlation:g}_size{args.size}_seed{args.seed}.npz"
    write_npz(out, args.correlation, args.size, args.seed, cue=args.cue)
    print(f"wrote {out}: SpuriousBackgrounds (cue {args.cue}, rho={args.correlation:g}) splits "
          + ", ".join(f"{split} {n}" for split, n in DEFAULT_SIZES.items()))
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("make-spurious", help="write the SpuriousBackgrounds benchmark to an .npz",
                                   description=spurious.__doc__.splitlines()[0],
                                   formatter_class=HelpFormatter)
    parser.add_argument("--out", required=True,
                        help="folder for spurious[_<cue>]_rho<R>_size<S>_seed<N>.npz (no cue part for colour)")
    parser.add_argument("--cue", choices=CUES, default="colour", help="what the background group decides")
    parser.add_argument("--correlation", type=float, default=0.95, help="rho: P(background group = class)")
    parser.add_argument("--size", type=int, default=32, help="image height = width")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run_make_spurious)
