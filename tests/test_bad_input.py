"""A bad-input suite: user mistakes and faults across the API, the CLI, files and interrupted runs.

Every case names what a user did and what flowaug must do: raise a specific exception whose message
names the problem, or (CLI) exit with status 2 and one line on stderr, or (where the input is
legal) give the right answer. ``pytest tests/test_bad_input.py -v`` lists every case with its
outcome; CI runs them all.
"""
from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn

from flowaug import FlowAug, SpuriousBackgrounds, build_classifier, evaluate, fido, load_classifier, \
    load_pretrained, save_classifier
from flowaug.cli import main as cli_main
from flowaug.data import load_cifar
from flowaug.errors import CheckpointError, DataFormatError, DatasetNotFoundError, FlowaugError, \
    UnknownPretrainedError
from flowaug.fileio import atomic_write_text, claim_run_folder
from flowaug.masking import EarlyMasking, LateMasking, mask_background
from flowaug.metrics import macro_std
from flowaug.data.specs import load_train_val
from flowaug.training import train_classifier


@dataclass(frozen=True)
class Case:
    """``run(ctx)`` must raise ``error`` with a message matching ``message``."""

    name: str
    run: Callable[[Any], Any]
    error: type[BaseException] | tuple[type[BaseException], ...]
    message: str


