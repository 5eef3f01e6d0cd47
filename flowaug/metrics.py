"""Accuracy metrics over subgroups (CIFAR10-B), corruptions (CIFAR-C) and dataset shift (CIFAR-10.1).

Per-image inputs are 1-D numpy arrays or torch tensors (any device) of equal
length: ``correct`` bool or 0/1 (was the prediction right), ``labels`` and
``subgroups`` non-negative ints. Accuracies are percentages in [0, 100].

MacroStd (our stated definition; the paper's exact equation was not available
to us): for each class c with non-empty subgroups g, with n_cg test images and
accuracy a_cg (percent), weights w_cg = n_cg / n_c, class mean
m_c = sum_g w_cg a_cg and weighted population std s_c = sqrt(sum_g w_cg (a_cg - m_c)^2).
MacroStd = mean over classes of s_c, in percentage points; lower is more
consistent across subgroups. Empty subgroups are ignored; classes without
images are left out of the mean.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from flowaug.data.cifar_c import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES

ArrayLike = np.ndarray | torch.Tensor


def _as_numpy(name: str, values: ArrayLike) -> np.ndarray:
    """A 1-D numpy copy of ``values``; raise ValueError if it is not 1-D or contains NaN."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise ValueError(f"{name} contains NaN")
    return array


def _as_correct(correct: ArrayLike) -> np.ndarray:
    array = _as_numpy("correct", correct)
    if array.dtype.kind not in "biuf" or not np.isin(array, (0, 1)).all():
        raise ValueError("correct must be bool or 0/1 values (was each prediction right?)")
    return array.astype(bool)


def _as_ids(name: str, values: ArrayLike) -> np.ndarray:
    array = _as_numpy(name, values)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, got dtype {array.dtype}")
    if len(array) and array.min() < 0:
        raise ValueError(f"{name} must be non-negative, got minimum {array.min()}")
    return array.astype(np.int64)


def _check_lengths(**arrays: np.ndarray) -> None:
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"inputs must have equal lengths, got {lengths}")
    if not next(iter(lengths.values())):
        raise ValueError("inputs are empty")


def subgroup_accuracy(correct: ArrayLike, subgroups: ArrayLike) -> dict[int, float]:
    """Accuracy (percent) of each subgroup id present, pooled over classes; keys in ascending order."""
    correct, subgroups = _as_correct(correct), _as_ids("subgroups", subgroups)
    _check_lengths(correct=correct, subgroups=subgroups)
    return {int(g): 100.0 * float(correct[subgroups == g].mean()) for g in np.unique(subgroups)}


