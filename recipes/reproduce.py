"""Run a sweep of a training recipe (methods x seeds at one profile) and publish the results table.

    python recipes/reproduce.py --config recipes/sweep_cpu.json
    python recipes/reproduce.py --config recipes/sweep_cpu.json --jobs 10 --threads 1 -- --aug-workers 3
    python recipes/reproduce.py --config recipes/sweep_cpu.json --aggregate-only
    python recipes/reproduce.py --config recipes/sweep_spurious.json --jobs 2 --threads 1

The config (JSON) names the sweep, the recipe (:data:`RECIPES`: ``cifar`` = train_cifar.py, the
default; ``spurious`` = train_spurious.py), the profile, the methods (the recipe's ``--aug`` or
``--method`` values), the seeds, the runs folder, the results folder and extra arguments passed to
every run (e.g. ``--data-root``). ``variants`` gives a row of its own to a method run with further
arguments, e.g. FlowAug with another flow: ``"methods": [..., "flowaug-v2"], "variants": {"flowaug-v2":
{"method": "standard,flowaug", "args": ["--flow", "cifar10-v2"]}}``.
Each run lives in ``<runs_dir>/<method>/seed<k>`` (git-ignored). As soon as a run finishes, its
``report.json`` is copied to ``<results_dir>/<name>/<method>-s<seed>.json`` (committed), so a long
sweep can be continued on another machine: a run with a published report is skipped, an
interrupted one continues (``train_cifar.py`` resumes a run folder that holds the same settings). ``--jobs N`` trains N runs side by side (each run's
output then goes to ``train.log`` in its folder); arguments after ``--`` go to every run.

Writes ``<results_dir>/<name>.json`` (per-run numbers and mean/std per method), ``<name>.md`` (a
table of mean +- std over seeds of the recipe's metrics; for ``cifar``: clean accuracy, MacroStd,
worst-group accuracy, CIFAR-C mean accuracy over the 15 benchmark corruptions, CIFAR-10.1 accuracy
when measured, training wall time; for ``spurious``: test_shift average, aligned, conflicting and
worst-cell accuracy, MacroStd, the same with predicted masks and their IoU, training wall time)
and ``<name>.png`` (one point per method on the recipe's two headline axes). The std is the sample
standard deviation over seeds (n - 1 in the denominator; shown as "n/a" with one seed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from matplotlib.figure import Figure

from flowaug.arguments import HelpFormatter
from flowaug.fileio import atomic_path, atomic_write_text
from flowaug.intervals import BOOTSTRAP_RESAMPLES, LEVEL, bootstrap_subgroup_metrics, mean_interval, paired_difference

RECIPES_DIR = Path(__file__).resolve().parent


def summarize_cifar(report: dict[str, Any]) -> dict[str, Any]:
    """The table's numbers from one train_cifar.py report.json (None where a suite was not run)."""
    suites = report["suites"]
    dataset = report["dataset"]
    subgroups = suites.get(f"{dataset}b", {})
    corrupted = suites.get(f"{dataset}c")
    shifted = suites.get("cifar10.1")
    test_noise = bootstrap_subgroup_metrics(
        np.array(subgroups["class_subgroup_accuracy"], dtype=np.float64),  # None (empty cell) -> NaN
        np.array(subgroups["class_subgroup_counts"])) if subgroups else {}
    return {
        "clean_accuracy": suites["clean"]["accuracy"],
        "macro_std": subgroups.get("macro_std"),
        "worst_group_accuracy": subgroups["worst_group"]["subgroup_accuracy"] if subgroups else None,
        "cifar_c_accuracy": corrupted["summary"]["benchmark"]["mean"] if corrupted else None,
        "cifar10_1_accuracy": shifted["accuracy"] if shifted else None,
        "train_minutes": report["timing"]["train_seconds"] / 60.0,
        "augment_minutes": report["timing"]["augment_seconds"] / 60.0,
        "wall_minutes": report["timing"].get("this_process_wall_seconds", 0.0) / 60.0,
        "hardware": report.get("hardware", {}).get("device", "unrecorded"),
        "subgroup_accuracy": subgroups.get("subgroup_accuracy", {}),
        "test_noise": test_noise,
        "description": suites["clean"]["description"],
    }


