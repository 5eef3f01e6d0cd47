"""recipes/train_cifar.py on tiny synthetic CIFAR-10 in the official formats: smoke run, resume, DDP.

The data root holds a 64-image training split and a 40-image test split (``.npz`` offline form),
the real CIFAR10-B annotation (from ../shared/data; subgroups follow from the labels) and a
synthetic CIFAR-10-C folder with all 19 corruptions.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from conftest import load_recipe
from flowaug.data import ALL_CORRUPTIONS, make_cifar_c
from flowaug.models import build_classifier, load_classifier

TINY = ["--profile", "smoke", "--batch-size", "32", "--epochs", "2"]


@pytest.fixture(scope="module")
def recipe() -> ModuleType:
    return load_recipe("train_cifar")


@pytest.fixture
def data_root(synthetic, shared_file) -> Path:
    """Synthetic CIFAR-10 (npz form), the real CIFAR10-B annotation and a CIFAR-10-C folder."""
    train, test = synthetic.arrays(64, 10), synthetic.arrays(40, 10)
    synthetic.write_npz("data/cifar10/cifar10_jpeg_q75.npz", {"train": train, "test": test})
    (synthetic.root / "data" / "cifar10b").mkdir(parents=True)
    shutil.copy(shared_file("cifar10b/cifar10_bgd_cl2img_gp_fine.npy"), synthetic.root / "data" / "cifar10b")
    synthetic.write_cifar_c("data/CIFAR-10-C", ALL_CORRUPTIONS, test[1])
    return synthetic.root / "data"


def run(recipe: ModuleType, data_root: Path, out: Path, *extra: str) -> int:
    return recipe.main([*TINY, "--data-root", str(data_root), "--out", str(out), *extra])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_classifier(path).state_dict()


def test_smoke_run_writes_the_run_folder(recipe, data_root, tiny_flow_path, tmp_path):
    out = tmp_path / "run"
    assert run(recipe, data_root, out, "--aug", "colorjitter,standard,flowaug", "--flow", str(tiny_flow_path),
               "--c-limit", "10") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["aug"] == ["flowaug", "standard", "colorjitter"] and config["train_images"] == 64
    assert config["flow"] == str(tiny_flow_path)
    assert config["data"] == "CIFAR-10 (JPEG-q75 proxy)" and config["world_size"] == 1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    report = json.loads((out / "report.json").read_text())
    # no CIFAR-10.1 files in the root: the default suites leave it out
    assert list(report["suites"]) == ["clean", "cifar10b", "cifar10c"]
    assert report["suites"]["clean"]["num_images"] == 40
    assert report["suites"]["cifar10c"]["summary"]["benchmark"]["complete"]
    assert report["suites"]["cifar10c"]["num_images_per_block"] == 10
    timing = report["timing"]
    assert all(timing[k] > 0 for k in ("data_seconds", "augment_seconds", "model_seconds", "eval_seconds"))
    assert timing["train_seconds"] == pytest.approx(sum(r["seconds"] for r in records))
    assert timing["data_seconds"] + timing["augment_seconds"] + timing["model_seconds"] <= timing["train_seconds"]
    assert load_classifier(out / "model.pt").meta["aug"] == ["flowaug", "standard", "colorjitter"]
    assert report["hardware"]["device"].startswith("CPU") and report["hardware"]["torch"] == torch.__version__


def test_flowaug_alone_runs_with_the_shipped_flow_by_default(recipe, data_root, tmp_path):
    """`python recipes/train_cifar.py --aug flowaug` (the README's main job) uses pretrained/cifar10.pt."""
    out = tmp_path / "run"
    assert run(recipe, data_root, out, "--aug", "flowaug", "--eval-suites", "clean") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["aug"] == ["flowaug"] and config["flow"] == "cifar10"
    assert json.loads((out / "report.json").read_text())["timing"]["augment_seconds"] > 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for record in records:  # FlowAug's counters per epoch: p = 0.5 of 64 images, the guard on
        assert 10 <= record["flowaug_augmented_count"] + record["flowaug_rejected_count"] <= 54
        assert record["flowaug_fallback_count"] == 0
    totals = json.loads((out / "report.json").read_text())["flowaug_counts"]
    assert totals["flowaug_augmented_count"] == sum(r["flowaug_augmented_count"] for r in records)


def test_flowaug_cache_matches_encoding_every_batch(recipe, data_root, tiny_flow_path, tmp_path):
    """With the latent cache FlowAug finds each batch's latents by content: the same training up to float
    rounding (which two epochs amplify, so the losses are compared, not the weights)."""
    common = ["--aug", "flowaug,standard", "--flow", str(tiny_flow_path), "--eval-suites", "clean"]
    assert run(recipe, data_root, tmp_path / "plain", *common) == 0
    assert run(recipe, data_root, tmp_path / "cached", *common, "--flowaug-cache") == 0
    assert json.loads((tmp_path / "cached" / "config.json").read_text())["flowaug_cache"] is True
    losses = {run_name: [json.loads(line)["loss"] for line in (tmp_path / run_name / "metrics.jsonl").read_text().splitlines()]
              for run_name in ("plain", "cached")}
    assert losses["plain"][0] == pytest.approx(losses["cached"][0], abs=1e-5)
    assert losses["plain"] == pytest.approx(losses["cached"], abs=5e-3)


def test_resume_continues_exactly(recipe, data_root, tmp_path):
    suites = ["--eval-suites", "clean", "--aug", "standard,randaugment"]
    assert run(recipe, data_root, tmp_path / "straight", *suites) == 0
    assert run(recipe, data_root, tmp_path / "split", *suites, "--stop-after", "1") == 0
    assert not (tmp_path / "split" / "model.pt").exists()
    assert len((tmp_path / "split" / "metrics.jsonl").read_text().splitlines()) == 1
    assert run(recipe, data_root, tmp_path / "split", *suites) == 0
    straight, split = weights(tmp_path / "straight" / "model.pt"), weights(tmp_path / "split" / "model.pt")
    assert all(torch.equal(straight[k], split[k]) for k in straight)
    losses = [[json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
              for name in ("straight", "split")]
    assert losses[0] == losses[1]


@pytest.mark.parametrize("aug", ["standard,mixup", "cutmix"])
def test_soft_label_augmentations_train_with_amp_and_channels_last(recipe, data_root, tmp_path, aug):
    out = tmp_path / "run"
    assert run(recipe, data_root, out, "--aug", aug, "--amp", "--channels-last", "--eval-suites", "clean") == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) and 0 <= r["train_accuracy"] <= 100 for r in records)
    assert json.loads((out / "config.json").read_text())["amp"] is True