def class_subgroup_table(correct: ArrayLike, labels: ArrayLike, subgroups: ArrayLike, *,
                         num_classes: int | None = None,
                         num_subgroups: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per class x subgroup accuracy and image count.

    Returns ``(accuracy, counts)``: float64 (C, G) in percent with NaN where a cell is
    empty, and int64 (C, G). C and G default to the largest id + 1.
    """
    correct, labels, subgroups = _as_correct(correct), _as_ids("labels", labels), _as_ids("subgroups", subgroups)
    _check_lengths(correct=correct, labels=labels, subgroups=subgroups)
    shape = (num_classes or int(labels.max()) + 1, num_subgroups or int(subgroups.max()) + 1)
    if labels.max() >= shape[0] or subgroups.max() >= shape[1]:
        raise ValueError(f"ids exceed the table size {shape}: largest label {labels.max()}, "
                         f"largest subgroup {subgroups.max()}")
    counts = np.zeros(shape, dtype=np.int64)
    hits = np.zeros(shape, dtype=np.int64)
    np.add.at(counts, (labels, subgroups), 1)
    np.add.at(hits, (labels, subgroups), correct.astype(np.int64))
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(counts > 0, 100.0 * hits / counts, np.nan)
    return accuracy, counts


def macro_std_from_table(accuracy: np.ndarray, counts: np.ndarray) -> float:
    """MacroStd (percentage points, see the module docstring) from a class x subgroup table."""
    stds = []
    for acc_row, count_row in zip(accuracy, counts):
        present = count_row > 0
        if not present.any():
            continue
        weights = count_row[present] / count_row[present].sum()
        mean = float((weights * acc_row[present]).sum())
        stds.append(math.sqrt(float((weights * (acc_row[present] - mean) ** 2).sum())))
    return float(np.mean(stds))


def macro_std(correct: ArrayLike, labels: ArrayLike, subgroups: ArrayLike) -> float:
    """MacroStd in percentage points: the mean over classes of the image-weighted population std
    of subgroup accuracies within the class (our stated definition, see the module docstring)."""
    return macro_std_from_table(*class_subgroup_table(correct, labels, subgroups))


def worst_group_accuracy(correct: ArrayLike, labels: ArrayLike, subgroups: ArrayLike, *,
                         min_count: int = 10) -> dict[str, Any]:
    """The lowest pooled subgroup accuracy and the lowest class x subgroup cell with >= ``min_count`` images.

    Ties go to the smallest id (class first, then subgroup). Returns
    ``{"subgroup": g, "subgroup_accuracy": %, "cell": {"class", "subgroup", "accuracy", "count"} or None
    (no cell is large enough), "min_count": min_count}``.
    """
    pooled = subgroup_accuracy(correct, subgroups)
    worst_subgroup = min(pooled, key=lambda g: (pooled[g], g))
    accuracy, counts = class_subgroup_table(correct, labels, subgroups)
    eligible = np.where(counts >= min_count, accuracy, np.inf)
    cell = None
    if np.isfinite(eligible).any():
        c, g = np.unravel_index(int(np.argmin(eligible)), eligible.shape)
        cell = {"class": int(c), "subgroup": int(g), "accuracy": float(accuracy[c, g]), "count": int(counts[c, g])}
    return {"subgroup": worst_subgroup, "subgroup_accuracy": pooled[worst_subgroup], "cell": cell,
            "min_count": min_count}


def subgroup_metrics(correct: ArrayLike, labels: ArrayLike, subgroups: ArrayLike, *,
                     num_classes: int | None = None, num_subgroups: int | None = None,
                     min_count: int = 10) -> dict[str, Any]:
    """Every subgroup metric in one JSON-ready dict: accuracy, subgroup_accuracy, macro_std,
    worst_group, class_subgroup_accuracy (C x G lists, None where empty) and class_subgroup_counts."""
    accuracy, counts = class_subgroup_table(correct, labels, subgroups, num_classes=num_classes,
                                            num_subgroups=num_subgroups)
    return {
        "accuracy": 100.0 * float(_as_correct(correct).mean()),
        "subgroup_accuracy": subgroup_accuracy(correct, subgroups),
        "macro_std": macro_std_from_table(accuracy, counts),
        "worst_group": worst_group_accuracy(correct, labels, subgroups, min_count=min_count),
        "class_subgroup_accuracy": [[None if math.isnan(a) else float(a) for a in row] for row in accuracy],
        "class_subgroup_counts": counts.tolist(),
    }


def _grid_summary(accuracies: Mapping[tuple[str, int], float], corruptions: Iterable[str]) -> dict[str, Any]:
    """Mean / per-corruption / per-severity accuracy over the ``corruptions`` x 1..5 cells present."""
    corruptions = tuple(corruptions)
    present = {key: value for key, value in accuracies.items() if key[0] in corruptions}
    missing = [[c, s] for c in corruptions for s in SEVERITIES if (c, s) not in present]
    by_corruption = {c: [v for (name, _), v in present.items() if name == c] for c in corruptions}
    by_severity = {s: [v for (_, sev), v in present.items() if sev == s] for s in SEVERITIES}
    return {
        "mean": float(np.mean(list(present.values()))) if present else None,
        "complete": not missing,
        "missing": missing,
        "per_corruption": {c: float(np.mean(v)) for c, v in by_corruption.items() if v},
        "per_severity": {s: float(np.mean(v)) for s, v in by_severity.items() if v},
    }


def corruption_summary(accuracies: Mapping[tuple[str, int], float]) -> dict[str, Any]:
    """Summarise CIFAR-C accuracies keyed by ``(corruption, severity)``.

    ``"benchmark"``: over the 15 benchmark corruptions x severities 1..5; ``mean`` is the
    headline number. If cells are missing, ``complete`` is False, ``missing`` lists them
    and every mean is over the cells present only (do not compare it with complete
    grids). ``"extra"``: the same for the 4 extra corruptions, reported separately.
    Unknown corruptions, severities outside 1..5 and non-finite accuracies raise ValueError.
    """
    known = set(BENCHMARK_CORRUPTIONS) | set(EXTRA_CORRUPTIONS)
    for key, value in accuracies.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"keys must be (corruption, severity) pairs, got {key!r}")
        corruption, severity = key
        if corruption not in known:
            raise ValueError(f"unknown corruption {corruption!r}; known: {sorted(known)}")
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r} for {corruption!r}")
        if not math.isfinite(value):
            raise ValueError(f"accuracy for {key!r} is not finite: {value!r}")
    return {"benchmark": _grid_summary(accuracies, BENCHMARK_CORRUPTIONS),
            "extra": _grid_summary(accuracies, EXTRA_CORRUPTIONS)}


def shift_gap(clean_accuracy: float, shifted_accuracy: float) -> dict[str, float]:
    """Accuracy under a dataset shift (e.g. CIFAR-10.1) and its gap ``clean - shifted`` in points."""
    for name, value in (("clean_accuracy", clean_accuracy), ("shifted_accuracy", shifted_accuracy)):
        if not math.isfinite(value) or not 0 <= value <= 100:
            raise ValueError(f"{name} must be a percentage in [0, 100], got {value!r}")
    return {"clean_accuracy": float(clean_accuracy), "accuracy": float(shifted_accuracy),
            "gap": float(clean_accuracy) - float(shifted_accuracy)}
