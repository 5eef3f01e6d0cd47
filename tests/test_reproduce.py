"""recipes/reproduce.py: skipping finished runs and aggregating fabricated report.json files."""
from __future__ import annotations

import json
import shutil
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
    """The parts of a train_cifar.py report.json that the aggregation reads (two classes x two subgroups)."""
    suites = {"clean": {"accuracy": clean, "description": DATA},
              "cifar10b": {"accuracy": clean, "macro_std": macro_std, "worst_group": {"subgroup_accuracy": worst},
                           "subgroup_accuracy": {"0": worst, "1": clean},
                           "class_subgroup_accuracy": [[worst, clean], [worst, clean]],
                           "class_subgroup_counts": [[50, 50], [50, 50]]}}
    if c_mean is not None:
        suites["cifar10c"] = {"summary": {"benchmark": {"mean": c_mean}}}
    return {"dataset": "cifar10", "suites": suites, "timing": {"train_seconds": seconds, "augment_seconds": seconds / 4},
            "hardware": {"device": "toy CPU"}}


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
    half = 12.7062 * 2 ** 0.5 / 2 ** 0.5  # Student t quantile 0.975 at 1 degree of freedom
    assert standard["clean_accuracy"] == {"mean": 81.0, "std": pytest.approx(2 ** 0.5), "n": 2,
                                          "low": pytest.approx(81.0 - half, abs=1e-3),
                                          "high": pytest.approx(81.0 + half, abs=1e-3)}
    assert standard["macro_std"]["mean"] == 12.0 and standard["macro_std"]["std"] == pytest.approx(8 ** 0.5)
    assert standard["train_minutes"]["mean"] == 11.0
    assert flowaug["worst_group_accuracy"] == {"mean": 70.0, "std": None, "n": 1, "low": None, "high": None}
    assert flowaug["cifar_c_accuracy"] == {"mean": None, "std": None, "n": 0, "low": None, "high": None}
    assert flowaug["paired"]["clean_accuracy"]["seeds"] == [0] and not flowaug["paired"]["clean_accuracy"]["excludes_zero"]
    assert 0 < standard["test_noise"]["macro_std"] and 0 < standard["test_noise"]["worst_group_accuracy"]
    assert results["data"] == DATA
    table = (sweep.results_dir / "toy.md").read_text()
    assert ("| `standard` | 2 | 81.00 ± 1.41 | 12.00 ± 2.83 | 62.00 ± 2.83 | 52.00 ± 2.83 | n/a | 11.0 ± 1.4 "
            "| 2.8 ± 0.4 |") in table
    assert "| `standard,flowaug` | 1 | 81.00 ± n/a | 8.00 ± n/a | 70.00 ± n/a | n/a | n/a | 15.0 ± n/a | 3.8 ± n/a |" in table
    assert "| `standard` | 62.0 ± 2.8 | 81.0 ± 1.4 |" in table, "per-subgroup table"
    assert DATA in table and "trained on: toy CPU" in table
    assert json.loads((sweep.results_dir / "toy.json").read_text()) == json.loads(json.dumps(results))
    assert (sweep.results_dir / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| `standard` | 2 | 81.00 [68.29, 93.71] |" in table, "interval table"


def test_paired_differences_are_bold_only_where_the_interval_excludes_zero(reproduce, tmp_path):
    config = {"name": "pairs", "profile": "smoke", "methods": ["standard", "standard,flowaug"], "seeds": [0, 1, 2],
              "runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results"), "control": "standard"}
    (tmp_path / "sweep.json").write_text(json.dumps(config))
    sweep = reproduce.Sweep.from_json(tmp_path / "sweep.json")
    for seed, (clean, worst) in enumerate([(80.0, 60.0), (82.0, 66.0), (81.0, 63.0)]):
        for method, gain, swing in (("standard", 0.0, 0.0), ("standard,flowaug", 1.0 + 0.1 * seed, (-4.0, 5.0, -2.0)[seed])):
            out = sweep.run_dir(method, seed)
            out.mkdir(parents=True)
            report = fake_report(clean + gain, 10.0, worst + swing, 50.0, 60.0)
            (out / "report.json").write_text(json.dumps(report))
    results = reproduce.publish(sweep)
    paired = results["methods"]["standard,flowaug"]["paired"]
    assert paired["clean_accuracy"]["seeds"] == [0, 1, 2] and paired["clean_accuracy"]["excludes_zero"]
    assert paired["clean_accuracy"]["std"] == pytest.approx(0.1) and paired["clean_accuracy"]["mean"] == pytest.approx(1.1)
    assert not paired["worst_group_accuracy"]["excludes_zero"] and not paired["macro_std"]["excludes_zero"]
    table = (sweep.results_dir / "pairs.md").read_text()
    assert "| `standard,flowaug` | 3 | **+1.10 [+0.85, +1.35]** | +0.00 [+0.00, +0.00] | -0.33 [" in table
    assert (sweep.results_dir / "pairs_paired.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_control_outside_the_methods_is_named(reproduce, tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"name": "x", "profile": "cpu", "methods": ["standard"],
                                                   "seeds": [0], "runs_dir": "r", "control": "flowaug"}))
    with pytest.raises(ValueError, match="control 'flowaug' must be one of the methods"):
        reproduce.Sweep.from_json(tmp_path / "bad.json")


