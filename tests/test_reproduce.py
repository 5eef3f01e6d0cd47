"""recipes/reproduce.py: skipping finished runs and aggregating fabricated report.json files."""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from conftest import load_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "reproduce.py"
DATA = "CIFAR-10 (JPEG-q75 proxy)"


@pytest.fixture(scope="module")
def reproduce() -> ModuleType:
    return load_recipe("reproduce")


def fake_report(clean: float, macro_std: float, worst: float, c_mean: float | None, seconds: float) -> dict:
    """The parts of a train_cifar.py report.json that the aggregation reads."""
    suites = {"clean": {"accuracy": clean, "description": DATA},
              "cifar10b": {"accuracy": clean, "macro_std": macro_std, "worst_group": {"subgroup_accuracy": worst}}}
    if c_mean is not None:
        suites["cifar10c"] = {"summary": {"benchmark": {"mean": c_mean}}}
    return {"dataset": "cifar10", "suites": suites, "timing": {"train_seconds": seconds}}


@pytest.fixture
def sweep(reproduce, tmp_path):
    """Two methods x two seeds; ``standard`` has both seeds finished, ``standard,flowaug`` only seed 0."""
    config = {"name": "toy", "profile": "smoke", "methods": ["standard", "standard,flowaug"], "seeds": [0, 1],
              "runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results"),
              "extra_args": ["--data-root", "DATA"]}
    (tmp_path / "sweep.json").write_text(json.dumps(config))
    sweep = reproduce.Sweep.from_json(tmp_path / "sweep.json")
    reports = {("standard", 0): fake_report(80.0, 10.0, 60.0, 50.0, 600.0),
               ("standard", 1): fake_report(82.0, 14.0, 64.0, 54.0, 720.0),
               ("standard,flowaug", 0): fake_report(81.0, 8.0, 70.0, None, 900.0)}
    for (method, seed), report in reports.items():
        out = sweep.run_dir(method, seed)
        out.mkdir(parents=True)
        (out / "report.json").write_text(json.dumps(report))
    return sweep


def test_aggregates_mean_and_sample_std_over_seeds(reproduce, sweep):
    results = reproduce.publish(sweep)
    standard, flowaug = results["methods"]["standard"], results["methods"]["standard,flowaug"]
    assert standard["seeds"] == [0, 1] and flowaug["seeds"] == [0]
    assert standard["clean_accuracy"] == {"mean": 81.0, "std": pytest.approx(2 ** 0.5), "n": 2}
    assert standard["macro_std"]["mean"] == 12.0 and standard["macro_std"]["std"] == pytest.approx(8 ** 0.5)
    assert standard["train_minutes"]["mean"] == 11.0
    assert flowaug["worst_group_accuracy"] == {"mean": 70.0, "std": None, "n": 1}
    assert flowaug["cifar_c_accuracy"] == {"mean": None, "std": None, "n": 0}
    assert results["data"] == DATA
    table = (sweep.results_dir / "toy.md").read_text()
    assert "| `standard` | 2 | 81.00 ± 1.41 | 12.00 ± 2.83 | 62.00 ± 2.83 | 52.00 ± 2.83 | n/a | 11.0 ± 1.4 |" in table
    assert "| `standard,flowaug` | 1 | 81.00 ± n/a | 8.00 ± n/a | 70.00 ± n/a | n/a | n/a | 15.0 ± n/a |" in table
    assert DATA in table
    assert json.loads((sweep.results_dir / "toy.json").read_text()) == json.loads(json.dumps(results))
    assert (sweep.results_dir / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_skips_finished_runs_and_resumes_the_rest(reproduce, sweep, monkeypatch):
    commands = []
    monkeypatch.setattr(reproduce.subprocess, "run", lambda command, check: commands.append(command))
    started = reproduce.run_sweep(sweep)
    assert started == [sweep.run_dir("standard,flowaug", 1)]
    (command,) = commands
    assert command[1] == str(reproduce.TRAIN_SCRIPT)
    assert command[2:] == ["--aug", "standard,flowaug", "--seed", "1", "--profile", "smoke",
                           "--out", str(sweep.run_dir("standard,flowaug", 1)), "--resume", "--data-root", "DATA"]


def test_unknown_config_keys_are_rejected(reproduce, tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"name": "x", "profile": "cpu", "methods": [], "seeds": [],
                                                   "runs_dir": "r", "epochs": 3}))
    with pytest.raises(ValueError, match="unknown sweep keys"):
        reproduce.Sweep.from_json(tmp_path / "bad.json")


def test_shipped_cpu_sweep_config_parses(reproduce):
    sweep = reproduce.Sweep.from_json(RECIPE.with_name("sweep_cpu.json"))
    assert sweep.profile == "cpu" and len(sweep.seeds) >= 2
    assert {"standard", "standard,flowaug", "standard,randaugment"} <= set(sweep.methods)
