"""Run a classifier over evaluation suites and return one JSON-ready report.

Suites (:data:`SUITES`):

- ``"clean"``: the clean test split of ``dataset`` ("cifar10" or "cifar100");
  ``"cifar10"`` / ``"cifar100"`` name a clean test split explicitly.
- ``"cifar10b"`` / ``"cifar100b"``: the test split with the CIFAR-B background-colour
  subgroups: accuracy, per-subgroup accuracy, class x subgroup table with counts,
  MacroStd and worst group (see :mod:`flowaug.metrics`).
- ``"cifar10c"`` / ``"cifar100c"``: every requested corruption x severity block with the
  CIFAR-B subgroups attached, as the paper does: accuracy and MacroStd per block, each
  summarised by :func:`flowaug.metrics.corruption_summary` (15 benchmark corruptions,
  4 extras apart).
- ``"cifar10.1"``: CIFAR-10.1 v6 accuracy and its gap to the clean CIFAR-10 accuracy.
- ``"spurious"``: the SpuriousBackgrounds ``test_shift`` split (generated, no files): average,
  aligned and conflicting accuracy, worst class x group cell and MacroStd over background groups
  (for a 10-class classifier trained on that benchmark).

Every suite entry carries the dataset ``description`` (e.g. "CIFAR-10 (JPEG-q75 proxy)")
so a number is never separated from the data it was measured on.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from flowaug.data import ALL_CORRUPTIONS, CIFAR10, CIFAR10_1, CIFAR100, CIFAR100B, CIFAR10B, CIFARC, ArrayDataset
from flowaug.data.cifar_c import C_DIRS, SEVERITIES, cifar_c_dir
from flowaug.data.spurious import DEFAULT_SIZES, NUM_GROUPS, SHAPES, SpuriousBackgrounds
from flowaug.errors import DatasetNotFoundError
from flowaug.metrics import corruption_summary, macro_std, shift_gap, subgroup_metrics
from flowaug.models.predict import predict


@dataclass(frozen=True)
class EvalContext:
    """Everything a suite runner needs besides the model."""

    data_root: str | Path | None
    batch_size: int
    device: torch.device
    corruptions: tuple[str, ...]
    severities: tuple[int, ...]
    limit: int | None
    c_dir: str | Path | None
    progress: bool
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # by image-array digest


def _correct(model: nn.Module, data: ArrayDataset, ctx: EvalContext, bar: bool = True) -> tuple[np.ndarray, slice]:
    """Per-image correctness (bool (n,)) on the first ``ctx.limit`` images of ``data``, and that slice.

    Predictions are remembered by the digest of the images, so suites that share images (clean and
    CIFAR10-B score the same test split) run the model once. ``bar``: a progress bar of its own
    (off where the caller counts blocks)."""
    rows = slice(0, ctx.limit)
    images = np.ascontiguousarray(data.images[rows])
    key = hashlib.sha256(images.data).hexdigest()
    if key not in ctx.predictions:
        ctx.predictions[key] = predict(model, images, batch_size=ctx.batch_size, device=ctx.device,
                                       progress=ctx.progress and bar, desc=data.description).numpy()
    return ctx.predictions[key] == data.labels[rows], rows


def _subset_note(data: ArrayDataset, rows: slice) -> dict[str, Any]:
    count = len(data.labels[rows])
    return {"description": data.description, "num_images": count,
            "subset": None if count == len(data.labels) else f"first {count} of {len(data.labels)} images"}


def _clean(model: nn.Module, ctx: EvalContext, dataset: str) -> dict[str, Any]:
    data = {"cifar10": CIFAR10, "cifar100": CIFAR100}[dataset](ctx.data_root, split="test")
    correct, rows = _correct(model, data, ctx)
    return {**_subset_note(data, rows), "accuracy": 100.0 * float(correct.mean())}


def _subgroups(model: nn.Module, ctx: EvalContext, dataset: str) -> dict[str, Any]:
    data = {"cifar10": CIFAR10B, "cifar100": CIFAR100B}[dataset](ctx.data_root)
    correct, rows = _correct(model, data, ctx)
    metrics = subgroup_metrics(correct, data.labels[rows], data.subgroups[rows], num_classes=len(data.classes),
                               num_subgroups=data.num_subgroups)
    return {**_subset_note(data, rows), "classes": list(data.classes), **metrics}


def _by_corruption(values: dict[tuple[str, int], float], ctx: EvalContext) -> dict[str, dict[int, float]]:
    return {c: {s: values[c, s] for s in ctx.severities} for c in ctx.corruptions}


def _corruptions(model: nn.Module, ctx: EvalContext, dataset: str) -> dict[str, Any]:
    accuracy: dict[tuple[str, int], float] = {}
    spread: dict[tuple[str, int], float] = {}
    blocks = [(c, s) for c in ctx.corruptions for s in ctx.severities]
    for corruption, severity in tqdm(blocks, desc=f"{C_DIRS[dataset]} blocks", disable=not ctx.progress,
                                     smoothing=0.05):
        data = CIFARC(corruption, severity, dataset, ctx.data_root, ctx.c_dir, attach_subgroups=True)
        correct, rows = _correct(model, data, ctx, bar=False)
        accuracy[corruption, severity] = 100.0 * float(correct.mean())
        spread[corruption, severity] = macro_std(correct, data.labels[rows], data.subgroups[rows])
    note = _subset_note(data, rows)
    return {
        "description": f"{C_DIRS[dataset]}, CIFAR-B subgroups attached to every block",
        "num_images_per_block": note["num_images"],
        "subset": note["subset"],
        "accuracy": _by_corruption(accuracy, ctx),
        "macro_std": _by_corruption(spread, ctx),
        "summary": corruption_summary(accuracy),
        "macro_std_summary": corruption_summary(spread),
    }


def _cifar10_1(model: nn.Module, ctx: EvalContext, clean: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """CIFAR-10.1 v6 accuracy and its gap to ``clean()``, the clean CIFAR-10 suite entry."""
    data = CIFAR10_1(ctx.data_root, version="v6")
    correct, rows = _correct(model, data, ctx)
    reference = clean()
    return {**_subset_note(data, rows), **shift_gap(reference["accuracy"], 100.0 * float(correct.mean())),
            "clean_description": reference["description"]}


def _spurious(model: nn.Module, ctx: EvalContext, dataset: str) -> dict[str, Any]:
    """The SpuriousBackgrounds ``test_shift`` split (every class x background-group cell equally filled):
    accuracy on images whose background group matches their class (aligned) and on the others
    (conflicting), and the subgroup metrics with the background groups as subgroups."""
    data = SpuriousBackgrounds("test_shift", num_images=ctx.limit or DEFAULT_SIZES["test_shift"])
    a = data.arrays
    predictions = predict(model, a.images, batch_size=ctx.batch_size, device=ctx.device, progress=ctx.progress,
                          desc=data.description).numpy()
    return {"description": data.description, "num_images": len(a.labels), "subset": None,
            **spurious_metrics(predictions == a.labels, a.labels, a.groups)}


def spurious_metrics(correct: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """SpuriousBackgrounds metrics from per-image correctness (N,) bool, labels and background groups (N,):
    accuracy on aligned (group == class) and conflicting images (percent) and :func:`subgroup_metrics`
    with the groups as subgroups (average accuracy, worst class x group cell, MacroStd)."""
    correct, labels, groups = np.asarray(correct, bool), np.asarray(labels), np.asarray(groups)
    aligned = labels == groups
    share = lambda rows: 100.0 * float(correct[rows].mean()) if rows.any() else None  # noqa: E731
    return {"classes": list(SHAPES), "aligned_accuracy": share(aligned), "conflicting_accuracy": share(~aligned),
            **subgroup_metrics(correct, labels, groups, num_classes=len(SHAPES), num_subgroups=NUM_GROUPS)}


@dataclass(frozen=True)
class Suite:
    """One evaluation suite: its dataset family and how to run it."""

    dataset: str | None
    kind: str


SUITES: dict[str, Suite] = {
    "clean": Suite(None, "clean"),
    "cifar10": Suite("cifar10", "clean"),
    "cifar100": Suite("cifar100", "clean"),
    "cifar10b": Suite("cifar10", "subgroups"),
    "cifar100b": Suite("cifar100", "subgroups"),
    "cifar10c": Suite("cifar10", "corruptions"),
    "cifar100c": Suite("cifar100", "corruptions"),
    "cifar10.1": Suite("cifar10", "shift"),
    "spurious": Suite("spurious", "spurious"),
}
RUNNERS = {"clean": _clean, "subgroups": _subgroups, "corruptions": _corruptions, "spurious": _spurious}


def _check_files_exist(suites: tuple[str, ...], ctx: EvalContext) -> None:
    """Fail before any model work when a requested CIFAR-C or CIFAR-10.1 file is missing."""
    for name in suites:
        suite = SUITES[name]
        if suite.kind == "corruptions":
            folder = Path(ctx.c_dir) if ctx.c_dir is not None else cifar_c_dir(suite.dataset, ctx.data_root)
            missing = [f"{c}.npy" for c in (*ctx.corruptions, "labels") if not (folder / f"{c}.npy").is_file()]
            if missing:
                raise DatasetNotFoundError(
                    f"suite {name!r}: {folder} lacks {', '.join(missing)}; download {C_DIRS[suite.dataset]} or "
                    f"generate it with `flowaug make-cifar-c --dataset {suite.dataset} --out {folder}`")
        elif suite.kind == "shift":
            CIFAR10_1(ctx.data_root, version="v6")


def evaluate(
    model: nn.Module,
    suites: Iterable[str] = ("clean", "cifar10b"),
    data_root: str | Path | None = None,
    *,
    dataset: str = "cifar10",
    batch_size: int = 500,
    device: torch.device | str | None = None,
    corruptions: Iterable[str] | None = None,
    severities: Iterable[int] = SEVERITIES,
    limit: int | None = None,
    c_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` (float (B, 3, 32, 32) in [0, 1] -> logits) on ``suites`` (keys of :data:`SUITES`).

    ``dataset`` ("cifar10" or "cifar100") is what "clean" means. ``corruptions``
    (default all 19) and ``severities`` select the CIFAR-C blocks; ``c_dir`` overrides the
    CIFAR-C folder; ``limit`` evaluates only the first ``limit`` images of every set (quick
    checks; the report says so). The model is moved to ``device`` (default CUDA if
    available) and left in eval mode. Returns ``{"dataset", "limit", "suites": {name: entry}}``;
    the cifar10.1 entry reuses the clean CIFAR-10 accuracy when "clean"/"cifar10" is also
    requested and measures it otherwise.
    """
    suites = tuple(suites)
    unknown = [name for name in suites if name not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; choose from {list(SUITES)}")
    if dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"dataset must be 'cifar10' or 'cifar100', got {dataset!r}")
    corruptions = tuple(ALL_CORRUPTIONS if corruptions is None else corruptions)
    bad = [c for c in corruptions if c not in ALL_CORRUPTIONS]
    if bad:
        raise ValueError(f"unknown corruption(s) {bad}; choose from {list(ALL_CORRUPTIONS)}")
    severities = tuple(severities)
    if not severities or not set(severities) <= set(SEVERITIES):
        raise ValueError(f"severities must be a non-empty subset of {SEVERITIES}, got {severities}")
    if not corruptions:
        raise ValueError(f"corruptions must not be empty; choose from {list(ALL_CORRUPTIONS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    ctx = EvalContext(data_root, batch_size,
                      torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")),
                      corruptions, severities, limit, c_dir, progress)
    _check_files_exist(suites, ctx)
    report: dict[str, Any] = {"dataset": dataset, "limit": limit, "suites": {}}

    def clean_cifar10() -> dict[str, Any]:
        for name in ("clean", "cifar10"):
            if name in report["suites"] and (SUITES[name].dataset or dataset) == "cifar10":
                return report["suites"][name]
        return _clean(model, ctx, "cifar10")

    # Shift suites run last so they can reuse a clean accuracy measured in this call.
    for name in sorted(suites, key=lambda n: SUITES[n].kind == "shift"):
        suite = SUITES[name]
        if suite.kind == "shift":
            report["suites"][name] = _cifar10_1(model, ctx, clean_cifar10)
        else:
            report["suites"][name] = RUNNERS[suite.kind](model, ctx, suite.dataset or dataset)
    report["suites"] = {name: report["suites"][name] for name in suites}
    return report


def headline(entry: dict[str, Any]) -> str:
    """One line of a suite entry's main numbers (of an :func:`evaluate` report), for the terminal: the
    one formatter of results that ``flowaug evaluate`` and the recipes print."""
    if "summary" in entry:
        part = "benchmark" if entry["summary"]["benchmark"]["mean"] is not None else "extra"
        return (f"mean {part} corruption accuracy {entry['summary'][part]['mean']:.2f}%, "
                f"mean MacroStd {entry['macro_std_summary'][part]['mean']:.2f}")
    text = f"accuracy {entry['accuracy']:.2f}%"
    if "aligned_accuracy" in entry:
        return (f"{text}, aligned {entry['aligned_accuracy']:.2f}%, conflicting {entry['conflicting_accuracy']:.2f}%, "
                f"worst cell {entry['worst_group']['cell']['accuracy']:.2f}%")
    if "macro_std" in entry:
        text += f", MacroStd {entry['macro_std']:.2f}, worst subgroup {entry['worst_group']['subgroup_accuracy']:.2f}%"
    if "gap" in entry:
        text += f", gap to clean {entry['gap']:.2f}"
    return text
