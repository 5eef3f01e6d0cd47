"""``flowaug pretrain``: train a DecoupledFlow on CIFAR or your own images (works under ``torchrun``)."""
from __future__ import annotations

import argparse
import dataclasses
import os

from flowaug.arguments import HelpFormatter, non_negative_int, positive_int
from flowaug.training import PretrainConfig, pretrain

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    """Register ``pretrain`` on the ``flowaug`` command."""
    p = subparsers.add_parser(
        "pretrain", help="pretrain a DecoupledFlow",
        description=__doc__.splitlines()[0].rstrip(".") + ". Under torchrun, --batch-size is the global batch.",
        formatter_class=HelpFormatter)
    p.add_argument("--dataset", required=True, help="dataset spec: cifar10 | cifar100 | spurious | spurious:PATH | folder:PATH | npz:PATH")
    p.add_argument("--data-root", help="data root for cifar10/cifar100 (default: $FLOWAUG_DATA or ~/.cache)")
    p.add_argument("--preset", default=_DEFAULTS["preset"], help="flow preset: tiny | cpu-small | cpu-small-shift | cpu-small-colour | cpu-small-texture | gpu-base")
    p.add_argument("--out", required=True, help="run directory (checkpoint.pt, flow.pt, metrics.jsonl, samples/)")
    p.add_argument("--epochs", type=positive_int, default=_DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=positive_int, default=_DEFAULTS["batch_size"], help="global batch size")
    p.add_argument("--lr", type=float, default=_DEFAULTS["lr"], help="peak learning rate (warmup, then cosine)")
    p.add_argument("--warmup-steps", type=non_negative_int, default=_DEFAULTS["warmup_steps"])
    p.add_argument("--kl-warmup-steps", type=non_negative_int, default=_DEFAULTS["kl_warmup_steps"],
                   help="ramp the KL weight from 0 to --kl-weight over this many steps (against posterior collapse)")
    p.add_argument("--kl-weight", type=float, default=_DEFAULTS["kl_weight"], metavar="BETA",
                   help="weight of the KL term after the ramp (default 1: the ELBO; > 1 limits what the nuisance "
                        "code carries)")
    p.add_argument("--colour-anchor", type=float, default=_DEFAULTS["colour_anchor"], metavar="WEIGHT",
                   help="tie a colour preset's colour map to each image's regional mean colour with this "
                        "weight (0 = plain ELBO), so the nuisance code carries the colour layout")
    p.add_argument("--pattern-anchor", type=float, default=_DEFAULTS["pattern_anchor"], metavar="WEIGHT",
                   help="tie a texture preset's pattern field to each image's background pattern with this weight "
                        "(needs masks: --dataset spurious[:PATH]), so the nuisance code carries the pattern")
    p.add_argument("--grad-clip", type=float, default=_DEFAULTS["grad_clip"], help="max gradient norm (0 = off)")
    p.add_argument("--ema", type=float, default=_DEFAULTS["ema"], metavar="DECAY",
                   help="EMA decay of the exported weights (0 = off)")
    p.add_argument("--seed", type=non_negative_int, default=_DEFAULTS["seed"])
    p.add_argument("--image-size", type=positive_int, default=_DEFAULTS["image_size"],
                   help="train at SIZE x SIZE (divisible by 2**levels of the preset)")
    p.add_argument("--no-hflip", dest="hflip", action="store_false", help="no random horizontal flips")
    p.add_argument("--max-train-images", type=positive_int, metavar="N", help="use only the first N training images")
    p.add_argument("--val-images", type=positive_int, default=_DEFAULTS["val_images"], help="fixed validation subset size")
    p.add_argument("--checkpoint-every", type=non_negative_int, default=_DEFAULTS["checkpoint_every"], metavar="STEPS",
                   help="also checkpoint every STEPS global steps (0 = epoch ends only)")
    p.add_argument("--log-every", type=positive_int, default=_DEFAULTS["log_every"], metavar="STEPS")
    p.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="stop after the step that exceeds MINUTES, with a checkpoint; --resume continues")
    p.add_argument("--stop-after-steps", type=positive_int, metavar="STEPS", help="stop at this global step (checkpointed)")
    p.add_argument("--amp", action="store_true", help="autocast: bf16 on CPU, fp16 + GradScaler on CUDA")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--threads", type=positive_int, metavar="N", help="torch intra-op CPU threads")
    p.add_argument("--device", default=_DEFAULTS["device"], choices=("auto", "cpu", "cuda"))
    p.add_argument("--init-from", metavar="FLOW",
                   help="warm start from a flow checkpoint or registry name (tensors of matching name and shape)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build a :class:`PretrainConfig` from the parsed arguments and train."""
    cfg = PretrainConfig(**{name: getattr(args, name) for name in _DEFAULTS if hasattr(args, name)})
    path = pretrain(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(f"flow weights: {path}")
    return 0
