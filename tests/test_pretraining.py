"""Flow pretraining: dataset specs, exact resume, non-finite skipping, outputs, CLI (tiny preset, synthetic data)."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowaug.augmentation import FlowAug
from flowaug.cli import main
from flowaug.errors import CheckpointError, DataFormatError, DatasetNotFoundError, FlowaugError
from flowaug.flow import DecoupledFlow, Latents, get_preset
from flowaug.data.specs import load_train_val
from flowaug.training import PretrainConfig, TrainingDivergedError, kl_weight_at, lr_at, pretrain
from flowaug.training.flow_init import warm_start


def write_npz(path: Path, n_train: int = 40, n_test: int | None = 8, size: int = 32, seed: int = 0) -> Path:
    """Smooth random images (a colour cast plus a blob) as x_train/x_test uint8 (N,size,size,3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size

    def images(n: int) -> np.ndarray:
        cast = rng.uniform(0.2, 0.8, (n, 1, 1, 3))
        centre = rng.uniform(0.3, 0.7, (n, 2, 1, 1))
        blob = np.exp(-((xx - centre[:, 0]) ** 2 + (yy - centre[:, 1]) ** 2) * 20)[..., None]
        return np.clip(255 * (cast * (1 - blob) + (1 - cast) * blob), 0, 255).astype(np.uint8)

    arrays = {"x_train": images(n_train)}
    if n_test:
        arrays["x_test"] = images(n_test)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    return write_npz(tmp_path / "data.npz")


def config(out: Path, dataset: str, **overrides) -> PretrainConfig:
    """A run of the tiny preset: 40 images, batch 8 -> 5 steps per epoch, 2 epochs."""
    settings = dict(dataset=dataset, out=str(out), preset="tiny", epochs=2, batch_size=8, warmup_steps=3,
                    log_every=2, checkpoint_every=0, val_images=8, sample_images=3, threads=1)
    return PretrainConfig(**{**settings, **overrides})


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_identical(a, b, where: str = "") -> None:
    """Recursive bit-for-bit equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def metric_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---- learning-rate schedule ------------------------------------------------------------

def test_lr_schedule_warms_up_linearly_then_follows_cosine_to_zero() -> None:
    cfg = PretrainConfig(dataset="cifar10", out="unused", lr=0.01, warmup_steps=10)
    assert lr_at(0, 110, cfg) == pytest.approx(0.001)
    assert lr_at(9, 110, cfg) == pytest.approx(0.01)
    assert lr_at(60, 110, cfg) == pytest.approx(0.005)
    assert lr_at(110, 110, cfg) == pytest.approx(0.0, abs=1e-12)
    assert all(lr_at(s, 110, cfg) >= lr_at(s + 1, 110, cfg) for s in range(9, 110))


@pytest.mark.parametrize("field,value", [("lr", 0.0), ("ema", 1.0), ("batch_size", 0), ("device", "tpu"),
                                         ("max_train_images", 0), ("max_train_images", -8), ("threads", -1)])
def test_config_rejects_bad_values(field: str, value) -> None:
    with pytest.raises(FlowaugError, match=field.replace("_", ".")):
        PretrainConfig(dataset="cifar10", out="unused", **{field: value})


# ---- dataset specs ----------------------------------------------------------------------

def write_png_folder(root: Path, n: int, size: tuple[int, int], nested: bool, seed: int = 0) -> Path:
    """n RGB PNGs (width, height = size); ImageFolder class sub-folders when ``nested``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class_{i % 2}" if nested else root
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:03d}.png")
    (root / "README.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("nested", [False, True])
def test_folder_spec_reads_resizes_and_holds_out_a_seeded_validation_split(tmp_path: Path, nested: bool) -> None:
    root = write_png_folder(tmp_path / "imgs", 20, (40, 24), nested)
    data = load_train_val(f"folder:{root}", image_size=16, val_fraction=0.2, seed=3)
    assert data.train.shape == (16, 16, 16, 3) and data.val.shape == (4, 16, 16, 3)
    assert data.train.dtype == np.uint8
    again = load_train_val(f"folder:{root}", image_size=16, val_fraction=0.2, seed=3)
    other = load_train_val(f"folder:{root}", image_size=16, val_fraction=0.2, seed=4)
    assert np.array_equal(again.val, data.val) and not np.array_equal(other.val, data.val)
    rows = {r.tobytes() for r in np.concatenate([data.train, data.val])}
    assert len(rows) == 20


def test_folder_spec_centre_crops_the_shorter_side(tmp_path: Path) -> None:
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :16] = (255, 0, 0)
    pixels[:, 48:] = (255, 0, 0)
    pixels[:, 16:48] = (0, 0, 255)
    for i in range(2):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    data = load_train_val(f"folder:{tmp_path}", image_size=16)
    image = np.concatenate([data.train, data.val])[0].astype(int)
    assert image.shape == (16, 16, 3)
    assert np.abs(image[:, 1:-1] - (0, 0, 255)).max() <= 2
    assert (image[..., 2] > 200).all() and (image[..., 0] < 40).all()


