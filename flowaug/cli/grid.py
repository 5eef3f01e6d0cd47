"""``flowaug grid``: a labelled figure of images beside several FlowAug augmentations of each.

    flowaug grid --out grid.png                                        # CIFAR-10 test images, swap
    flowaug grid --flow spurious --images-from spurious --mode swap --zoom 3 --out spurious.png
    flowaug grid --images-from folder:photos/ --resize --out photos.png

Columns are images; rows are the originals, the donors of the first augmentation (swap and mix)
and ``--per-image`` augmentations, each row one FlowAug call on the whole batch (p = 1), so
swap donors are the other images shown.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from torch import Tensor

from flowaug.arguments import HelpFormatter, non_negative_int, positive_int
from flowaug.augmentation.flowaug import FlowAug
from flowaug.augmentation.params import MODES
from flowaug.data.specs import load_image_sample
from flowaug.errors import FlowaugError
from flowaug.plots import save_labelled_grid


def augmentation_rows(aug: FlowAug, images: Tensor, per_image: int) -> list[tuple[str, Tensor]]:
    """(label, images) rows: originals, the first call's donors (swap, mix), then ``per_image``
    outputs of ``aug`` with p forced to 1 (restored afterwards). images: (N,3,H,W) float in [0,1]."""
    p = aug.p
    aug.p = 1.0
    try:
        outputs = [aug(images) for _ in range(per_image)]
        first = aug.last_params
    finally:
        aug.p = p
    rows = [("original", images)]
    if aug.mode in ("swap", "mix"):
        outputs = [aug(images, params=first)] + outputs[1:]   # the donors shown are the first row's
        rows.append(("donor", images[first.donor]))
    return rows + [(f"{aug.mode} {i + 1}", output) for i, output in enumerate(outputs)]


def run_grid(args: argparse.Namespace) -> int:
    if args.images < 2 and args.mode in ("swap", "mix"):
        raise FlowaugError(f"--images {args.images}: {args.mode} takes each image's donor from the other images "
                           f"shown; show at least 2")
    aug = FlowAug(args.flow, mode=args.mode, temperature=args.temperature, generator=args.seed, resize=args.resize)
    size = aug.flow.config.image_size
    sample = load_image_sample(args.images_from, args.images, args.seed, args.data_root, size=size)
    rows = augmentation_rows(aug, sample.images, args.per_image)
    title = f"FlowAug {args.mode} ({args.flow}) on {sample.description}"
    out = save_labelled_grid(rows, title, Path(args.out), args.zoom)
    print(f"wrote {out}: {args.images} images of {sample.description} and {args.per_image} {args.mode!r} "
          f"augmentations each; {aug.fallback_count} non-finite and {aug.rejected_count} guard-rejected decodes "
          f"fell back to the input")
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("grid", help="save a labelled PNG of images beside their FlowAug augmentations",
                                   description=__doc__.splitlines()[0],
                                   formatter_class=HelpFormatter)
    parser.add_argument("--flow", default="cifar10", help="registry name or flow checkpoint path")
    parser.add_argument("--images-from", default="cifar10",
                        help="dataset spec KIND[:PATH][@SPLIT]: cifar10, cifar100 (default split test), spurious[@SPLIT], "
                             "folder:PATH, npz:PATH")
    parser.add_argument("--data-root", default=None, help="data root for cifar10/cifar100 "
                                                          "(default: $FLOWAUG_DATA or ~/.cache/flowaug/data)")
    parser.add_argument("--out", default="grid.png", help="PNG file to write")
    parser.add_argument("--mode", default="swap", choices=MODES)
    parser.add_argument("--temperature", type=float, default=0.7, help="prior temperature (mode prior)")
    parser.add_argument("--images", type=positive_int, default=8, help="columns: images shown")
    parser.add_argument("--per-image", type=positive_int, default=4, help="rows of augmentations")
    parser.add_argument("--zoom", type=float, default=2.0, help="tile size factor")
    parser.add_argument("--resize", action="store_true",
                        help="let FlowAug resize images of another size to the flow's and back (folders are "
                             "already read at the flow's size)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="which images, and FlowAug's draws")
    parser.set_defaults(func=run_grid)