def test_the_same_command_continues_and_other_settings_are_refused(recipe, data_root, tmp_path, capsys):
    base = ["--aug", "none", "--eval-suites", "clean", "--stop-after", "1"]
    assert run(recipe, data_root, tmp_path / "run", *base) == 0
    assert run(recipe, data_root, tmp_path / "run", *base, "--lr", "0.01") == 2
    assert "lr: checkpoint 0.2 vs now 0.01" in capsys.readouterr().err
    assert run(recipe, data_root, tmp_path / "run", "--aug", "none", "--eval-suites", "clean") == 0
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2, "continued from epoch 1"
    assert run(recipe, data_root, tmp_path / "run", "--aug", "none", "--eval-suites", "clean") == 0
    assert "is finished" in capsys.readouterr().out


@pytest.fixture
def data_root_without_c(data_root, shared_file) -> Path:
    """The synthetic data root without its CIFAR-10-C folder, with the frost textures make-cifar-c needs."""
    shutil.rmtree(data_root / "CIFAR-10-C")
    shutil.copytree(shared_file("cifar_c_frost/frost1.png").parent, data_root / "cifar_c_frost")
    return data_root


def test_missing_cifar_c_is_generated_once_into_the_shared_cache(recipe, data_root_without_c, tmp_path,
                                                                  monkeypatch, private_cache):
    monkeypatch.chdir(tmp_path)
    assert run(recipe, data_root_without_c, tmp_path / "run", "--aug", "none", "--c-limit", "8") == 0
    generated = [path.parent for path in (private_cache / "cifar-c").glob("cifar10-first8-seed0-*/labels.npy")]
    assert len(generated) == 1 and (generated[0] / "frost.npy").is_file()
    assert [p.name for p in tmp_path.iterdir() if p != data_root_without_c] == ["run"], "nothing outside --out"
    assert not list((tmp_path / "run").glob("**/*.npy")), "the run folder holds no CIFAR-C copy"
    corrupted = json.loads((tmp_path / "run" / "report.json").read_text())["suites"]["cifar10c"]
    assert corrupted["num_images_per_block"] == 8 and corrupted["summary"]["benchmark"]["complete"]

    made = (generated[0] / "frost.npy").stat().st_mtime_ns
    assert run(recipe, data_root_without_c, tmp_path / "run2", "--aug", "none", "--c-limit", "8") == 0
    assert (generated[0] / "frost.npy").stat().st_mtime_ns == made, "a second run reuses the copy"
    assert json.loads((tmp_path / "run2" / "report.json").read_text())["suites"]["cifar10c"] == corrupted
    other = recipe.shared_cifar_c_dir("cifar10", data_root_without_c, 6)
    assert other.name.startswith("cifar10-first6-seed0-") and other.name[-12:] != generated[0].name[-12:], \
        "other images, another folder"


