"""Train a classifier on SpuriousBackgrounds with one bias mitigation and report where it looks right.

    python recipes/train_spurious.py --method erm
    python recipes/train_spurious.py --method flowaug-balanced --seed 1 --out runs/spurious/flowaug-balanced/seed1
    python recipes/train_spurious.py --method regionalswap-masked --cue texture
    python recipes/train_spurious.py --method early-masking --profile smoke
    python recipes/reproduce.py --config recipes/sweep_spurious.json      # every method x 3 seeds

The benchmark (:class:`flowaug.data.SpuriousBackgrounds`): the shape decides the class, the
background group equals the class in a share ``rho`` of the training images (0.95 here; the
``reference`` method trains at rho = 0.1, where the background says nothing). ``--cue`` says what
the group decides: the background's hue (``colour``), its pattern family (``texture``) or both.
Methods (:data:`METHODS`) differ only in what they change; the model, epochs, schedule and seeds
are shared:

- ``erm``: plain training. ``reference``: plain training at rho = 0.1 (the unbiased reference).
- ``colorjitter``: kornia ColorJitter, the classic photometric baseline.
- ``regionalswap``: :class:`flowaug.RegionalColourSwap`, FlowAug's non-learned twin (a donor's 4x4
  regional mean colours).
- ``flowaug-any`` / ``flowaug-other_group`` / ``flowaug-balanced``: FlowAug swaps with the flow
  pretrained on that cue's training split (``--flow``; default :data:`FLOWS`) and that donor policy.
- ``transplant-shift`` / ``transplant-mean`` / ``transplant-flow``: :class:`flowaug.BackgroundTransplant`
  with the exact training masks: each swapped image keeps its object on a donor's whole background,
  the donor's object hole filled by a non-learned shift or flat mean colour, or painted by the cue's
  flow (``--flow``).
- ``*-masked``: the same swap on the background only (``aug(x, y, masks=m)``) with the exact
  training masks; ``*-masked-10pct``: with masks for 10% of the training images and the rest
  predicted by a mask predictor trained on those. No masks at test time.
- ``early-masking`` / ``late-masking``: background masking (Aniraj et al. 2023), trained with the
  exact training masks and tested twice: with the exact masks (oracle) and with masks predicted by a
  small segmentation network trained on the training masks (:func:`flowaug.masking.train_mask_predictor`).
  With ``--arch vit-gap`` / ``vit-cls`` late masking drops the background patch tokens and reads
  the class from the foreground tokens' average or from the CLS token.

No geometric augmentation: the objects already vary in position, scale and rotation. The run folder
``--out`` holds ``report.json`` (test_shift metrics: average, aligned, conflicting, worst class x
group cell, MacroStd; the same-rho test split; mask IoU for predicted masks; wall times) and
``model.pt``. A folder whose report exists is left alone; one process owns a folder at a time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowaug.arguments import HelpFormatter, positive_int
from flowaug.augmentation import BackgroundTransplant, FlowAug, RegionalColourSwap
from flowaug.augmentation.baselines import AUGMENTATIONS, AugmentContext
from flowaug.data.spurious import CUES, SpuriousBackgrounds
from flowaug.errors import FlowaugError
from flowaug.evaluation import headline, spurious_metrics
from flowaug.fileio import atomic_write_text, claim_run_folder, finished_run
from flowaug.masking import EarlyMasking, LateMasking, mask_iou, train_mask_predictor
from flowaug.models import CLASSIFIERS, build_classifier, save_classifier
from flowaug.models.predict import predict
from flowaug.models.vit import SmallViT
from flowaug.training import device_name, train_classifier

FLOWAUG_P = 0.5          # share of each batch every swap changes (FlowAug's default; the rest stays as drawn)
MASK_FILL = "mean"       # early masking's fill: the value a normalising classifier sees as no signal
MASK_PREDICTOR_EPOCHS = 1
KNOWN_MASKS = 0.1        # *-masked-10pct: the share of training images whose exact mask is known
FLOWS = {"colour": "spurious", "texture": "spurious-texture"}  # FlowAug's flow per cue (trained on its train split)
TRANSFORMER_OPTIMIZER = ("adam", 1e-3)   # ViTs train with AdamW at 1e-3 (SGD at the CNNs' 0.2 diverges)


@dataclass(frozen=True)
class Profile:
    """One scale; every field can be overridden on the command line."""

    arch: str
    epochs: int
    batch_size: int
    lr: float
    train_images: int | None   # None: the split's default size
    test_images: int | None


PROFILES = {
    "cpu": Profile(arch="small", epochs=4, batch_size=256, lr=0.2, train_images=None, test_images=None),
    "smoke": Profile(arch="small", epochs=1, batch_size=128, lr=0.2, train_images=1024, test_images=1000),
}


@dataclass(frozen=True)
class Method:
    """What one method changes: the training correlation, an augmentation, a masking strategy."""

    correlation: float = 0.95
    augment: str | None = None        # "colorjitter", "regionalswap", "flowaug" or "transplant"
    donor: str = "any"                 # the donor policy of the swaps (FlowAug, RegionalColourSwap, transplant)
    masking: str | None = None         # "early" or "late"
    augment_masks: str | None = None   # the swap on the background only: "exact" or "10pct" (predicted)
    fill: str = "shift"                # BackgroundTransplant's hole fill: "shift", "mean" or "flow"

    @property
    def needs_flow(self) -> bool:
        return self.augment == "flowaug" or (self.augment == "transplant" and self.fill == "flow")

    @property
    def swaps(self) -> bool:
        """Whether the augmentation draws donors (and so takes ``groups``)."""
        return self.augment in ("flowaug", "regionalswap", "transplant")


METHODS = {
    "erm": Method(),
    "reference": Method(correlation=0.1),
    "colorjitter": Method(augment="colorjitter"),
    "flowaug-any": Method(augment="flowaug", donor="any"),
    "flowaug-other_group": Method(augment="flowaug", donor="other_group"),
    "flowaug-balanced": Method(augment="flowaug", donor="balanced"),
    "flowaug-masked": Method(augment="flowaug", augment_masks="exact"),
    "flowaug-masked-10pct": Method(augment="flowaug", augment_masks="10pct"),
    "regionalswap": Method(augment="regionalswap"),
    "regionalswap-masked": Method(augment="regionalswap", augment_masks="exact"),
    "regionalswap-masked-10pct": Method(augment="regionalswap", augment_masks="10pct"),
    "transplant-shift": Method(augment="transplant", augment_masks="exact"),
    "transplant-mean": Method(augment="transplant", augment_masks="exact", fill="mean"),
    "transplant-flow": Method(augment="transplant", augment_masks="exact", fill="flow"),
    "early-masking": Method(masking="early"),
    "late-masking": Method(masking="late"),
}


def build_model(arch: str, method: Method) -> nn.Module:
    """The classifier, wrapped for masking: early masking fills the input's background; late masking
    pools CNN feature maps over the foreground, or drops a ViT's background patch tokens (SmallViT
    takes the mask itself)."""
    model = build_classifier(arch, 10)
    if method.masking == "early":
        return EarlyMasking(model, MASK_FILL)
    if method.masking == "late" and not isinstance(model, SmallViT):
        return LateMasking.from_classifier(model)
    return model


def build_augment(method: Method, flow: str, images: torch.Tensor, seed: int) -> nn.Module | None:
    if method.augment == "flowaug":
        aug = FlowAug(flow, p=FLOWAUG_P, mode="swap", donor=method.donor, generator=seed)
        if aug.needs_cache:
            aug.cache_latents(images)
        return aug
    if method.augment == "regionalswap":
        return RegionalColourSwap(p=FLOWAUG_P, mode="swap", donor=method.donor, generator=seed)
    if method.augment == "transplant":
        return BackgroundTransplant(p=FLOWAUG_P, donor=method.donor, fill=method.fill,
                                    flow=flow if method.fill == "flow" else None, generator=seed)
    if method.augment is not None:
        return AUGMENTATIONS[method.augment].build(AugmentContext(num_classes=10))
    return None


def known_and_predicted_masks(images: torch.Tensor, masks: torch.Tensor, seed: int, progress: bool
                              ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Training masks (N,1,H,W) when only :data:`KNOWN_MASKS` of them are known (a seeded subset):
    those exact, the rest predicted by a mask predictor trained on them (as many steps as on all)."""
    known = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:round(KNOWN_MASKS * len(images))]
    epochs = MASK_PREDICTOR_EPOCHS * round(1 / KNOWN_MASKS)
    predictor = train_mask_predictor(images[known], masks[known], epochs=epochs, seed=seed, progress=progress)
    predicted = predictor.predict(images)
    unknown = torch.ones(len(images), dtype=torch.bool)
    unknown[known] = False
    iou = float(mask_iou(predicted[unknown], masks[unknown]).mean())
    predicted[known] = masks[known]
    return predicted, {"known_masks": len(known), "predicted_mask_iou": iou}


