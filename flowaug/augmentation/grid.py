"""``flowaug grid``: a picture of originals beside several FlowAug augmentations of each."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from flowaug.arguments import non_negative_int, positive_int
from flowaug.augmentation.flowaug import FlowAug
from flowaug.augmentation.params import MODES
from flowaug.data import load_cifar
from flowaug.fileio import atomic_path


def augmentation_grid(aug: FlowAug, images: Tensor, per_image: int) -> Tensor:
    """(3, H', W') grid: row i = image i then ``per_image`` augmentations of it (p forced to 1).

    images: (N,3,H,W) float in [0,1]; every call augments the whole batch, so swap donors are
    the other images of the batch.
    """
    p = aug.p
    aug.p = 1.0
    try:
        columns = [images] + [aug(images) for _ in range(per_image)]
    finally:
        aug.p = p
    tiles = torch.stack(columns, dim=1).flatten(0, 1)
    return make_grid(tiles, nrow=per_image + 1, padding=2, pad_value=1.0)


def run_grid(args: argparse.Namespace) -> int:
    test = load_cifar(args.dataset, args.split, args.data_root)
    generator = torch.Generator().manual_seed(args.seed)
    chosen = torch.randperm(len(test.labels), generator=generator)[: args.images]
    images = torch.from_numpy(test.images[chosen.numpy()]).permute(0, 3, 1, 2).float() / 255.0
    aug = FlowAug(args.flow, mode=args.mode, temperature=args.temperature, generator=args.seed)
    grid = augmentation_grid(aug, images, args.per_image)
    out = Path(args.out)
    with atomic_path(out) as tmp:
        save_image(grid, tmp, format="png")
    print(f"wrote {out}: {args.images} images of {test.description} (first column) and "
          f"{args.per_image} {args.mode!r} augmentations each; {aug.fallback_count} non-finite and "
          f"{aug.rejected_count} guard-rejected decodes fell back to the input")
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("grid", help="save a PNG of test images beside their FlowAug augmentations")
    parser.add_argument("--flow", default="cifar10", help="registry name or flow checkpoint path (default: cifar10)")
    parser.add_argument("--data-root", default=None, help="data root (default: $FLOWAUG_DATA or ~/.cache/flowaug/data)")
    parser.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100"))
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--out", default="grid.png", help="PNG file to write")
    parser.add_argument("--mode", default="swap", choices=MODES)
    parser.add_argument("--temperature", type=float, default=0.7, help="prior temperature (mode prior)")
    parser.add_argument("--images", type=positive_int, default=8, help="rows: test images shown")
    parser.add_argument("--per-image", type=positive_int, default=6, help="augmentations per image")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.set_defaults(func=run_grid)
