"""Run a sweep of recipes/train_cifar.py (methods x seeds at one profile) and publish the results table.

    python recipes/reproduce.py --config recipes/sweep_cpu.json
    python recipes/reproduce.py --config recipes/sweep_cpu.json --jobs 10 --threads 1 -- --aug-workers 3
    python recipes/reproduce.py --config recipes/sweep_cpu.json --aggregate-only

The config (JSON) names the sweep, the profile, the methods (``--aug`` values), the seeds, the
runs folder, the results folder and extra arguments passed to every run (e.g. ``--data-root``).
Each run lives in ``<runs_dir>/<method>/seed<k>`` (git-ignored). As soon as a run finishes, its
``report.json`` is copied to ``<results_dir>/<name>/<method>-s<seed>.json`` (committed), so a long
sweep can be continued on another machine: a run with a published report is skipped, an
interrupted one continues (``train_cifar.py`` resumes a run folder that holds the same settings). ``--jobs N`` trains N runs side by side (each run's
output then goes to ``train.log`` in its folder); arguments after ``--`` go to every run.

Writes ``<results_dir>/<name>.json`` (per-run numbers and mean/std per method), ``<name>.md`` (a
table of mean +- std over seeds: clean accuracy, MacroStd, worst-group accuracy, CIFAR-C mean
accuracy over the 15 benchmark corruptions, CIFAR-10.1 accuracy when measured, training wall time)
and ``<name>.png`` (clean accuracy against MacroStd, one point per method). The std is the sample
standard deviation over seeds (n - 1 in the denominator; shown as "n/a" with one seed).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from flowaug.fileio import atomic_path, atomic_write_text

TRAIN_SCRIPT = Path(__file__).resolve().with_name("train_cifar.py")
METRICS = {  # key -> (table header, format)
    "clean_accuracy": ("clean acc (%)", ".2f"),
    "macro_std": ("MacroStd", ".2f"),
    "worst_group_accuracy": ("worst-group acc (%)", ".2f"),
    "cifar_c_accuracy": ("CIFAR-C mean acc (%)", ".2f"),
    "cifar10_1_accuracy": ("CIFAR-10.1 acc (%)", ".2f"),
    "train_minutes": ("train wall time (min)", ".1f"),
    "augment_minutes": ("of which augmentation (min)", ".1f"),
}


@dataclass(frozen=True)
class Sweep:
    """A sweep read from the JSON config."""

    name: str
    profile: str
    methods: list[str]
    seeds: list[int]
    runs_dir: Path
    results_dir: Path = Path("benchmarks/results")
    extra_args: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, path: Path) -> Sweep:
        raw = json.loads(Path(path).read_text())
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown sweep keys {sorted(unknown)}; allowed: {list(cls.__dataclass_fields__)}")
        return cls(**{**raw, "runs_dir": Path(raw["runs_dir"]),
                      "results_dir": Path(raw.get("results_dir", cls.results_dir))})

    def run_dir(self, method: str, seed: int) -> Path:
        return self.runs_dir / method.replace(",", "+") / f"seed{seed}"

    def published_report(self, method: str, seed: int) -> Path:
        """The committed copy of a finished run's report.json."""
        return self.results_dir / self.name / f"{method.replace(',', '+')}-s{seed}.json"


def publish_run(sweep: Sweep, method: str, seed: int) -> bool:
    """Copy the run's report.json to its published place; False when the run has no report yet."""
    report = sweep.run_dir(method, seed) / "report.json"
    if not report.is_file():
        return False
    with atomic_path(sweep.published_report(method, seed)) as tmp:
        shutil.copyfile(report, tmp)
    return True


