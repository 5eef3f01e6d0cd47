"""flowaug.intervals: t intervals over seeds, paired differences, and the bootstrap over test images."""
from __future__ import annotations

import math

import numpy as np
import pytest

from flowaug.intervals import bootstrap_subgroup_metrics, mean_interval, paired_difference
from flowaug.metrics import class_subgroup_table, macro_std


def test_mean_interval_is_the_student_t_interval():
    entry = mean_interval([1.0, 2.0, None, 3.0])
    half = 4.302653 / math.sqrt(3)  # t quantile 0.975 at 2 degrees of freedom; std 1
    assert entry == {"mean": 2.0, "std": 1.0, "n": 3, "low": pytest.approx(2 - half), "high": pytest.approx(2 + half)}
    assert mean_interval([5.0]) == {"mean": 5.0, "std": None, "n": 1, "low": None, "high": None}
    assert mean_interval([None])["n"] == 0
    with pytest.raises(ValueError, match="level must be in"):
        mean_interval([1.0, 2.0], level=95)


def test_paired_difference_uses_only_the_seeds_both_have():
    treated = {0: 2.0, 1: 3.1, 2: 4.0, 5: 9.0}
    control = {0: 1.0, 1: 2.0, 2: 2.9, 3: 0.0}
    entry = paired_difference(treated, control)
    assert entry["seeds"] == [0, 1, 2] and entry["mean"] == pytest.approx(1.0667, abs=1e-4)
    assert entry["excludes_zero"]
    mixed = paired_difference({0: 1.0, 1: -1.0, 2: 0.5}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert not mixed["excludes_zero"] and mixed["low"] < 0 < mixed["high"]


def test_bootstrap_matches_resampling_the_images_themselves():
    """Binomial draws per cell are the same distribution as drawing each cell's images with replacement."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 600)
    subgroups = rng.integers(0, 4, 600)
    correct = rng.random(600) < np.array([0.9, 0.7, 0.5, 0.8])[subgroups]
    accuracy, counts = class_subgroup_table(correct, labels, subgroups)
    fast = bootstrap_subgroup_metrics(accuracy, counts, resamples=2000, seed=0)
    cells = [np.flatnonzero((labels == c) & (subgroups == g)) for c in range(3) for g in range(4)]
    slow_macro, slow_worst = [], []
    for _ in range(2000):
        index = np.concatenate([rng.choice(cell, len(cell)) for cell in cells])
        slow_macro.append(macro_std(correct[index], labels[index], subgroups[index]))
        pooled = [correct[index][subgroups[index] == g].mean() * 100 for g in range(4)]
        slow_worst.append(min(pooled))
    assert fast["macro_std"]["std"] == pytest.approx(np.std(slow_macro, ddof=1), rel=0.1)
    assert fast["worst_group_accuracy"]["std"] == pytest.approx(np.std(slow_worst, ddof=1), rel=0.1)
    assert fast["macro_std"]["low"] < macro_std(correct, labels, subgroups) < fast["macro_std"]["high"]


def test_bootstrap_of_a_table_without_errors_has_no_noise_and_bad_tables_are_named():
    counts = np.array([[10, 0], [5, 7]])
    accuracy = np.where(counts > 0, 100.0, np.nan)
    noise = bootstrap_subgroup_metrics(accuracy, counts, resamples=50)
    assert noise["macro_std"]["std"] == 0 and noise["worst_group_accuracy"] == {"std": 0.0, "low": 100.0, "high": 100.0}
    with pytest.raises(ValueError, match="equal"):
        bootstrap_subgroup_metrics(accuracy, counts[:1])
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_subgroup_metrics(accuracy, counts, resamples=1)