def summarize_spurious(report: dict[str, Any]) -> dict[str, Any]:
    """The table's numbers from one train_spurious.py report.json (None where masks were not predicted)."""
    suites = report["suites"]
    shifted, predicted = suites["test_shift"], suites.get("test_shift_predicted_masks")
    cell = lambda entry: entry["worst_group"]["cell"]["accuracy"] if entry and entry["worst_group"]["cell"] else None  # noqa: E731
    return {
        "accuracy": shifted["accuracy"],
        "aligned_accuracy": shifted["aligned_accuracy"],
        "conflicting_accuracy": shifted["conflicting_accuracy"],
        "worst_cell_accuracy": cell(shifted),
        "macro_std": shifted["macro_std"],
        "predicted_conflicting_accuracy": predicted["conflicting_accuracy"] if predicted else None,
        "predicted_worst_cell_accuracy": cell(predicted),
        "mask_iou": predicted["mask_iou"] if predicted else None,
        "train_minutes": report["timing"]["train_seconds"] / 60.0,
        "hardware": report.get("hardware", {}).get("device", "unrecorded"),
        "subgroup_accuracy": shifted["subgroup_accuracy"],
        "test_noise": {},
        "description": shifted["description"],
    }


@dataclass(frozen=True)
class Recipe:
    """How the sweep runs one training script and reads its report.json."""

    script: Path
    method_flag: str
    summarize: Callable[[dict[str, Any]], dict[str, Any]]
    metrics: dict[str, tuple[str, str]]   # summary key -> (table header, format)
    axes: tuple[str, str]                 # the plot's x and y summary keys
    paired: tuple[str, ...]               # summary keys compared with the control method seed by seed
    caption: str
    subgroup_caption: str


