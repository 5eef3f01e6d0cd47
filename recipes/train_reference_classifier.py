"""Train the reference CIFAR-10 classifiers shipped as ``pretrained/cifar10-classifier.pt`` and
``pretrained/cifar10-judge.pt``.

The "small" CNN, trained on the CIFAR-10 (JPEG-q75 proxy) training split with random crop +
horizontal flip. ``--judge`` trains the colour-invariant judge instead: the "small-luma" CNN (it
sees per-image standardised luminance only) with strong photometric augmentation on top (kornia
ColorJitter(0.8, 0.8, 0.8, 0.5) and a random channel shuffle), so it judges an image by its
structure and cannot be fooled by colour alone. Reports accuracy on the proxy test set and on the
exact official pixels of test[0:1000] (``cifar10/cifar10_lossless_subset.npz``).

    python recipes/train_reference_classifier.py --data-root ../shared/data
    python recipes/train_reference_classifier.py --data-root ../shared/data --judge --out runs/cifar10-judge.pt
"""
from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch

from flowaug.arguments import HelpFormatter
from flowaug.augmentation import Compose
from flowaug.augmentation.baselines import CropFlip, GlobalRNGOp
from flowaug.data import load_cifar, resolve_data_root
from flowaug.evaluation import predict
from flowaug.fileio import sha256_file
from flowaug.models import build_classifier, save_classifier
from flowaug.training import train_classifier

ARCH = "small"
JUDGE_ARCH = "small-luma"
EPOCHS = 6
BATCH_SIZE = 256
LR = 0.2
WEIGHT_DECAY = 5e-4
LABEL_SMOOTHING = 0.2
SEED = 0
OUT = Path("runs/cifar10-classifier.pt")  # shipped copy: pretrained/cifar10-classifier.pt (registry.json)
LOSSLESS_FILE = "cifar10/cifar10_lossless_subset.npz"


def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, device: str) -> float:
    """Top-1 accuracy in percent of ``model`` on uint8 (N,32,32,3) ``images``."""
    return float(100.0 * (predict(model, images, device=device).numpy() == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--data-root", default=None, help="data root (default: $FLOWAUG_DATA)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--judge", action="store_true", help="train the colour-invariant judge (small-luma)")
    args = parser.parse_args()
    arch = JUDGE_ARCH if args.judge else ARCH
    augment = CropFlip()
    if args.judge:
        photometric = K.AugmentationSequential(K.ColorJitter(0.8, 0.8, 0.8, 0.5, p=1.0), K.RandomChannelShuffle(p=0.5))
        augment = Compose([augment, GlobalRNGOp(photometric)])

    torch.manual_seed(args.seed)
    train = load_cifar("cifar10", "train", args.data_root)
    test = load_cifar("cifar10", "test", args.data_root)
    lossless = np.load(resolve_data_root(args.data_root) / LOSSLESS_FILE)
    exact_images, exact_labels = lossless["x_test_first1000"], lossless["y_test"][:1000]
    print(f"train: {train.description}, {len(train.labels)} images; test: {test.description}")

    model = build_classifier(arch, num_classes=len(train.classes))
    start = time.perf_counter()
    history = train_classifier(
        model, train.images, train.labels, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=WEIGHT_DECAY, label_smoothing=LABEL_SMOOTHING, seed=args.seed, device=args.device,
        augment=augment,
    )
    wall = time.perf_counter() - start
    test_accuracy = accuracy(model, test.images, test.labels, args.device)
    exact_accuracy = accuracy(model, exact_images, exact_labels, args.device)
    meta = {
        "data": test.description,
        "train_split": f"{train.description} train, {len(train.labels)} images, random crop (reflect pad 4) + flip"
                       + (", ColorJitter(0.8, 0.8, 0.8, 0.5) + channel shuffle" if args.judge else ""),
        "arch": arch,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": WEIGHT_DECAY,
        "label_smoothing": LABEL_SMOOTHING,
        "seed": args.seed,
        "test_accuracy": test_accuracy,
        "test_accuracy_description": f"{test.description} test, 10000 images",
        "exact_test_first1000_accuracy": exact_accuracy,
        "wall_time_s": wall,
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {args.device}",
        "torch": str(torch.__version__),
        "command": shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "history": history,
    }
    save_classifier(model, args.out, arch, len(train.classes), meta)
    print(f"{test.description} test accuracy {test_accuracy:.2f}%; "
          f"exact CIFAR-10 test[0:1000] accuracy {exact_accuracy:.2f}%; wall {wall / 60:.1f} min")
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, sha256 {sha256_file(args.out)})")


if __name__ == "__main__":
    main()