@torch.no_grad()
def score(model: nn.Module, split: SpuriousBackgrounds, tensors: tuple[torch.Tensor, ...],
          masks: torch.Tensor | None, batch_size: int = 500) -> dict[str, Any]:
    """spurious_metrics of ``model`` on ``split`` (its ``tensors()``; masking models get ``masks``, (N,1,H,W))."""
    images, labels, groups, _ = tensors
    predictions = predict(model, images, masks=masks, batch_size=batch_size)
    return {"description": split.description,
            **spurious_metrics((predictions == labels).numpy(), labels.numpy(), groups.numpy())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    method = METHODS[args.method]
    profile = replace(PROFILES[args.profile], **{k: v for k, v in (("arch", args.arch), ("epochs", args.epochs))
                                                 if v is not None})
    torch.set_num_threads(args.threads)
    train = SpuriousBackgrounds("train", method.correlation, profile.train_images, cue=args.cue)
    tests = {name: SpuriousBackgrounds(name, 0.95, profile.test_images, cue=args.cue) for name in ("test_shift", "test")}
    images, labels, groups, masks = train.tensors()
    print(f"{args.method} seed {args.seed}: {train.description}, {profile}, {args.threads} thread(s)", flush=True)

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    model = build_model(profile.arch, method)
    augment = build_augment(method, args.flow, images, args.seed)
    mask_report: dict[str, Any] = {}
    train_masks = masks if method.masking or method.augment_masks == "exact" else None
    if method.augment_masks == "10pct":
        train_masks, mask_report = known_and_predicted_masks(images, masks, args.seed, not args.quiet)
    optimizer, lr = TRANSFORMER_OPTIMIZER if profile.arch.startswith("vit") else ("sgd", profile.lr)
    history = train_classifier(model, images, labels, epochs=profile.epochs, batch_size=profile.batch_size,
                               lr=lr, optimizer=optimizer, seed=args.seed, augment=augment, device="cpu",
                               groups=groups if method.swaps else None,
                               masks=train_masks, progress=not args.quiet)
    train_seconds = time.perf_counter() - start

    results: dict[str, Any] = {}
    test_tensors = {name: split.tensors() for name, split in tests.items()}
    for name, split in tests.items():
        exact = test_tensors[name][3] if method.masking else None
        results[name] = score(model, split, test_tensors[name], exact)
    if method.masking:
        predictor = train_mask_predictor(images, masks, epochs=MASK_PREDICTOR_EPOCHS, seed=args.seed,
                                         progress=not args.quiet)
        shifted_images, *_, shifted_masks = test_tensors["test_shift"]
        predicted = predictor.predict(shifted_images)
        results["test_shift_predicted_masks"] = {
            **score(model, tests["test_shift"], test_tensors["test_shift"], predicted),
            "mask_iou": float(mask_iou(predicted, shifted_masks).mean())}
    report = {
        "recipe": "train_spurious", "method": args.method, "seed": args.seed, "profile": args.profile, "cue": args.cue,
        "settings": {**asdict(profile), **asdict(method), "optimizer": optimizer, "lr": lr,
                     "flow": args.flow if method.needs_flow else None,
                     "flowaug_p": FLOWAUG_P, "mask_fill": MASK_FILL},
        "suites": results,
        "train_masks": mask_report or None,
        "counters": {name: getattr(augment, name) for name in FlowAug.COUNTERS} if isinstance(augment, FlowAug) else None,
        "timing": {"train_seconds": train_seconds,
                   "augment_seconds": sum(r["augment_seconds"] for r in history)},
        "history": history,
        "hardware": {"device": f"{device_name(torch.device('cpu'))}, {args.threads} thread(s)"},
    }
    classifier = model.model if isinstance(model, EarlyMasking) else model
    if not isinstance(model, LateMasking):
        save_classifier(classifier, args.out / "model.pt", profile.arch, 10)
    atomic_write_text(json.dumps(report, indent=2) + "\n", args.out / "report.json")
    return report


def summary_line(report: dict[str, Any]) -> str:
    """The test_shift suites' numbers of ``report``, one :func:`flowaug.evaluation.headline` each."""
    return "; ".join(f"{name}: {headline(entry)}" for name, entry in report["suites"].items()
                     if name.startswith("test_shift"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--cue", choices=CUES, default="colour",
                        help="what the background group decides: hue (colour), pattern family (texture) or both")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/spurious/<method>/seed<k>)")
    parser.add_argument("--arch", choices=sorted(CLASSIFIERS), help="classifier (default: the profile's)")
    parser.add_argument("--epochs", type=positive_int, help="default: the profile's")
    parser.add_argument("--flow", help="FlowAug's flow: registry name or checkpoint path "
                        "(default: the flow trained on the cue's training split, FLOWS)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    benchmark = "spurious" if args.cue == "colour" else f"spurious-{args.cue}"
    args.out = args.out or Path("runs") / benchmark / args.method / f"seed{args.seed}"
    if METHODS[args.method].needs_flow and args.flow is None:
        if args.cue not in FLOWS:
            parser.error(f"no flow is shipped for --cue {args.cue}; pass --flow (train one with flowaug pretrain "
                         f"--dataset spurious:PATH on a file from flowaug make-spurious --cue {args.cue})")
        args.flow = FLOWS[args.cue]
    if finished_run(args.out):
        print(f"{args.out} already holds a finished run (report.json); choose another --out to train again")
        return 0
    try:
        with claim_run_folder(args.out):
            report = run(args)
    except (FlowaugError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.method} seed {args.seed}: {summary_line(report)}; trained in {report['timing']['train_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