def test_folder_spec_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_train_val(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataFormatError, match="contains no images"):
        load_train_val(f"folder:{tmp_path / 'empty'}")
    root = write_png_folder(tmp_path / "imgs", 3, (32, 32), nested=False)
    (root / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataFormatError, match="broken.png"):
        load_train_val(f"folder:{root}")


def test_npz_spec_uses_x_test_or_holds_out(tmp_path: Path) -> None:
    with_test = load_train_val(f"npz:{write_npz(tmp_path / 'a.npz', 20, 6)}")
    assert with_test.train.shape == (20, 32, 32, 3) and with_test.val.shape == (6, 32, 32, 3)
    holdout = load_train_val(f"npz:{write_npz(tmp_path / 'b.npz', 20, None)}", val_fraction=0.25)
    assert holdout.train.shape == (15, 32, 32, 3) and holdout.val.shape == (5, 32, 32, 3)
    resized = load_train_val(f"npz:{write_npz(tmp_path / 'c.npz', 4, 2, size=16)}", image_size=32)
    assert resized.train.shape == (4, 32, 32, 3)


def test_npz_spec_rejects_bad_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "gray.npz", x_train=np.zeros((4, 32, 32), dtype=np.uint8))
    with pytest.raises(DataFormatError, match=r"expected uint8 \(N, H, W, 3\)"):
        load_train_val(f"npz:{tmp_path / 'gray.npz'}")
    np.savez(tmp_path / "nokey.npz", images=np.zeros((4, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(DataFormatError, match="x_train"):
        load_train_val(f"npz:{tmp_path / 'nokey.npz'}")


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_cifar_specs_train_on_train_and_validate_on_test(synthetic, dataset: str) -> None:
    splits = synthetic.write_pickles(dataset, n_train=4, n_test=5)
    data = load_train_val(dataset, data_root=synthetic.root)
    assert np.array_equal(data.train, splits["train"][0])
    assert np.array_equal(data.val, splits["test"][0])


@pytest.mark.parametrize("spec", ["imagenet", "folder", "npz:", "cifar10:x"])
def test_unknown_dataset_spec_lists_the_choices(spec: str) -> None:
    with pytest.raises(FlowaugError, match="folder:PATH"):
        load_train_val(spec)


# ---- training runs ----------------------------------------------------------------------

def test_folder_pretraining_at_64_gives_a_flow_that_swaps_nuisance(tmp_path: Path) -> None:
    root = write_png_folder(tmp_path / "imgs", 36, (72, 80), nested=True)
    out = tmp_path / "run"
    path = pretrain(config(out, f"folder:{root}", image_size=64, epochs=1, sample_images=2))
    assert path == out / "flow.pt"
    x = torch.from_numpy(load_train_val(f"folder:{root}", image_size=64).train[:4]).permute(0, 3, 1, 2) / 255
    for file in (path, out / "checkpoint.pt"):
        flow = DecoupledFlow.from_checkpoint(file)
        assert flow.config.image_size == 64 and flow.meta["preset"] == "tiny"
        with torch.no_grad():
            latents = flow.encode(x)
            assert (flow.decode(latents) - x).abs().max() < 1e-3
            swapped = flow.decode(Latents(latents.semantic, latents.nuisance.roll(1, 0)))
        assert swapped.shape == x.shape and torch.isfinite(swapped).all()
    aug = FlowAug(str(path), p=1.0, generator=0)  # the custom flow plugs into FlowAug like a shipped one
    augmented = aug(x)
    assert augmented.shape == x.shape and torch.isfinite(augmented).all()
    assert aug.augmented_count + aug.fallback_count + aug.rejected_count == len(x)
    sizes = {name: Image.open(out / "samples" / f"epoch_001_{name}.png").size for name in ("recon", "swap", "prior")}
    cell = 64 + 1
    assert sizes == {"recon": (2 * cell + 1, 2 * cell + 1), "swap": (3 * cell + 1, 3 * cell + 1),
                     "prior": (3 * cell + 1, 2 * cell + 1)}


def test_run_writes_config_metrics_and_grids(tmp_path: Path, npz: Path) -> None:
    out = tmp_path / "run"
    pretrain(config(out, f"npz:{npz}"))
    saved = json.loads((out / "config.json").read_text())
    assert saved["pretrain"]["preset"] == "tiny" and saved["steps_per_epoch"] == 5
    records = metric_records(out)
    epochs = [r for r in records if r["kind"] == "epoch"]
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["epoch"] for r in epochs] == [1, 2] and [r["step"] for r in epochs] == [5, 10]
    assert [r["step"] for r in steps] == [2, 4, 6, 8, 10]
    for record in records:
        assert {"step", "epoch", "train_bpd", "lr", "img_per_s", "skipped_steps", "wall_time_s"} <= record.keys()
        assert math.isfinite(record["train_bpd"]) and record["skipped_steps"] == 0
    assert all(math.isfinite(r["val_bpd"]) and 0 < r["val_bpd"] < 16 for r in epochs)
    assert epochs[1]["val_bpd"] < epochs[0]["val_bpd"]
    grids = sorted(p.name for p in (out / "samples").iterdir())
    assert grids == [f"epoch_{e:03d}_{k}.png" for e in (1, 2) for k in ("prior", "recon", "swap")]
    ckpt = load_ckpt(out / "checkpoint.pt")
    assert ckpt["train_state"]["finished"] and ckpt["meta"]["weights"] == "ema"
    assert_identical(ckpt["state_dict"], load_ckpt(out / "flow.pt")["state_dict"])


@pytest.mark.parametrize("interrupt", [{"stop_after_steps": 3}, {"stop_after_steps": 5}, {"time_limit": 0.0},
                                       {"stop_after_steps": 7, "checkpoint_every": 2}])
def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path: Path, npz: Path, interrupt: dict) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    pretrain(config(straight, f"npz:{npz}"))
    pretrain(config(split, f"npz:{npz}", **interrupt))
    stopped = load_ckpt(split / "checkpoint.pt")["train_state"]
    assert not stopped["finished"] and 0 < stopped["global_step"] < 10
    pretrain(config(split, f"npz:{npz}", resume=True))
    a, b = load_ckpt(straight / "checkpoint.pt"), load_ckpt(split / "checkpoint.pt")
    for key in ("model", "optimizer", "counters", "epoch", "step_in_epoch", "global_step"):
        if key == "counters":
            a["train_state"][key].pop("wall_time_s"), b["train_state"][key].pop("wall_time_s")
        assert_identical(a["train_state"][key], b["train_state"][key], key)
    assert_identical(a["state_dict"], b["state_dict"])
    assert_identical(load_ckpt(straight / "flow.pt")["state_dict"], load_ckpt(split / "flow.pt")["state_dict"])
    untimed = [[{k: v for k, v in r.items() if k not in ("img_per_s", "wall_time_s")} for r in records
                if r["kind"] != "resume"] for records in (metric_records(straight), metric_records(split))]
    assert untimed[0] == untimed[1]
    assert all(r["changed"] == {} for r in metric_records(split) if r["kind"] == "resume")


@pytest.mark.parametrize("change", [{"batch_size": 4}, {"seed": 1}, {"image_size": 64}, {"ema": 0.0},
                                    {"dataset": "other"}])
def test_resume_with_different_settings_is_refused(tmp_path: Path, npz: Path, change: dict) -> None:
    out = tmp_path / "run"
    pretrain(config(out, f"npz:{npz}", stop_after_steps=2))
    changed = dict(change)
    field = next(iter(changed))
    if field == "dataset":
        changed["dataset"] = f"npz:{write_npz(tmp_path / 'other.npz')}"
    dataset = changed.pop("dataset", f"npz:{npz}")
    with pytest.raises(CheckpointError, match=f"{field}: checkpoint"):
        pretrain(config(out, dataset, resume=True, **changed))


def test_existing_run_is_never_overwritten_and_resume_needs_a_checkpoint(tmp_path: Path, npz: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(CheckpointError, match="drop --resume"):
        pretrain(config(out, f"npz:{npz}", resume=True))
    pretrain(config(out, f"npz:{npz}", epochs=1))
    before = (out / "flow.pt").read_bytes()
    with pytest.raises(FlowaugError, match="--resume"):
        pretrain(config(out, f"npz:{npz}", epochs=1))
    assert (out / "flow.pt").read_bytes() == before


class _NanGradient(torch.autograd.Function):
    """Identity forward, NaN gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


def poison_losses(monkeypatch: pytest.MonkeyPatch, bad_calls, kind: str) -> None:
    """Make ``DecoupledFlow.loss`` return NaN (kind "loss") or give NaN gradients (kind "grad") on bad calls."""
    calls, original = itertools.count(), DecoupledFlow.loss

    def loss(self, x, *args):
        value = original(self, x, *args)
        if next(calls) in bad_calls:
            return value * float("nan") if kind == "loss" else _NanGradient.apply(value)
        return value

    monkeypatch.setattr(DecoupledFlow, "loss", loss)


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_non_finite_steps_are_skipped_without_an_update(tmp_path: Path, npz: Path, monkeypatch, kind: str) -> None:
    poison_losses(monkeypatch, {0, 1}, kind)
    out = tmp_path / "run"
    pretrain(config(out, f"npz:{npz}", stop_after_steps=2))
    state = load_ckpt(out / "checkpoint.pt")["train_state"]
    assert state["counters"]["skipped_steps"] == 2 and state["counters"]["updates"] == 0
    assert state["optimizer"]["state"] == {}
    pretrain(config(out, f"npz:{npz}", resume=True))
    final = load_ckpt(out / "checkpoint.pt")
    assert final["train_state"]["counters"]["skipped_steps"] == 2
    assert final["train_state"]["counters"]["updates"] == 8
    assert all(torch.isfinite(t).all() for t in final["state_dict"].values() if t.is_floating_point())
    assert metric_records(out)[-1]["skipped_steps"] == 2


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_consecutive_non_finite_steps_stop_the_run(tmp_path: Path, npz: Path, monkeypatch, kind: str) -> None:
    poison_losses(monkeypatch, range(1, 100), kind)
    with pytest.raises(TrainingDivergedError, match=r"3 consecutive steps.*--lr"):
        pretrain(config(tmp_path / "run", f"npz:{npz}", max_consecutive_nonfinite=3))


def test_amp_run_completes_with_finite_bits_per_dim(tmp_path: Path, npz: Path) -> None:
    out = tmp_path / "run"
    pretrain(config(out, f"npz:{npz}", epochs=1, amp=True))
    assert math.isfinite(metric_records(out)[-1]["val_bpd"])


def test_cli_trains_refuses_to_overwrite_and_resumes(tmp_path: Path, npz: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["pretrain", "--dataset", f"npz:{npz}", "--preset", "tiny", "--out", str(out), "--epochs", "1",
            "--batch-size", "8", "--val-images", "4", "--threads", "1", "--ema", "0.9"]
    assert main(args + ["--stop-after-steps", "2"]) == 0
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert f"flow weights: {out / 'flow.pt'}" in capsys.readouterr().out
    ckpt = load_ckpt(out / "checkpoint.pt")
    assert ckpt["train_state"]["finished"] and ckpt["train_state"]["pretrain_config"]["ema"] == 0.9
    assert main(args[:-2] + ["--ema", "0.5", "--resume"]) == 2
    assert "ema: checkpoint 0.9" in capsys.readouterr().err


@pytest.mark.parametrize("warmup, beta, expected", [(0, 1.0, [1.0, 1.0, 1.0]), (4, 1.0, [0.0, 0.5, 1.0]),
                                                    (4, 4.0, [0.0, 2.0, 4.0])])
def test_kl_weight_ramps_linearly_over_warmup_to_beta(warmup, beta, expected):
    cfg = PretrainConfig(dataset="cifar10", out="unused", kl_warmup_steps=warmup, kl_weight=beta)
    assert [kl_weight_at(step, cfg) for step in (0, 2, 10)] == expected


@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan")])
def test_a_kl_weight_that_is_not_positive_is_refused(beta):
    with pytest.raises(FlowaugError, match="kl_weight must be > 0"):
        PretrainConfig(dataset="cifar10", out="unused", kl_weight=beta)


@pytest.mark.parametrize("anchor", [-1.0, float("nan")])
def test_a_negative_colour_anchor_is_refused(anchor):
    with pytest.raises(FlowaugError, match="colour_anchor must be >= 0"):
        PretrainConfig(dataset="cifar10", out="unused", colour_anchor=anchor)


def test_a_colour_anchor_without_colour_conditioning_is_refused(tmp_path: Path, npz: Path) -> None:
    with pytest.raises(FlowaugError, match="--colour-anchor needs a preset with colour conditioning"):
        pretrain(config(tmp_path / "run", f"npz:{npz}", colour_anchor=1.0))


@pytest.fixture(scope="module")
def spurious_file(tmp_path_factory) -> Path:
    from flowaug.data.spurious import write_npz as write_spurious

    return write_spurious(tmp_path_factory.mktemp("spurious") / "s.npz", cue="texture",
                          sizes={"train": 40, "val": 8, "test": 8, "test_shift": 8})


def test_the_pattern_anchor_trains_on_masked_data_and_resumes_exactly(tmp_path: Path, spurious_file: Path) -> None:
    settings = dict(preset="tiny-texture", pattern_anchor=100.0, colour_anchor=1.0, hflip=True)
    whole = pretrain(config(tmp_path / "whole", f"spurious:{spurious_file}", **settings))
    pretrain(config(tmp_path / "part", f"spurious:{spurious_file}", stop_after_steps=3, **settings))
    part = pretrain(config(tmp_path / "part", f"spurious:{spurious_file}", resume=True, **settings))
    first, second = (torch.load(path, weights_only=True)["state_dict"] for path in (whole, part))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(k.startswith("pattern.") and v.abs().sum() > 0 for k, v in first.items() if "body.9" in k)


@pytest.mark.parametrize("preset, dataset, message", [
    ("tiny", "spurious", "--pattern-anchor needs a preset with texture conditioning"),
    ("tiny-texture", "npz", "--pattern-anchor needs foreground masks"),
])
def test_a_pattern_anchor_the_preset_or_data_cannot_serve_is_refused(tmp_path, npz, spurious_file, preset, dataset,
                                                                      message):
    spec = f"spurious:{spurious_file}" if dataset == "spurious" else f"npz:{npz}"
    with pytest.raises(FlowaugError, match=message):
        pretrain(config(tmp_path / "run", spec, preset=preset, pattern_anchor=1.0))


def test_resume_with_a_changed_schedule_is_recorded(tmp_path: Path, npz: Path) -> None:
    out = tmp_path / "run"
    pretrain(config(out, f"npz:{npz}", stop_after_steps=2))
    original = json.loads((out / "config.json").read_text())
    pretrain(config(out, f"npz:{npz}", resume=True, lr=original["pretrain"]["lr"] / 2, stop_after_steps=3))
    assert json.loads((out / "config.json").read_text()) == original
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    resumes = [r for r in records if r["kind"] == "resume"]
    assert resumes == [{"kind": "resume", "step": 2, "changed": {"lr": [original["pretrain"]["lr"],
                                                                         original["pretrain"]["lr"] / 2]}}]


def test_export_carries_a_calibrated_guard_threshold(tmp_path: Path, npz: Path) -> None:
    out = tmp_path / "run"
    pretrain(config(out, f"npz:{npz}"))
    flow = DecoupledFlow.from_checkpoint(out / "flow.pt")
    assert math.isfinite(flow.meta["guard_bits"]) and "quantile" in flow.meta["guard_calibration"]
    assert FlowAug(flow).guard == flow.meta["guard_bits"]


def test_warm_start_copies_matching_tensors_and_keeps_the_new_conditioning_at_zero(tmp_path: Path, npz: Path) -> None:
    film = tmp_path / "film"
    pretrain(config(film, f"npz:{npz}"))
    source = DecoupledFlow.from_checkpoint(film / "flow.pt").state_dict()
    flow = DecoupledFlow(get_preset("tiny", conditioning="shift"))
    report = warm_start(flow, str(film / "flow.pt"))
    state = flow.state_dict()
    assert report["kept"] and all(".coupling.net.shift." in name for name in report["kept"])
    assert all(torch.equal(state[name], source[name]) for name in report["copied"])
    assert all((state[name] == 0).all() for name in report["kept"])
    warm = tmp_path / "warm"
    pretrain(config(warm, f"npz:{npz}", init_from=str(film / "flow.pt"), epochs=1))
    first_epoch = [r["val_bpd"] for r in metric_records(warm) if r["kind"] == "epoch"][0]
    assert first_epoch < [r["val_bpd"] for r in metric_records(film) if r["kind"] == "epoch"][0]
    with pytest.raises(CheckpointError, match="init_from"):
        pretrain(config(warm, f"npz:{npz}", resume=True, epochs=1))


def test_a_run_shorter_than_its_warmup_warns(tmp_path: Path, npz: Path) -> None:
    with pytest.warns(UserWarning, match="never reaches --lr"):
        pretrain(config(tmp_path / "run", f"npz:{npz}", epochs=1, warmup_steps=200))


def test_a_run_folder_is_held_by_one_process_and_released_when_it_dies(tmp_path: Path, npz: Path) -> None:
    import signal
    import subprocess
    import sys

    from flowaug.fileio import RunFolderBusyError, claim_run_folder

    out = tmp_path / "run"
    with claim_run_folder(out):
        with pytest.raises(RunFolderBusyError, match="in use by another flowaug process"):
            pretrain(config(out, f"npz:{npz}"))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom flowaug.fileio import claim_run_folder\n"
                               f"with claim_run_folder({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunFolderBusyError):
        pretrain(config(out, f"npz:{npz}"))
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    (out / ".checkpoint.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # what kill -9 mid-write leaves
    pretrain(config(out, f"npz:{npz}"))  # a killed holder leaves nothing stuck
    assert (out / "flow.pt").is_file() and not list(out.glob(".*.tmp"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(FlowaugError, match="is a file"):
        pretrain(config(tmp_path / "file", f"npz:{npz}"))


def test_sample_grids_and_guard_calibration_leave_a_raw_model_trainable(tmp_path: Path, npz: Path) -> None:
    out = tmp_path / "run"
    pretrain(config(out, f"npz:{npz}", ema=0.0))  # no EMA: the grids are drawn from the model in training
    epochs = [r for r in metric_records(out) if r["kind"] == "epoch"]
    assert epochs[1]["val_bpd"] < epochs[0]["val_bpd"], "the model kept training after the first epoch's grids"


def test_a_run_too_short_to_train_says_what_to_run_instead(tmp_path: Path, npz: Path) -> None:
    with pytest.warns(UserWarning, match="expect swaps that equal the originals") as caught:
        pretrain(config(tmp_path / "run", f"npz:{npz}", epochs=1))
    advice = next(str(w.message) for w in caught if "optimizer steps" in str(w.message))
    assert "--init-from cifar10-film --epochs" in advice and "samples/" in advice


def test_short_run_advice_scales_with_the_data_and_stays_quiet_for_long_runs() -> None:
    from flowaug.training.flow_advice import short_run_advice

    folder = short_run_advice(total_steps=20, steps_per_epoch=2, batch_size=64, image_size=64, warm_started=False)
    assert "this run has 20 optimizer steps (2 per epoch of batch 64)" in folder
    assert "--init-from cifar10-film --epochs 750 (about 53 min of one CPU thread at 64 x 64" in folder
    warm = short_run_advice(total_steps=1000, steps_per_epoch=100, batch_size=64, image_size=32, warm_started=True)
    assert "--init-from" not in warm and "--epochs 15 (about 13 min" in warm
    assert short_run_advice(5467, 781, 64, 32, warm_started=False) is None
    assert short_run_advice(1872, 312, 64, 32, warm_started=True) is None
