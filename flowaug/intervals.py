"""Confidence intervals for results over training seeds and over test images.

Two sources of spread in a published number: training (seed: initial weights, data order and
augmentation draws) and the test set (which images happen to be in a small subgroup). Over seeds,
:func:`mean_interval` gives the mean, sample std and a Student-t interval, and
:func:`paired_difference` the same for the per-seed difference between two methods (runs with the
same seed share initial weights and data order, so pairing removes that part of the spread). Over
test images, :func:`bootstrap_subgroup_metrics` resamples one run's predictions within every class
x subgroup cell and reports how much MacroStd and the worst-group accuracy move (Efron & Tibshirani,
*An Introduction to the Bootstrap*, 1993).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from flowaug.metrics import macro_std_from_table

LEVEL = 0.95            # two-sided confidence level of every interval
BOOTSTRAP_RESAMPLES = 1000


def mean_interval(values: Sequence[float | None], level: float = LEVEL) -> dict[str, Any]:
    """Mean, sample std (n - 1) and the Student-t ``level`` interval of the mean of the values that are
    not None: ``{"mean", "std", "n", "low", "high"}`` (std, low and high None with fewer than 2)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    present = [float(v) for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "n": 0, "low": None, "high": None}
    mean = sum(present) / len(present)
    if len(present) < 2:
        return {"mean": mean, "std": None, "n": 1, "low": None, "high": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, len(present) - 1)) * std / math.sqrt(len(present))
    return {"mean": mean, "std": std, "n": len(present), "low": mean - half, "high": mean + half}


def paired_difference(treated: Mapping[int, float | None], control: Mapping[int, float | None],
                      level: float = LEVEL) -> dict[str, Any]:
    """:func:`mean_interval` of ``treated[seed] - control[seed]`` over the seeds both have a value
    for, plus ``"seeds"`` (those seeds) and ``"excludes_zero"`` (the interval lies on one side of 0;
    False without an interval)."""
    seeds = sorted(seed for seed in treated if seed in control
                   and treated[seed] is not None and control[seed] is not None)
    entry = mean_interval([treated[seed] - control[seed] for seed in seeds], level)
    entry["seeds"] = seeds
    entry["excludes_zero"] = entry["low"] is not None and (entry["low"] > 0 or entry["high"] < 0)
    return entry


def bootstrap_subgroup_metrics(accuracy: np.ndarray, counts: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                               seed: int = 0, level: float = LEVEL) -> dict[str, dict[str, float]]:
    """Test-set noise of MacroStd and worst-group accuracy from one run's class x subgroup table.

    ``accuracy`` (C, G) in percent (NaN where empty) and ``counts`` (C, G) are
    :func:`flowaug.metrics.class_subgroup_table`'s output. Each resample draws every cell's images
    with replacement from that cell (cell sizes stay fixed, as MacroStd's weights need); the number
    right in a cell of n images with k right is then Binomial(n, k / n), which is what is drawn.
    Returns, for ``"macro_std"`` and ``"worst_group_accuracy"`` (the lowest subgroup accuracy pooled
    over classes), ``{"std", "low", "high"}``: the std over resamples and the percentile interval.
    """
    accuracy, counts = np.asarray(accuracy, dtype=np.float64), np.asarray(counts, dtype=np.int64)
    if accuracy.shape != counts.shape or accuracy.ndim != 2:
        raise ValueError(f"accuracy and counts must be equal (C, G) tables, got {accuracy.shape} and {counts.shape}")
    if resamples < 2:
        raise ValueError(f"resamples must be >= 2, got {resamples}")
    filled = counts > 0
    hits = np.where(filled, np.rint(np.nan_to_num(accuracy) * counts / 100.0), 0).astype(np.int64)
    rng = np.random.default_rng(seed)
    draws = rng.binomial(counts, np.where(filled, hits / np.maximum(counts, 1), 0.0), size=(resamples, *counts.shape))
    with np.errstate(invalid="ignore", divide="ignore"):
        cell_accuracy = np.where(filled, 100.0 * draws / counts, np.nan)
    macro = np.array([macro_std_from_table(table, counts) for table in cell_accuracy])
    groups = counts.sum(axis=0) > 0
    worst = (100.0 * draws.sum(axis=1)[:, groups] / counts.sum(axis=0)[groups]).min(axis=1)
    tail = 100.0 * (1.0 - level) / 2
    return {name: {"std": float(values.std(ddof=1)), "low": float(np.percentile(values, tail)),
                   "high": float(np.percentile(values, 100.0 - tail))}
            for name, values in (("macro_std", macro), ("worst_group_accuracy", worst))}
