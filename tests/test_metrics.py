"""Subgroup, corruption and shift metrics on small hand-computed examples."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowaug.data import BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS
from flowaug.metrics import (
    class_subgroup_table,
    corruption_summary,
    macro_std,
    shift_gap,
    subgroup_accuracy,
    subgroup_metrics,
    worst_group_accuracy,
)

# Ten images, three classes, subgroups 0..2 with unequal sizes:
#   class 0: subgroup 0 -> 3 images, 2 right (66.67%); subgroup 1 -> 1 image, right (100%)
#   class 1: subgroup 0 -> 2 images, 0 right (0%);      subgroup 2 -> 2 images, 1 right (50%); subgroup 1 empty
#   class 2: subgroup 1 only -> 2 images, 1 right (50%)  (a class with a single subgroup: std 0)
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
SUBGROUPS = np.array([0, 0, 0, 1, 0, 0, 2, 2, 1, 1])
CORRECT = np.array([1, 1, 0, 1, 0, 0, 1, 0, 1, 0], dtype=bool)

# class 0: w = (3/4, 1/4), m = 0.75 * 200/3 + 0.25 * 100 = 75,
#          s^2 = 0.75 * (200/3 - 75)^2 + 0.25 * (100 - 75)^2 = 0.75 * 625/9 + 625/4 = 625/3, s = 25/sqrt(3)
# class 1: w = (1/2, 1/2), m = 25, s^2 = 0.5 * 625 + 0.5 * 625 = 625, s = 25
# class 2: one subgroup, s = 0
EXPECTED_MACRO_STD = (25 / math.sqrt(3) + 25 + 0) / 3


def test_macro_std_hand_computed():
    assert macro_std(CORRECT, LABELS, SUBGROUPS) == pytest.approx(EXPECTED_MACRO_STD)


def test_macro_std_accepts_torch_tensors_and_01_ints():
    value = macro_std(torch.from_numpy(CORRECT.astype(np.int64)), torch.from_numpy(LABELS),
                      torch.from_numpy(SUBGROUPS))
    assert value == pytest.approx(EXPECTED_MACRO_STD)


def test_single_subgroup_class_has_zero_std():
    # only class 2 (one subgroup): its std is 0, so MacroStd is 0 whatever its accuracy (50%)
    mask = LABELS == 2
    assert macro_std(CORRECT[mask], LABELS[mask], SUBGROUPS[mask]) == 0.0


def test_subgroup_accuracy_pools_over_classes():
    # subgroup 0: 5 images (3 of class 0, 2 of class 1), 2 right -> 40%
    # subgroup 1: 3 images (1 of class 0, 2 of class 2), 2 right -> 66.67%
    # subgroup 2: 2 images of class 1, 1 right -> 50%
    result = subgroup_accuracy(CORRECT, SUBGROUPS)
    assert list(result) == [0, 1, 2]
    assert result[0] == pytest.approx(40.0)
    assert result[1] == pytest.approx(200 / 3)
    assert result[2] == pytest.approx(50.0)


def test_class_subgroup_table_marks_empty_cells():
    accuracy, counts = class_subgroup_table(CORRECT, LABELS, SUBGROUPS, num_subgroups=4)
    np.testing.assert_array_equal(counts, [[3, 1, 0, 0], [2, 0, 2, 0], [0, 2, 0, 0]])
    expected = np.array([[200 / 3, 100, np.nan, np.nan], [0, np.nan, 50, np.nan], [np.nan, 50, np.nan, np.nan]])
    np.testing.assert_allclose(accuracy, expected)


@pytest.mark.parametrize(("min_count", "expected_cell"), [
    (2, {"class": 1, "subgroup": 0, "accuracy": 0.0, "count": 2}),          # 0% is the lowest cell
    (3, {"class": 0, "subgroup": 0, "accuracy": 200 / 3, "count": 3}),      # only cell with >= 3 images
    (5, None),                                                              # no cell that large
])
def test_worst_group_accuracy(min_count, expected_cell):
    result = worst_group_accuracy(CORRECT, LABELS, SUBGROUPS, min_count=min_count)
    assert result["subgroup"] == 0 and result["subgroup_accuracy"] == pytest.approx(40.0)
    assert result["min_count"] == min_count
    if expected_cell is None:
        assert result["cell"] is None
    else:
        assert result["cell"] == pytest.approx(expected_cell)


def test_class_subgroup_table_rejects_ids_beyond_its_size():
    with pytest.raises(ValueError, match="exceed the table size"):
        class_subgroup_table(CORRECT, LABELS, SUBGROUPS, num_classes=2)  # label 2 needs 3 rows


@pytest.mark.parametrize("value", [True, False])
def test_all_correct_and_all_wrong(value):
    correct = np.full(len(LABELS), value)
    metrics = subgroup_metrics(correct, LABELS, SUBGROUPS, num_subgroups=4)
    expected = 100.0 if value else 0.0
    assert metrics["accuracy"] == expected
    assert metrics["macro_std"] == 0.0
    assert set(metrics["subgroup_accuracy"].values()) == {expected}
    assert metrics["worst_group"]["subgroup_accuracy"] == expected
    assert metrics["class_subgroup_accuracy"][2] == [None, expected, None, None]
    assert metrics["class_subgroup_counts"][0] == [3, 1, 0, 0]


@pytest.mark.parametrize(("correct", "labels", "subgroups", "message"), [
    (CORRECT[:-1], LABELS, SUBGROUPS, "equal lengths"),
    (np.where(CORRECT, 1.0, np.nan), LABELS, SUBGROUPS, "NaN"),
    (CORRECT.reshape(2, 5), LABELS, SUBGROUPS, "1-D"),
    (CORRECT.astype(int) * 2, LABELS, SUBGROUPS, "0/1"),
    (CORRECT, LABELS.astype(float), SUBGROUPS, "integers"),
    (CORRECT, LABELS, SUBGROUPS.astype(float) * np.nan, "NaN"),
    (CORRECT, LABELS, -SUBGROUPS - 1, "non-negative"),
    (CORRECT[:0], LABELS[:0], SUBGROUPS[:0], "empty"),
])
def test_bad_inputs_raise(correct, labels, subgroups, message):
    with pytest.raises(ValueError, match=message):
        macro_std(correct, labels, subgroups)


def full_grid() -> dict[tuple[str, int], float]:
    """Accuracy 10 * severity + index of the corruption (0..14): per-severity mean 10 s + 7,
    per-corruption mean 30 + index, overall mean 37; the 4 extras all at 50."""
    grid = {(c, s): 10.0 * s + i for i, c in enumerate(BENCHMARK_CORRUPTIONS) for s in range(1, 6)}
    grid.update({(c, s): 50.0 for c in EXTRA_CORRUPTIONS for s in range(1, 6)})
    return grid


def test_corruption_summary_complete_grid():
    summary = corruption_summary(full_grid())
    bench = summary["benchmark"]
    assert bench["complete"] and bench["missing"] == []
    assert bench["mean"] == pytest.approx(37.0)
    assert bench["per_severity"] == pytest.approx({s: 10.0 * s + 7 for s in range(1, 6)})
    assert bench["per_corruption"] == pytest.approx({c: 30.0 + i for i, c in enumerate(BENCHMARK_CORRUPTIONS)})
    assert summary["extra"]["mean"] == 50.0 and summary["extra"]["complete"]


def test_corruption_summary_flags_missing_cells():
    grid = full_grid()
    first = BENCHMARK_CORRUPTIONS[0]
    del grid[(first, 5)]  # value 10 * 5 + 0 = 50
    for corruption in EXTRA_CORRUPTIONS:
        for severity in range(1, 6):
            del grid[(corruption, severity)]
    summary = corruption_summary(grid)
    bench = summary["benchmark"]
    assert not bench["complete"] and bench["missing"] == [[first, 5]]
    assert bench["mean"] == pytest.approx((37 * 75 - 50) / 74)  # sum of the 75 cells is 37 * 75
    assert bench["per_corruption"][first] == pytest.approx(25.0)  # severities 1..4: 10, 20, 30, 40
    assert bench["per_severity"][5] == pytest.approx((sum(50 + i for i in range(15)) - 50) / 14)
    assert summary["extra"]["mean"] is None and len(summary["extra"]["missing"]) == 20


@pytest.mark.parametrize(("key", "value", "message"), [
    (("not_a_corruption", 1), 50.0, "unknown corruption"),
    (("fog", 6), 50.0, "severity"),
    (("fog", 1), float("nan"), "not finite"),
])
def test_corruption_summary_rejects_bad_cells(key, value, message):
    with pytest.raises(ValueError, match=message):
        corruption_summary({key: value})


def test_shift_gap():
    assert shift_gap(90.0, 82.5) == {"clean_accuracy": 90.0, "accuracy": 82.5, "gap": 7.5}


@pytest.mark.parametrize("bad", [float("nan"), 120.0, -1.0])
def test_shift_gap_rejects_non_percentages(bad):
    with pytest.raises(ValueError, match="percentage"):
        shift_gap(90.0, bad)