RECIPES = {
    "cifar": Recipe(
        RECIPES_DIR / "train_cifar.py", "--aug", summarize_cifar,
        {"clean_accuracy": ("clean acc (%)", ".2f"), "macro_std": ("MacroStd", ".2f"),
         "worst_group_accuracy": ("worst-group acc (%)", ".2f"), "cifar_c_accuracy": ("CIFAR-C mean acc (%)", ".2f"),
         "cifar10_1_accuracy": ("CIFAR-10.1 acc (%)", ".2f"), "train_minutes": ("train wall time (min)", ".1f"),
         "augment_minutes": ("of which augmentation (min)", ".1f")},
        ("clean_accuracy", "macro_std"),
        ("clean_accuracy", "macro_std", "worst_group_accuracy", "cifar_c_accuracy"),
        "CIFAR-C = mean over the 15 benchmark corruptions x 5 severities.",
        "Accuracy (%) per CIFAR-B background subgroup"),
    "spurious": Recipe(
        RECIPES_DIR / "train_spurious.py", "--method", summarize_spurious,
        {"accuracy": ("test_shift acc (%)", ".1f"), "aligned_accuracy": ("aligned (%)", ".1f"),
         "conflicting_accuracy": ("conflicting (%)", ".1f"), "worst_cell_accuracy": ("worst cell (%)", ".1f"),
         "macro_std": ("MacroStd", ".1f"), "predicted_conflicting_accuracy": ("conflicting, predicted masks (%)", ".1f"),
         "predicted_worst_cell_accuracy": ("worst cell, predicted masks (%)", ".1f"),
         "mask_iou": ("mask IoU", ".3f"), "train_minutes": ("train wall time (min)", ".1f")},
        ("aligned_accuracy", "worst_cell_accuracy"),
        ("accuracy", "conflicting_accuracy", "worst_cell_accuracy", "macro_std"),
        "test_shift fills every class x background-group cell equally; aligned = background group equals the "
        "class; worst cell = the lowest class x group cell (50 images each).",
        "Accuracy (%) on test_shift per background group"),
}
LABELS = {"clean_accuracy": "clean accuracy (%)", "macro_std": "MacroStd on CIFAR-B (lower is fairer)",
          "aligned_accuracy": "test_shift accuracy on aligned images (%)",
          "worst_cell_accuracy": "worst class x group cell on test_shift (%)"}


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
    recipe: str = "cifar"
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # row name -> {"method": ..., "args": [...]}
    control: str | None = None  # the row every other is compared with seed by seed (default: the first method)

    @classmethod
    def from_json(cls, path: Path) -> Sweep:
        raw = json.loads(Path(path).read_text())
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown sweep keys {sorted(unknown)}; allowed: {list(cls.__dataclass_fields__)}")
        if raw.get("recipe", cls.recipe) not in RECIPES:
            raise ValueError(f"{path}: unknown recipe {raw['recipe']!r}; choose one of {', '.join(RECIPES)}")
        for name, variant in raw.get("variants", {}).items():
            if name not in raw.get("methods", []) or not isinstance(variant, dict) or set(variant) != {"method", "args"} \
                    or not isinstance(variant["method"], str) or not isinstance(variant["args"], list):
                raise ValueError(f"{path}: variant {name!r} must be one of the methods and map to "
                                 '{"method": "<the recipe\'s method>", "args": [...]}')
        if raw.get("control") is not None and raw["control"] not in raw.get("methods", []):
            raise ValueError(f"{path}: control {raw['control']!r} must be one of the methods")
        return cls(**{**raw, "runs_dir": Path(raw["runs_dir"]),
                      "results_dir": Path(raw.get("results_dir", cls.results_dir))})

    @property
    def spec(self) -> Recipe:
        return RECIPES[self.recipe]

    def command_args(self, method: str) -> list[str]:
        """The recipe's arguments that choose the method of row ``method`` (its variant's when it has one)."""
        variant = self.variants.get(method, {"method": method, "args": []})
        return [self.spec.method_flag, variant["method"], *variant["args"]]

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
    for seed in sweep.seeds:  # seed-major: a sweep stopped early has every method at the same seeds
        for method in sweep.methods:
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
            command = [sys.executable, str(sweep.spec.script), *sweep.command_args(method), "--seed", str(seed),
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


def aggregate(sweep: Sweep) -> dict[str, Any]:
    """Per-run summaries; per method the mean, sample std and 95% interval over the finished seeds
    (:func:`flowaug.intervals.mean_interval`), the paired difference from the control method by seed
    (:func:`flowaug.intervals.paired_difference`) and the mean test-set noise of its runs."""
    methods: dict[str, Any] = {}
    description = None
    hardware: set[str] = set()
    for method in sweep.methods:
        runs = {}
        for seed in sweep.seeds:
            path = sweep.published_report(method, seed)
            if path.is_file():
                runs[seed] = sweep.spec.summarize(json.loads(path.read_text()))
                hardware.add(runs[seed]["hardware"])
                description = description or runs[seed]["description"]
        if runs:
            subgroups = sorted({group for r in runs.values() for group in r["subgroup_accuracy"]}, key=int)
            noise_keys = sorted({key for r in runs.values() for key in r["test_noise"]})
            methods[method] = {"seeds": sorted(runs), "runs": runs,
                               **{key: mean_interval([r[key] for r in runs.values()]) for key in sweep.spec.metrics},
                               "subgroup_accuracy": {group: mean_interval([r["subgroup_accuracy"].get(group)
                                                                           for r in runs.values()])
                                                     for group in subgroups},
                               "test_noise": {key: mean_interval([r["test_noise"][key]["std"] for r in runs.values()
                                                                  if key in r["test_noise"]])["mean"]
                                              for key in noise_keys}}
    control = sweep.control or sweep.methods[0]
    for method, entry in methods.items():
        if method != control and control in methods:
            entry["paired"] = {key: paired_difference({s: r[key] for s, r in entry["runs"].items()},
                                                      {s: r[key] for s, r in methods[control]["runs"].items()})
                               for key in sweep.spec.paired}
    return {"name": sweep.name, "recipe": sweep.recipe, "profile": sweep.profile, "data": description,
            "hardware": sorted(hardware), "control": control, "level": LEVEL,
            "bootstrap_resamples": BOOTSTRAP_RESAMPLES, "methods": methods}


def _cell(stats: dict[str, Any], fmt: str) -> str:
    if stats["mean"] is None:
        return "n/a"
    std = "n/a" if stats["std"] is None else format(stats["std"], fmt)
    return f"{format(stats['mean'], fmt)} ± {std}"


def markdown_table(results: dict[str, Any]) -> str:
    """A Markdown table of mean ± std over seeds, one row per method."""
    recipe = RECIPES[results.get("recipe", "cifar")]
    headers = ["method", "seeds", *(header for header, _ in recipe.metrics.values())]
    lines = [f"Sweep `{results['name']}`, profile `{results['profile']}`, data: {results['data']}, "
             f"trained on: {', '.join(results['hardware'])}. Mean ± sample std over seeds; {recipe.caption}", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for method, entry in results["methods"].items():
        cells = [f"`{method}`", str(len(entry["seeds"]))]
        cells += [_cell(entry[key], fmt) for key, (_, fmt) in recipe.metrics.items()]
        lines.append("| " + " | ".join(cells) + " |")
    subgroups = sorted({group for entry in results["methods"].values() for group in entry["subgroup_accuracy"]},
                       key=int)
    if subgroups:
        lines += ["", f"{recipe.subgroup_caption}, mean ± sample std over seeds:", "",
                  "| method | " + " | ".join(f"subgroup {group}" for group in subgroups) + " |",
                  "|" + "---|" * (len(subgroups) + 1)]
        for method, entry in results["methods"].items():
            cells = [_cell(entry["subgroup_accuracy"].get(group, {"mean": None}), ".1f") for group in subgroups]
            lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    lines += interval_tables(results)
    return "\n".join(lines) + "\n"


def _interval(stats: dict[str, Any], fmt: str) -> str:
    if stats["mean"] is None:
        return "n/a"
    if stats["low"] is None:
        return format(stats["mean"], fmt)
    return f"{format(stats['mean'], fmt)} [{format(stats['low'], fmt)}, {format(stats['high'], fmt)}]"


def interval_tables(results: dict[str, Any]) -> list[str]:
    """Markdown lines: the 95% intervals of the recipe's paired metrics, the paired differences from
    the control and (where the recipe bootstraps) test-set noise beside seed noise; empty when no
    method has two seeds."""
    if not any(len(entry["seeds"]) > 1 for entry in results["methods"].values()):
        return []
    recipe = RECIPES[results.get("recipe", "cifar")]
    level, control = f"{100 * results['level']:.0f}%", results["control"]
    headers = [recipe.metrics[key][0] for key in recipe.paired]
    lines = ["", f"Mean and {level} confidence interval over seeds (Student t, n - 1 degrees of freedom):", "",
             "| method | seeds | " + " | ".join(headers) + " |", "|" + "---|" * (len(headers) + 2)]
    for method, entry in results["methods"].items():
        cells = [_interval(entry[key], recipe.metrics[key][1]) for key in recipe.paired]
        lines.append(f"| `{method}` | {len(entry['seeds'])} | " + " | ".join(cells) + " |")
    lines += ["", f"Paired difference from `{control}` (method minus `{control}`, seed by seed: same seed = same "
                  f"initial weights and data order), mean and {level} interval over the seeds both have; **bold** "
                  f"where the interval excludes 0, everything else is no difference shown:", "",
              "| method | seeds paired | " + " | ".join(f"Δ {header}" for header in headers) + " |",
              "|" + "---|" * (len(headers) + 2)]
    for method, entry in results["methods"].items():
        if "paired" not in entry:
            continue
        cells = []
        for key in recipe.paired:
            text = _interval(entry["paired"][key], "+.2f")
            cells.append(f"**{text}**" if entry["paired"][key]["excludes_zero"] else text)
        seeds = entry["paired"][recipe.paired[0]]["seeds"]
        lines.append(f"| `{method}` | {len(seeds)} | " + " | ".join(cells) + " |")
    noise = [key for key in recipe.paired if any(key in e["test_noise"] for e in results["methods"].values())]
    if noise:
        lines += ["", f"Test-set noise beside training noise: the std over {results['bootstrap_resamples']:,} "
                      "bootstrap resamples of one run's test predictions (drawn with replacement within every class "
                      "x subgroup cell), averaged over the method's runs, and the std over seeds (one fixed test "
                      "set, so training only). The intervals above are over seeds on this test set; the test-set "
                      "std says how far a method's number would move on another test set of the same size (less for a "
                      "difference between two methods, which are scored on the same images):", "",
                  "| method | " + " | ".join(f"{recipe.metrics[key][0]}: std over seeds | test-set std"
                                            for key in noise) + " |",
                  "|" + "---|" * (2 * len(noise) + 1)]
        for method, entry in results["methods"].items():
            cells = []
            for key in noise:
                seed_std, test_std = entry[key]["std"], entry["test_noise"].get(key)
                cells += ["n/a" if std is None else f"{std:.2f}" for std in (seed_std, test_std)]
            lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    return lines


def paired_plot(results: dict[str, Any], path: Path) -> None:
    """PNG: one panel per paired metric, each method's paired difference from the control with its
    interval and a line at 0."""
    recipe = RECIPES[results.get("recipe", "cifar")]
    compared = [(method, entry["paired"]) for method, entry in results["methods"].items() if "paired" in entry]
    figure = Figure(figsize=(3.2 * len(recipe.paired), 0.5 * len(compared) + 1.6))
    for axes, key in zip(figure.subplots(1, len(recipe.paired), sharey=True, squeeze=False)[0], recipe.paired):
        for row, (method, paired) in enumerate(compared):
            stats = paired[key]
            if stats["mean"] is None:
                continue
            error = None if stats["low"] is None else [[stats["mean"] - stats["low"]], [stats["high"] - stats["mean"]]]
            axes.errorbar(stats["mean"], row, xerr=error, fmt="o", capsize=3,
                          color="tab:red" if stats["excludes_zero"] else "tab:blue")
        axes.axvline(0.0, color="black", linewidth=0.8)
        axes.set_yticks(range(len(compared)), [method for method, _ in compared], fontsize=8)
        axes.set_title(f"Δ {recipe.metrics[key][0]}", fontsize=9)
        axes.grid(alpha=0.3)
    axes.invert_yaxis()  # shared: the first method on top, as in the tables
    figure.suptitle(f"{results['name']}: paired difference from {results['control']} by seed, "
                    f"{100 * results['level']:.0f}% intervals (red: excludes 0); {results['data']}", fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


def headline_plot(results: dict[str, Any], path: Path) -> None:
    """PNG: the recipe's two headline metrics (cifar: clean accuracy against MacroStd), one point per
    method with std error bars."""
    x_key, y_key = RECIPES[results.get("recipe", "cifar")].axes
    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    for method, entry in results["methods"].items():
        x, y = entry[x_key], entry[y_key]
        if x["mean"] is None or y["mean"] is None:
            continue
        axes.errorbar(x["mean"], y["mean"], xerr=x["std"] or 0, yerr=y["std"] or 0, fmt="o", capsize=3)
        axes.annotate(method, (x["mean"], y["mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axes.set_xlabel(LABELS[x_key])
    axes.set_ylabel(LABELS[y_key])
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
    headline_plot(results, base.with_suffix(".png"))
    written = ".md and .png"
    if any("paired" in entry for entry in results["methods"].values()):
        paired_plot(results, base.with_name(f"{base.name}_paired.png"))
        written = f".md, .png and {base.name}_paired.png"
    print(f"wrote {base}.json, {written} ({len(results['methods'])} method(s))")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(__file__).with_name("sweep_cpu.json"))
    parser.add_argument("--aggregate-only", action="store_true", help="do not train; aggregate published runs")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained side by side (default 1)")
    parser.add_argument("--threads", type=int, help="CPU threads per run (default: torch's choice)")
    parser.add_argument("train_args", nargs="*",
                        help="after --: further arguments of the sweep's recipe for every run")
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