def test_no_make_c_leaves_cifar_c_out(recipe, data_root_without_c, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(recipe, data_root_without_c, tmp_path / "run", "--aug", "none", "--no-make-c") == 0
    assert list(json.loads((tmp_path / "run" / "report.json").read_text())["suites"]) == ["clean", "cifar10b"]
    assert not (tmp_path / "runs").exists()
    assert run(recipe, data_root_without_c, tmp_path / "run2", "--aug", "none", "--no-make-c",
               "--eval-suites", "clean", "cifar10c") == 2
    assert "has no labels.npy" in capsys.readouterr().err
    assert not (tmp_path / "run2" / "train_state.pt").exists(), "the error comes before any training"


@pytest.mark.parametrize("argv, message", [
    (["--model", "vgg"], "invalid choice: 'vgg'"),
    (["--aug", "standard,nope"], "unknown augmentation"),
    (["--aug", "standard", "--flowaug-cache"], "--flowaug-cache needs flowaug in --aug"),
])
def test_bad_arguments_give_one_line_errors(recipe, data_root, tmp_path, capsys, argv, message):
    try:
        code = run(recipe, data_root, tmp_path / "run", *argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_wrn28_10_has_the_paper_size():
    # WRN-28-10 for CIFAR-10 (Zagoruyko & Komodakis 2016): 36.5M parameters, 36,479,194 exactly
    assert sum(p.numel() for p in build_classifier("wrn28_10", 10).parameters()) == 36_479_194


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, data_root: str, out: str) -> None:
    """One torchrun-like gloo process running the recipe."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    code = load_recipe("train_cifar").main([*TINY, "--data-root", data_root, "--out", out, "--aug", "standard",
                               "--eval-suites", "clean", "--device", "cpu"])
    if code != 0:
        sys.exit(code)


def test_ddp_with_two_gloo_processes(data_root, tmp_path):
    out = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(_free_port(), str(data_root), str(out)), nprocs=2, join=True)
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)
    assert json.loads((out / "report.json").read_text())["suites"]["clean"]["num_images"] == 40


def test_runs_started_together_generate_cifar_c_once(recipe, tmp_path, monkeypatch):
    calls = []

    def fake_generate(dataset, data_root, folder, limit, seed, workers):
        calls.append(limit)
        time.sleep(0.3)  # long enough for the other caller to arrive while this one generates
        folder.mkdir(parents=True)
        np.save(folder / "labels.npy", np.zeros(5 * limit, dtype=np.uint8))

    monkeypatch.setattr(make_cifar_c, "generate_from_test_split", fake_generate)
    args = argparse.Namespace(dataset="cifar10", data_root=str(tmp_path), c_dir=tmp_path / "c", c_limit=8,
                              eval_limit=None, make_c=True)
    results = []
    threads = [threading.Thread(target=lambda: results.append(recipe.cifar_c_folder(args))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [8] and results == [tmp_path / "c", tmp_path / "c"]


def test_a_run_folder_in_use_is_refused(recipe, data_root, tmp_path, capsys):
    from flowaug.fileio import claim_run_folder

    with claim_run_folder(tmp_path / "run"):
        assert run(recipe, data_root, tmp_path / "run", "--aug", "none", "--eval-suites", "clean") == 2
    assert "in use by another flowaug process" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_the_expectation_comes_from_the_published_sweep_row(recipe, tmp_path):
    def row(clean: float, seeds: list[int]) -> dict:
        run = {"clean_accuracy": clean, "macro_std": 5.0, "worst_group_accuracy": 70.0, "cifar_c_accuracy": 60.0,
               "wall_minutes": 14.6}
        stats = {"mean": clean, "std": 0.25 if len(seeds) > 1 else None}
        return {"seeds": seeds, "runs": {str(s): run for s in seeds},
                **{key: stats for key in ("clean_accuracy", "macro_std", "worst_group_accuracy", "cifar_c_accuracy")}}
    published = tmp_path / "sweep.json"
    published.write_text(json.dumps({"hardware": ["toy CPU"], "methods": {
        "standard": row(80.0, [0]), "standard,flowaug": row(81.0, [0, 1, 2]),
        "standard,flowaug@cifar10-film": row(82.0, [1])}}))
    expect = lambda aug, flow="cifar10", profile="quick": recipe.published_expectation(  # noqa: E731
        profile, "cifar10", aug, flow, published)
    note = expect("flowaug,standard")
    assert note.startswith("published for these settings (sweep, toy CPU, one thread beside one other run): seed 0 "
                           "printed clean 81.00%, MacroStd 5.00, worst group 70.00%, CIFAR-10-C 60.00% in 15 min; "
                           "over seeds 0, 1, 2: clean 81.00 ± 0.25%")
    assert expect("standard", flow="anything").startswith("published") and "over seeds" not in expect("standard")
    assert expect("standard,flowaug", flow="cifar10-film") == "", "the film row has no seed 0"
    assert expect("standard,flowaug", flow="cifar10-v2") == expect("standard,colorjitter") == ""
    assert expect("standard,flowaug", profile="cpu") == ""


def test_the_published_expectation_is_printed_only_for_the_profile_as_published(recipe):
    assert recipe.parse_args([]).expect == recipe.published_expectation("quick", "cifar10", "standard,flowaug",
                                                                        "cifar10")
    assert recipe.parse_args(["--epochs", "3"]).expect == ""
    assert recipe.parse_args(["--profile", "smoke"]).expect.startswith("the smoke profile checks the pipeline")