class Context:
    """What the cases need: a tiny flow, a work folder, images."""

    def __init__(self, flow_path: Path, folder: Path) -> None:
        self.flow_path, self.folder = flow_path, folder
        self.x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        self.y = torch.tensor([0, 1, 0, 1])

    def aug(self, **options: Any) -> FlowAug:
        return FlowAug(self.flow_path, **options)

    def file(self, name: str, content: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(content)
        return path

    def npz(self, name: str, **arrays: np.ndarray) -> Path:
        path = self.folder / name
        np.savez(path, **arrays)
        return path

    def model_file(self) -> Path:
        path = self.folder / "model.pt"
        save_classifier(build_classifier("small", 10), path, "small", 10)
        return path


class Malicious:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def truncated_npz(ctx: Context) -> Path:
    path = ctx.npz("full.npz", x_train=np.zeros((8, 32, 32, 3), np.uint8))
    data = path.read_bytes()
    return ctx.file("truncated.npz", data[: len(data) // 2])


API = [
    # FlowAug construction
    Case("FlowAug p as a string", lambda c: c.aug(p="0.5"), ValueError, "p must be"),
    Case("FlowAug p above 1", lambda c: c.aug(p=1.5), ValueError, "p must be"),
    Case("FlowAug unknown mode", lambda c: c.aug(mode="swirl"), ValueError, "mode"),
    Case("FlowAug unknown donor policy", lambda c: c.aug(donor="nobody"), ValueError, "donor"),
    Case("FlowAug float generator", lambda c: c.aug(generator=1.5), (TypeError, ValueError), "generator"),
    Case("FlowAug negative temperature", lambda c: c.aug(temperature=-1.0), ValueError, "temperature"),
    Case("FlowAug reversed mix_range", lambda c: c.aug(mix_range=(0.9, 0.1)), ValueError, "low <= high"),
    Case("FlowAug guard as a word", lambda c: c.aug(guard="yes"), ValueError, "guard must be"),
    Case("FlowAug flow of the wrong type", lambda c: FlowAug(42), TypeError, "flow must be"),
    Case("FlowAug unknown registry name", lambda c: FlowAug("cifar11"), (UnknownPretrainedError, FlowaugError),
         "cifar11"),
    # FlowAug calls
    Case("FlowAug channels-last uint8 batch", lambda c: c.aug()((c.x * 255).byte().permute(0, 2, 3, 1)),
         ValueError, "permute"),
    Case("FlowAug floats in 0..255", lambda c: c.aug()(c.x * 255), ValueError, "255"),
    Case("FlowAug a PIL image", lambda c: c.aug()(__import__("PIL.Image").Image.new("RGB", (16, 16))),
         TypeError, "PIL"),
    Case("FlowAug NaN pixels", lambda c: c.aug()(c.x.masked_fill(c.x > 0.9, float("nan"))), ValueError, "NaN or Inf.*upstream"),
    Case("FlowAug one label too few", lambda c: c.aug()(c.x, c.y[:3]), ValueError, "labels"),
    Case("FlowAug group policy without groups", lambda c: c.aug(donor="other_group")(c.x, c.y), ValueError,
         "needs groups"),
    Case("FlowAug a 5-d tensor", lambda c: c.aug()(c.x[None]), ValueError, "shape"),
    Case("FlowAug one grey channel", lambda c: c.aug()(c.x[:, :1]), ValueError, "channel"),
    Case("FlowAug params of another batch size", lambda c: (lambda a: a(c.x, params=a.forward_parameters(c.x[:2])))(
        c.aug()), ValueError, "rows"),
    # data
    Case("SpuriousBackgrounds unknown split", lambda c: SpuriousBackgrounds("dev"), ValueError, "unknown split"),
    Case("SpuriousBackgrounds correlation 1.5", lambda c: SpuriousBackgrounds(correlation=1.5), ValueError,
         "correlation"),
    Case("SpuriousBackgrounds zero images", lambda c: SpuriousBackgrounds(num_images=0), ValueError, "num_images"),
    Case("SpuriousBackgrounds 4-pixel images", lambda c: SpuriousBackgrounds(size=4), ValueError, "size"),
    Case("SpuriousBackgrounds missing file", lambda c: SpuriousBackgrounds.from_npz(c.folder / "none.npz"),
         DatasetNotFoundError, "make-spurious"),
    Case("SpuriousBackgrounds file of another kind", lambda c: SpuriousBackgrounds.from_npz(
        c.npz("other.npz", settings=np.array("{}"))), DataFormatError, "not a SpuriousBackgrounds file"),
    Case("load_cifar unknown dataset", lambda c: load_cifar("cifar11", "train", c.folder), ValueError, "cifar11"),
    Case("load_cifar unknown split", lambda c: load_cifar("cifar10", "dev", c.folder), ValueError, "split"),
    Case("load_cifar empty data root", lambda c: load_cifar("cifar10", "train", c.folder / "empty"),
         DatasetNotFoundError, "cifar"),
    Case("pretraining data unknown spec", lambda c: load_train_val("imagenet"), FlowaugError, "unknown dataset spec"),
    Case("pretraining data missing folder", lambda c: load_train_val(f"folder:{c.folder / 'nope'}"),
         DatasetNotFoundError, "does not exist"),
    Case("pretraining data truncated npz", lambda c: load_train_val(f"npz:{truncated_npz(c)}"), DataFormatError,
         "cannot read"),
    Case("pretraining data npz without x_train", lambda c: load_train_val(
        f"npz:{c.npz('no_train.npz', images=np.zeros((2, 32, 32, 3), np.uint8))}"), DataFormatError, "x_train"),
    Case("pretraining data empty folder", lambda c: load_train_val(f"folder:{c.folder}"), DataFormatError,
         "no images"),
    Case("pretraining data float arrays", lambda c: load_train_val(
        f"npz:{c.npz('floats.npz', x_train=np.zeros((4, 32, 32, 3)))}"), DataFormatError, "uint8"),
    # checkpoints and models
    Case("load_classifier missing file", lambda c: load_classifier(c.folder / "none.pt"), (CheckpointError,
         FileNotFoundError), "none.pt"),
    Case("load_classifier random bytes", lambda c: load_classifier(c.file("junk.pt", b"not a checkpoint")),
         CheckpointError, "junk.pt"),
    Case("load_classifier given a flow", lambda c: load_classifier(c.flow_path), CheckpointError, "flow"),
    Case("load_classifier malicious pickle", lambda c: load_classifier(c.file("evil.pt", pickle.dumps(Malicious()))),
         CheckpointError, "evil.pt"),
    Case("load_pretrained unknown name", lambda c: load_pretrained("nope"), UnknownPretrainedError, "nope"),
    Case("build_classifier unknown arch", lambda c: build_classifier("vgg", 10), ValueError, "vgg"),
    Case("build_classifier zero classes", lambda c: build_classifier("small", 0), ValueError, "num_classes"),
    # training, masking, metrics, evaluation, attribution
    Case("train_classifier zero epochs", lambda c: train_classifier(build_classifier("small", 2), c.x, c.y, epochs=0,
         batch_size=2, progress=False), ValueError, "epochs"),
    Case("train_classifier float labels", lambda c: train_classifier(build_classifier("small", 2), c.x, c.y.float(),
         epochs=1, batch_size=2, progress=False), ValueError, "labels must be integers"),
    Case("train_classifier masks of another size", lambda c: train_classifier(
        build_classifier("small", 2), c.x, c.y, epochs=1, batch_size=2, masks=torch.ones(4, 1, 8, 8),
        progress=False), ValueError, "masks must have shape"),
    Case("train_classifier images in 0..255", lambda c: train_classifier(build_classifier("small", 2), c.x * 255, c.y,
         epochs=1, batch_size=2, progress=False), ValueError, r"\[0, 1\]"),
    Case("train_classifier batch larger than the data", lambda c: train_classifier(
        build_classifier("small", 2), c.x, c.y, epochs=1, batch_size=64, progress=False), ValueError, "larger"),
    Case("mask_background mask of another shape", lambda c: mask_background(c.x, torch.ones(4, 3, 32, 32)),
         ValueError, "mask must have shape"),
    Case("EarlyMasking unknown fill", lambda c: EarlyMasking(nn.Identity(), fill="sky"), ValueError, "unknown fill"),
    Case("LateMasking around a plain layer", lambda c: LateMasking.from_classifier(nn.Linear(2, 2)), ValueError,
         "from_classifier expects"),
    Case("macro_std lengths differ", lambda c: macro_std([True, False], [0, 1, 1], [0, 0, 1]), ValueError, "length"),
    Case("evaluate unknown suite", lambda c: evaluate(build_classifier("small", 10), ["imagenet-c"], c.folder),
         ValueError, "imagenet-c"),
    Case("fido labels of another length", lambda c: fido(build_classifier("small", 2), c.x, c.y[:2], progress=False),
         ValueError, "one label per image"),
    Case("fido a model that returns a vector", lambda c: fido(nn.Flatten(0), c.x, c.y, progress=False), ValueError,
         "logits"),
]

# (name, argv, message on stderr): each must exit with status 2 and say what is wrong in one line.
CLI = [
    ("pretrain batch size 0", ["pretrain", "--dataset", "cifar10", "--out", "{folder}/p", "--batch-size", "0"],
     "must be >= 1"),
    ("pretrain negative image count", ["pretrain", "--dataset", "cifar10", "--out", "{folder}/p",
                                       "--max-train-images", "-8"], "must be >= 1"),
    ("pretrain unknown dataset", ["pretrain", "--dataset", "imagenet", "--out", "{folder}/p"], "unknown dataset spec"),
    ("pretrain --out is a file", ["pretrain", "--dataset", "spurious", "--out", "{folder}/afile"], "afile"),
    ("pretrain negative threads", ["pretrain", "--dataset", "cifar10", "--out", "{folder}/p", "--threads", "-1"],
     "must be >= 1"),
    ("evaluate negative batch size", ["evaluate", "--checkpoint", "cifar10-classifier", "--out", "{folder}/e",
                                      "--batch-size", "-1"], "must be >= 1"),
    ("evaluate missing checkpoint", ["evaluate", "--checkpoint", "{folder}/none.pt", "--out", "{folder}/e"], "none"),
    ("make-spurious correlation 2", ["make-spurious", "--out", "{folder}", "--correlation", "2"], "correlation"),
    ("grid a single image", ["grid", "--images", "1", "--data-root", "{shared}", "--out", "{folder}/g.png"],
     "images"),
    ("explain unknown image source", ["explain", "--checkpoint", "cifar10-classifier", "--images", "imagenet",
                                      "--out", "{folder}/x"], "unknown dataset spec"),
    ("explain zero images", ["explain", "--checkpoint", "cifar10-classifier", "--count", "0", "--out", "{folder}/x"],
     "must be >= 1"),
    ("make-cifar-c unknown corruption", ["make-cifar-c", "--out", "{folder}/c", "--corruptions", "rain"], "rain"),
    ("unknown subcommand", ["train"], "invalid choice"),
]


@pytest.fixture
def ctx(tiny_flow_path, tmp_path) -> Context:
    return Context(tiny_flow_path, tmp_path)


@pytest.mark.parametrize("case", API, ids=[case.name for case in API])
def test_api_mistake_raises_a_clear_error(case, ctx):
    with pytest.raises(case.error, match=re.compile(case.message, re.IGNORECASE)):
        case.run(ctx)


@pytest.mark.parametrize("name, argv, message", CLI, ids=[name for name, _, _ in CLI])
def test_cli_mistake_exits_2_with_one_clear_line(name, argv, message, tmp_path, capsys, shared_data):
    (tmp_path / "afile").write_text("")
    argv = [part.format(folder=tmp_path, shared=shared_data) for part in argv]
    try:
        status = cli_main(argv)
    except SystemExit as exit:   # argparse rejects its own arguments this way
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and re.search(message, err, re.IGNORECASE), err


# Files and interrupted runs
def test_a_second_process_cannot_claim_a_busy_run_folder(tmp_path):
    from flowaug.fileio import RunFolderBusyError

    with claim_run_folder(tmp_path / "run"):
        import subprocess
        import sys
        probe = ("from flowaug.fileio import claim_run_folder\n"
                 f"with claim_run_folder({str(tmp_path / 'run')!r}): pass\n")
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert result.returncode != 0 and RunFolderBusyError.__name__ in result.stderr


def test_a_finished_claim_leaves_no_lock_file_and_the_folder_can_be_claimed_again(tmp_path):
    run = tmp_path / "run"
    with claim_run_folder(run):
        assert (run / ".flowaug.lock").is_file()
    assert not (run / ".flowaug.lock").exists()
    with claim_run_folder(run):
        pass
    assert list(run.iterdir()) == []


def test_claiming_a_folder_removes_temporary_files_a_killed_writer_left(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".checkpoint.pt.1234.tmp").write_bytes(b"half a checkpoint")
    with claim_run_folder(run):
        assert not list(run.glob(".*.tmp"))


def test_a_write_that_fails_halfway_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text("new", target)
    assert target.read_text() == "old" and not list(tmp_path.glob(".*.tmp"))


def test_the_latent_cache_never_serves_other_images(ctx):
    """A cache built from some images, then a batch of others: the output is that batch's own augmentation."""
    aug = ctx.aug(p=1.0, mode="prior", generator=0)
    others = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    aug.cache_latents(ctx.x)
    cached = aug(others)
    plain = ctx.aug(p=1.0, mode="prior", generator=0)(others)
    torch.testing.assert_close(cached, plain, atol=1e-4, rtol=0)
    assert aug.cache_misses == 4


def test_an_empty_batch_comes_back_unchanged(ctx):
    empty = torch.zeros(0, 3, 32, 32)
    assert ctx.aug()(empty).shape == (0, 3, 32, 32)


def test_a_full_disk_during_a_checkpoint_write_says_so_and_keeps_the_old_file(tmp_path, monkeypatch):
    from flowaug.fileio import atomic_torch_save

    target = tmp_path / "checkpoint.pt"
    atomic_torch_save({"step": 1}, target)

    def full_disk(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="could not write .*checkpoint.pt .*MiB free"):
        atomic_torch_save({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target)["step"] == 1 and not list(tmp_path.glob(".*.tmp"))
