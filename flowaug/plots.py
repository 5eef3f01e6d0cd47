"""PNG figures: an evaluation report's plots and labelled image grids.

Uses matplotlib's object-oriented ``Figure`` API (rendered by Agg), never pyplot, so
no display or global backend is involved.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from flowaug.fileio import atomic_path


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_subgroup_heatmap(accuracy: Sequence[Sequence[float | None]], counts: Sequence[Sequence[int]],
                          classes: Sequence[str], title: str, path: str | os.PathLike) -> Path:
    """Class x subgroup accuracy heatmap (percent; blank where a cell is empty), each cell
    annotated with its accuracy and image count. ``accuracy`` and ``counts`` are (C, G)."""
    values = np.array([[np.nan if a is None else a for a in row] for row in accuracy], dtype=float)
    counts = np.asarray(counts)
    num_classes, num_groups = values.shape
    fig = Figure(figsize=(1.0 + 0.9 * num_groups, 1.0 + 0.45 * num_classes))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    if num_classes <= 20:
        for c in range(num_classes):
            for g in range(num_groups):
                if counts[c, g]:
                    ax.text(g, c, f"{values[c, g]:.0f}\n(n={counts[c, g]})", ha="center", va="center",
                            fontsize=6, color="white" if values[c, g] < 60 else "black")
        ax.set_yticks(range(num_classes), classes)
    ax.set_xticks(range(num_groups), [str(g) for g in range(num_groups)])
    ax.set_xlabel("background subgroup")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    return _save(fig, path)


def plot_corruption_bars(per_corruption: dict[str, float], title: str, path: str | os.PathLike,
                         mean: float | None = None, extra: Sequence[str] = ()) -> Path:
    """Bar chart of accuracy (percent) per corruption; corruptions in ``extra`` in orange,
    ``mean`` (the benchmark mean) as a dashed line."""
    names = list(per_corruption)
    fig = Figure(figsize=(1.0 + 0.45 * len(names), 3.5))
    ax = fig.subplots()
    ax.bar(range(len(names)), [per_corruption[n] for n in names],
           color=["tab:orange" if n in extra else "tab:blue" for n in names])
    if mean is not None:
        ax.axhline(mean, color="tab:red", linestyle="--", label=f"benchmark mean {mean:.1f}%")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def write_report_plots(report: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Figures for every suite of an :func:`flowaug.evaluate` report that has one:
    ``<suite>_subgroups.png`` (CIFAR-B suites) and ``<suite>_corruptions.png`` (CIFAR-C suites)."""
    out_dir = Path(out_dir)
    written = []
    for name, entry in report["suites"].items():
        if "class_subgroup_accuracy" in entry:
            title = f"{entry['description']}: accuracy {entry['accuracy']:.1f}%, MacroStd {entry['macro_std']:.2f}"
            written.append(plot_subgroup_heatmap(entry["class_subgroup_accuracy"], entry["class_subgroup_counts"],
                                                 entry["classes"], title, out_dir / f"{name}_subgroups.png"))
        if "summary" in entry:
            extra = entry["summary"]["extra"]["per_corruption"]
            accuracies = {**entry["summary"]["benchmark"]["per_corruption"], **extra}
            title = f"{entry['description']}: accuracy per corruption (mean over severities; extras in orange)"
            written.append(plot_corruption_bars(accuracies, title, out_dir / f"{name}_corruptions.png",
                                                entry["summary"]["benchmark"]["mean"], extra=tuple(extra)))
    return written


def save_labelled_grid(rows: Sequence[tuple[str, Any]], title: str, path: str | os.PathLike,
                       zoom: float = 2.0) -> Path:
    """A figure of image rows with a label on each: ``rows`` = (label, tensor (k,C,H,W) in [0,1]),
    C = 3 or 1 (maps, shown grey), the same k and size in every row; tiles ``zoom`` x the default
    size, drawn without smoothing so pixels stay visible."""
    import torch
    from torchvision.utils import make_grid

    tiles = torch.cat([row.detach().float().cpu().expand(-1, 3, -1, -1) for _, row in rows])
    k, size = rows[0][1].shape[0], tiles.shape[-1]
    grid = make_grid(tiles, nrow=k, padding=2, pad_value=1.0).permute(1, 2, 0).numpy()
    fig = Figure(figsize=(0.45 * zoom * k * size / 32 + 1.2, 0.45 * zoom * len(rows) * size / 32 + 0.5))
    axes = fig.subplots()
    axes.imshow(grid, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([2 + (size + 2) * i + size / 2 for i in range(len(rows))], [label for label, _ in rows],
                    fontsize=8)
    axes.set_title(title, fontsize=8)
    return _save(fig, path)
