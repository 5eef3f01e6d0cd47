"""recipes/train_spurious.py: the smoke path of every kind of method, and the sweep aggregating its reports."""
from __future__ import annotations

import json

import pytest

from conftest import load_recipe


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("train_spurious")


@pytest.fixture(scope="module")
def smoke_runs(recipe, tmp_path_factory, tiny_flow_path):
    """One smoke run per kind of method (plain, FlowAug, early and late masking), seed 0."""
    root = tmp_path_factory.mktemp("spurious_runs")
    for method in ("erm", "flowaug-balanced", "early-masking", "late-masking"):
        out = root / method / "seed0"
        assert recipe.main(["--method", method, "--profile", "smoke", "--out", str(out), "--flow",
                            str(tiny_flow_path), "--quiet"]) == 0
    return root


def report(root, method):
    return json.loads((root / method / "seed0" / "report.json").read_text())


def test_every_method_reports_test_shift_aligned_and_conflicting(smoke_runs):
    for method in ("erm", "flowaug-balanced", "early-masking", "late-masking"):
        entry = report(smoke_runs, method)["suites"]["test_shift"]
        assert 0 <= entry["aligned_accuracy"] <= 100 and 0 <= entry["conflicting_accuracy"] <= 100
        assert entry["worst_group"]["cell"]["count"] == 10    # smoke: 1,000 test_shift images, 10 per cell
    assert (smoke_runs / "erm" / "seed0" / "model.pt").is_file()


def test_flowaug_runs_swap_with_groups_and_count_them(smoke_runs):
    result = report(smoke_runs, "flowaug-balanced")
    assert result["settings"]["donor"] == "balanced" and result["counters"]["augmented_count"] > 0
    assert result["timing"]["augment_seconds"] > 0


@pytest.mark.parametrize("method", ["early-masking", "late-masking"])
def test_masking_runs_report_predicted_masks_beside_the_oracle(smoke_runs, method):
    suites = report(smoke_runs, method)["suites"]
    predicted = suites["test_shift_predicted_masks"]
    assert 0 < predicted["mask_iou"] <= 1 and "aligned_accuracy" in predicted


def test_a_vit_late_masking_run_trains_with_adamw(recipe, tmp_path):
    out = tmp_path / "vit"
    assert recipe.main(["--method", "late-masking", "--arch", "vit-cls", "--profile", "smoke", "--out", str(out),
                        "--quiet"]) == 0
    result = json.loads((out / "report.json").read_text())
    assert result["settings"]["optimizer"] == "adam" and result["settings"]["arch"] == "vit-cls"
    assert "test_shift_predicted_masks" in result["suites"] and (out / "model.pt").is_file()


def test_a_finished_folder_is_left_alone(recipe, smoke_runs, capsys):
    before = (smoke_runs / "erm" / "seed0" / "report.json").read_text()
    assert recipe.main(["--method", "erm", "--profile", "smoke", "--out", str(smoke_runs / "erm" / "seed0")]) == 0
    assert "already holds a finished run" in capsys.readouterr().out
    assert (smoke_runs / "erm" / "seed0" / "report.json").read_text() == before


def test_the_sweep_aggregates_spurious_reports(smoke_runs, tmp_path):
    reproduce = load_recipe("reproduce")
    config = {"name": "toy_spurious", "recipe": "spurious", "profile": "smoke",
              "methods": ["erm", "flowaug-balanced", "early-masking"], "seeds": [0],
              "runs_dir": str(smoke_runs), "results_dir": str(tmp_path)}
    (tmp_path / "sweep.json").write_text(json.dumps(config))
    results = reproduce.publish(reproduce.Sweep.from_json(tmp_path / "sweep.json"))
    erm, early = results["methods"]["erm"], results["methods"]["early-masking"]
    assert erm["conflicting_accuracy"]["mean"] == report(smoke_runs, "erm")["suites"]["test_shift"]["conflicting_accuracy"]
    assert erm["mask_iou"]["n"] == 0 and early["mask_iou"]["n"] == 1
    table = (tmp_path / "toy_spurious.md").read_text()
    assert "worst cell (%)" in table and "| `early-masking` |" in table
    assert (tmp_path / "toy_spurious.png").stat().st_size > 0


def test_shipped_spurious_sweep_config_parses():
    reproduce = load_recipe("reproduce")
    sweep = reproduce.Sweep.from_json(reproduce.RECIPES_DIR / "sweep_spurious.json")
    assert sweep.recipe == "spurious" and len(sweep.seeds) == 3
    recipe = load_recipe("train_spurious")
    assert set(sweep.methods) == set(recipe.METHODS)
    texture = reproduce.Sweep.from_json(reproduce.RECIPES_DIR / "sweep_spurious_texture.json")
    assert set(texture.methods) <= set(recipe.METHODS) and texture.extra_args[-2:] == ["--cue", "texture"]


def test_background_only_swaps_with_a_tenth_of_the_masks_on_the_texture_cue(recipe, tmp_path):
    out = tmp_path / "regional"
    assert recipe.main(["--method", "regionalswap-masked-10pct", "--cue", "texture", "--profile", "smoke",
                        "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "report.json").read_text())
    assert result["cue"] == "texture" and result["settings"]["augment_masks"] == "10pct"
    assert result["train_masks"]["known_masks"] == 102 and 0 < result["train_masks"]["predicted_mask_iou"] <= 1
    assert "cue texture" in result["suites"]["test_shift"]["description"]


def test_flowaug_on_a_cue_without_a_shipped_flow_asks_for_one(recipe, tmp_path, capsys):
    with pytest.raises(SystemExit):
        recipe.main(["--method", "flowaug-any", "--cue", "both", "--out", str(tmp_path / "x")])
    assert "no flow is shipped for --cue both; pass --flow" in capsys.readouterr().err