def run_sweep(sweep: Sweep, jobs: int = 1, threads: int | None = None, train_args: list[str] = (),
              poll_seconds: float = 5.0) -> list[Path]:
    """Train every (method, seed) without a published report, up to ``jobs`` subprocesses at a time, each
    with ``threads`` CPU threads (default: torch's choice) and ``train_args`` after the sweep's
    ``extra_args``; publishes each run as soon as it finishes.

    Returns the run folders started; raises RuntimeError naming the runs that failed (after the rest)."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    env = dict(os.environ, **({"FLOWAUG_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)} if threads else {}))
    pending = []
    for method in sweep.methods:
        for seed in sweep.seeds:
            if sweep.published_report(method, seed).is_file() or publish_run(sweep, method, seed):
                print(f"skip {method} seed {seed} (published: {sweep.published_report(method, seed)})")
            else:
                pending.append((method, seed))
    running: dict[tuple[str, int], subprocess.Popen] = {}
    started, failed = [], []
    while pending or running:
        while pending and len(running) < jobs:
            method, seed = pending.pop(0)
            out = sweep.run_dir(method, seed)
            command = [sys.executable, str(TRAIN_SCRIPT), "--aug", method, "--seed", str(seed),
                       "--profile", sweep.profile, "--out", str(out), *sweep.extra_args, *train_args]
            print(" ".join(command), flush=True)
            log = None
            if jobs > 1:
                out.mkdir(parents=True, exist_ok=True)
                log = open(out / "train.log", "a")
            running[method, seed] = subprocess.Popen(command, env=env, stdout=log,
                                                     stderr=subprocess.STDOUT if log else None)
            if log:
                log.close()  # the child holds its own descriptor
            started.append(out)
        codes = {key: process.poll() for key, process in running.items()}
        finished = {key: code for key, code in codes.items() if code is not None}
        for (method, seed), code in finished.items():
            del running[method, seed]
            if code == 0 and publish_run(sweep, method, seed):
                print(f"finished {method} seed {seed}: published {sweep.published_report(method, seed)}", flush=True)
            else:
                failed.append(f"{method} seed {seed} (exit code {code}, {sweep.run_dir(method, seed)})")
        if running and not finished:
            time.sleep(poll_seconds)
    if failed:
        raise RuntimeError("runs failed: " + "; ".join(failed))
    return started


def summarize(report: dict[str, Any]) -> dict[str, float | None]:
    """The table's numbers from one train_cifar.py report.json (None where a suite was not run)."""
    suites = report["suites"]
    dataset = report["dataset"]
    subgroups = suites.get(f"{dataset}b", {})
    corrupted = suites.get(f"{dataset}c")
    shifted = suites.get("cifar10.1")
    return {
        "clean_accuracy": suites["clean"]["accuracy"],
        "macro_std": subgroups.get("macro_std"),
        "worst_group_accuracy": subgroups["worst_group"]["subgroup_accuracy"] if subgroups else None,
        "cifar_c_accuracy": corrupted["summary"]["benchmark"]["mean"] if corrupted else None,
        "cifar10_1_accuracy": shifted["accuracy"] if shifted else None,
        "train_minutes": report["timing"]["train_seconds"] / 60.0,
        "augment_minutes": report["timing"]["augment_seconds"] / 60.0,
        "hardware": report.get("hardware", {}).get("device", "unrecorded"),
        "subgroup_accuracy": subgroups.get("subgroup_accuracy", {}),
    }


def mean_std(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean and sample std (n - 1) of the values that are not None; std None with fewer than 2."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(present) / len(present)
    std = math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1)) if len(present) > 1 else None
    return {"mean": mean, "std": std, "n": len(present)}


def aggregate(sweep: Sweep) -> dict[str, Any]:
    """Per-run summaries and per-method mean/std over the finished seeds."""
    methods: dict[str, Any] = {}
    description = None
    hardware: set[str] = set()
    for method in sweep.methods:
        runs = {}
        for seed in sweep.seeds:
            path = sweep.published_report(method, seed)
            if path.is_file():
                report = json.loads(path.read_text())
                runs[seed] = summarize(report)
                hardware.add(runs[seed]["hardware"])
                description = description or report["suites"]["clean"]["description"]
        if runs:
            subgroups = sorted({group for r in runs.values() for group in r["subgroup_accuracy"]}, key=int)
            methods[method] = {"seeds": sorted(runs), "runs": runs,
                               **{key: mean_std([r[key] for r in runs.values()]) for key in METRICS},
                               "subgroup_accuracy": {group: mean_std([r["subgroup_accuracy"].get(group)
                                                                      for r in runs.values()])
                                                     for group in subgroups}}
    return {"name": sweep.name, "profile": sweep.profile, "data": description, "hardware": sorted(hardware),
            "methods": methods}