class FakeTraining:
    """Stands in for subprocess.Popen of train_cifar.py: records the command and, unless the method is
    in ``failing``, writes a report.json into its --out folder and exits 0."""

    commands: list[list[str]] = []
    failing: set[str] = set()

    def __init__(self, command, env, stdout, stderr):
        self.commands.append(command)
        self.env = env
        method, out = command[command.index("--aug") + 1], Path(command[command.index("--out") + 1])
        self.code = 1 if method in self.failing else 0
        if not self.code:
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.json").write_text(json.dumps(fake_report(70.0, 9.0, 50.0, None, 60.0)))

    def poll(self) -> int:
        return self.code


@pytest.fixture
def fake_training(reproduce, monkeypatch):
    FakeTraining.commands, FakeTraining.failing = [], set()
    monkeypatch.setattr(reproduce.subprocess, "Popen", FakeTraining)
    return FakeTraining


def test_sweep_skips_finished_runs_and_publishes_each_run(reproduce, sweep, fake_training):
    started = reproduce.run_sweep(sweep, jobs=2, threads=1, poll_seconds=0)
    assert started == [sweep.run_dir("standard,flowaug", 1)]
    (command,) = fake_training.commands
    assert command[1] == str(reproduce.RECIPES["cifar"].script)
    assert command[2:] == ["--aug", "standard,flowaug", "--seed", "1", "--profile", "smoke",
                           "--out", str(sweep.run_dir("standard,flowaug", 1)), "--data-root", "DATA"]
    for method, seed in [("standard", 0), ("standard", 1), ("standard,flowaug", 0), ("standard,flowaug", 1)]:
        published = sweep.published_report(method, seed)
        assert published.read_bytes() == (sweep.run_dir(method, seed) / "report.json").read_bytes()
    assert (sweep.run_dir("standard,flowaug", 1) / "train.log").is_file(), "jobs > 1 logs to train.log"


def test_published_reports_alone_are_enough_to_skip_and_aggregate(reproduce, sweep, fake_training):
    reproduce.publish(sweep)
    shutil.rmtree(sweep.runs_dir)  # a fresh checkout: the runs folder is git-ignored
    assert reproduce.run_sweep(sweep, poll_seconds=0) == [sweep.run_dir("standard,flowaug", 1)]
    assert reproduce.aggregate(sweep)["methods"]["standard"]["seeds"] == [0, 1]


def test_a_failed_run_is_named_after_the_others_finish(reproduce, sweep, fake_training):
    shutil.rmtree(sweep.runs_dir)
    fake_training.failing = {"standard"}
    with pytest.raises(RuntimeError, match=r"runs failed: standard seed 0 \(exit code 1.*standard seed 1"):
        reproduce.run_sweep(sweep, jobs=3, poll_seconds=0)
    assert len(fake_training.commands) == 4
    assert sweep.published_report("standard,flowaug", 1).is_file()
    assert not sweep.published_report("standard", 0).is_file()


def test_a_variant_is_its_own_row_run_with_its_arguments(reproduce, tmp_path, fake_training):
    config = {"name": "toy", "profile": "smoke", "methods": ["standard,flowaug", "flowaug-v2"], "seeds": [0],
              "runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results"),
              "variants": {"flowaug-v2": {"method": "standard,flowaug", "args": ["--flow", "cifar10-v2"]}}}
    (tmp_path / "sweep.json").write_text(json.dumps(config))
    sweep = reproduce.Sweep.from_json(tmp_path / "sweep.json")
    reproduce.run_sweep(sweep, poll_seconds=0)
    plain, variant = fake_training.commands
    assert plain[2:4] == ["--aug", "standard,flowaug"] and "--flow" not in plain
    assert variant[2:6] == ["--aug", "standard,flowaug", "--flow", "cifar10-v2"]
    assert variant[variant.index("--out") + 1] == str(tmp_path / "runs" / "flowaug-v2" / "seed0")
    assert set(reproduce.publish(sweep)["methods"]) == {"standard,flowaug", "flowaug-v2"}


@pytest.mark.parametrize("variants", [{"other": {"method": "standard", "args": []}},
                                      {"flowaug-v2": {"method": "standard,flowaug"}},
                                      {"flowaug-v2": {"method": "standard,flowaug", "args": "--flow x"}}])
def test_a_bad_variant_is_named(reproduce, tmp_path, variants):
    (tmp_path / "bad.json").write_text(json.dumps({"name": "x", "profile": "cpu", "methods": ["flowaug-v2"],
                                                   "seeds": [0], "runs_dir": "r", "variants": variants}))
    with pytest.raises(ValueError, match="variant '(other|flowaug-v2)' must be one of the methods"):
        reproduce.Sweep.from_json(tmp_path / "bad.json")


def test_unknown_config_keys_are_rejected(reproduce, tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"name": "x", "profile": "cpu", "methods": [], "seeds": [],
                                                   "runs_dir": "r", "epochs": 3}))
    with pytest.raises(ValueError, match="unknown sweep keys"):
        reproduce.Sweep.from_json(tmp_path / "bad.json")


def test_shipped_cpu_sweep_config_parses(reproduce):
    sweep = reproduce.Sweep.from_json(RECIPE.with_name("sweep_cpu.json"))
    assert sweep.profile == "cpu" and len(sweep.seeds) >= 2
    assert {"standard", "standard,flowaug", "standard,randaugment"} <= set(sweep.methods)