def _cell(stats: dict[str, Any], fmt: str) -> str:
    if stats["mean"] is None:
        return "n/a"
    std = "n/a" if stats["std"] is None else format(stats["std"], fmt)
    return f"{format(stats['mean'], fmt)} ± {std}"


def markdown_table(results: dict[str, Any]) -> str:
    """A Markdown table of mean ± std over seeds, one row per method."""
    headers = ["method", "seeds", *(header for header, _ in METRICS.values())]
    lines = [f"Sweep `{results['name']}`, profile `{results['profile']}`, data: {results['data']}, "
             f"trained on: {', '.join(results['hardware'])}. Mean ± sample std over seeds; "
             "CIFAR-C = mean over the 15 benchmark corruptions x 5 severities.", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for method, entry in results["methods"].items():
        cells = [f"`{method}`", str(len(entry["seeds"]))]
        cells += [_cell(entry[key], fmt) for key, (_, fmt) in METRICS.items()]
        lines.append("| " + " | ".join(cells) + " |")
    subgroups = sorted({group for entry in results["methods"].values() for group in entry["subgroup_accuracy"]},
                       key=int)
    if subgroups:
        lines += ["", "Accuracy (%) per CIFAR-B background subgroup, mean ± sample std over seeds:", "",
                  "| method | " + " | ".join(f"subgroup {group}" for group in subgroups) + " |",
                  "|" + "---|" * (len(subgroups) + 1)]
        for method, entry in results["methods"].items():
            cells = [_cell(entry["subgroup_accuracy"].get(group, {"mean": None}), ".1f") for group in subgroups]
            lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def accuracy_vs_macro_std(results: dict[str, Any], path: Path) -> None:
    """PNG: clean accuracy (x) against MacroStd (y), one point per method with std error bars."""
    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    for method, entry in results["methods"].items():
        x, y = entry["clean_accuracy"], entry["macro_std"]
        if x["mean"] is None or y["mean"] is None:
            continue
        axes.errorbar(x["mean"], y["mean"], xerr=x["std"] or 0, yerr=y["std"] or 0, fmt="o", capsize=3)
        axes.annotate(method, (x["mean"], y["mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axes.set_xlabel("clean accuracy (%)")
    axes.set_ylabel("MacroStd on CIFAR-B (lower is fairer)")
    axes.set_title(f"{results['name']}: {results['data']}", fontsize=9)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


def publish(sweep: Sweep) -> dict[str, Any]:
    """Publish the finished runs found in ``runs_dir``, then aggregate every published run into
    ``<results_dir>/<name>.json``, ``.md`` and ``.png``."""
    for method in sweep.methods:
        for seed in sweep.seeds:
            publish_run(sweep, method, seed)
    results = aggregate(sweep)
    base = sweep.results_dir / sweep.name
    atomic_write_text(json.dumps(results, indent=2) + "\n", base.with_suffix(".json"))
    atomic_write_text(markdown_table(results), base.with_suffix(".md"))
    accuracy_vs_macro_std(results, base.with_suffix(".png"))
    print(f"wrote {base}.json, .md and .png ({len(results['methods'])} method(s))")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path(__file__).with_name("sweep_cpu.json"))
    parser.add_argument("--aggregate-only", action="store_true", help="do not train; aggregate published runs")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side (default 1)")
    parser.add_argument("--threads", type=int, help="CPU threads per run (default: torch's choice)")
    parser.add_argument("train_args", nargs="*",
                        help="after --: further recipes/train_cifar.py arguments for every run")
    args = parser.parse_args(argv)
    sweep = Sweep.from_json(args.config)
    failure = None
    if not args.aggregate_only:
        try:
            run_sweep(sweep, args.jobs, args.threads, args.train_args)
        except RuntimeError as error:
            failure = error
    publish(sweep)
    if failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
