"""flowaug.evaluate (flowaug/evaluation.py) on synthetic sets in the official formats, with a model whose predictions we plant.

Each image carries its intended prediction in the red value of pixel (0, 0) (20 * class);
:class:`PlantedModel` reads it back, so every expected accuracy is known exactly. The real
CIFAR10-B annotation (from ../shared/data) assigns the subgroups of the synthetic test
images by their position within their class, as for the real test set.
"""
from __future__ import annotations

import json
import math
import pickle
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from flowaug.cli import main
from flowaug.data import load_subgroups
from flowaug.errors import DatasetNotFoundError
from flowaug.evaluation import SUITES, evaluate
from flowaug.metrics import macro_std, subgroup_metrics
from flowaug.models import build_classifier, load_classifier, save_classifier

N_TEST = 200
N_SHIFT = 2000  # CIFAR-10.1 v6 has exactly 2000 images
CORRUPTIONS = ("fog", "saturate")  # one benchmark corruption, one extra


class PlantedModel(nn.Module):
    """Predicts the class written as 20 * class into the red channel of pixel (0, 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        planted = x[:, 0, 0, 0] * 255 / 20
        return -(planted[:, None] - torch.arange(10, device=x.device)) ** 2


def planted_images(predictions: np.ndarray, seed: int) -> np.ndarray:
    images = np.random.default_rng(seed).integers(0, 256, (len(predictions), 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = 20 * predictions
    return images


def wrong_where(labels: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """Predictions equal to ``labels`` except where ``wrong`` (bool) is set."""
    return np.where(wrong, (labels + 1) % 10, labels)


@pytest.fixture
def data_root(tmp_path, shared_file):
    """A data root with a 200-image CIFAR-10 test pickle, the real CIFAR10-B annotation,
    CIFAR-10-C (fog, saturate) and CIFAR-10.1 v6, all in the official formats.

    Test set: right exactly on images whose subgroup is even. CIFAR-C severity s: right on
    image i iff i % 5 < s (accuracy 20 s %). CIFAR-10.1: right on even positions (50%).
    """
    root = tmp_path / "data"
    (root / "cifar10b").mkdir(parents=True)
    shutil.copy(shared_file("cifar10b/cifar10_bgd_cl2img_gp_fine.npy"), root / "cifar10b")
    labels = np.arange(N_TEST) % 10
    subgroups = load_subgroups("cifar10", labels, root)
    images = planted_images(wrong_where(labels, subgroups % 2 == 1), seed=0)
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": labels.tolist(),
             b"data": images.transpose(0, 3, 1, 2).reshape(N_TEST, 3072), b"filenames": []}
    (root / "cifar-10-batches-py").mkdir()
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))

    position = np.arange(N_TEST) % 5
    blocks = [planted_images(wrong_where(labels, position >= s), seed=s) for s in range(1, 6)]
    (root / "CIFAR-10-C").mkdir()
    for corruption in CORRUPTIONS:
        np.save(root / "CIFAR-10-C" / f"{corruption}.npy", np.concatenate(blocks))
    np.save(root / "CIFAR-10-C" / "labels.npy", np.tile(labels, 5))

    shift_labels = np.random.default_rng(1).integers(0, 10, N_SHIFT)
    (root / "CIFAR-10.1").mkdir()
    np.save(root / "CIFAR-10.1" / "cifar10.1_v6_data.npy",
            planted_images(wrong_where(shift_labels, np.arange(N_SHIFT) % 2 == 1), seed=7))
    np.save(root / "CIFAR-10.1" / "cifar10.1_v6_labels.npy", shift_labels)
    return root


def expected_test_correct(root):
    labels = np.arange(N_TEST) % 10
    subgroups = load_subgroups("cifar10", labels, root)
    return subgroups % 2 == 0, labels, subgroups


def test_clean_and_subgroup_suites(data_root):
    model = PlantedModel()
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    report = evaluate(model, ("clean", "cifar10b"), data_root, device="cpu", progress=False)
    assert sum(seen) == N_TEST, "clean and CIFAR10-B share the test images: the model sees them once"
    correct, labels, subgroups = expected_test_correct(data_root)
    clean, bgroups = report["suites"]["clean"], report["suites"]["cifar10b"]
    assert clean["accuracy"] == pytest.approx(100.0 * correct.mean())
    assert clean["description"] == "CIFAR-10 (official)" and clean["num_images"] == N_TEST
    assert bgroups["description"].endswith("CIFAR-10 (official)") and bgroups["classes"][0] == "airplane"
    # right exactly on the even subgroups: every even subgroup 100%, every odd one 0%
    assert bgroups["subgroup_accuracy"] == {g: 100.0 * (g % 2 == 0) for g in np.unique(subgroups)}
    expected = subgroup_metrics(correct, labels, subgroups, num_classes=10, num_subgroups=8)
    assert {key: bgroups[key] for key in expected} == expected
    assert bgroups["worst_group"]["subgroup_accuracy"] == 0.0
    assert sum(map(sum, bgroups["class_subgroup_counts"])) == N_TEST


def test_corruption_suite(data_root):
    report = evaluate(PlantedModel(), ["cifar10c"], data_root, corruptions=CORRUPTIONS, device="cpu",
                      progress=False)
    entry = report["suites"]["cifar10c"]
    for corruption in CORRUPTIONS:
        assert entry["accuracy"][corruption] == {s: 20.0 * s for s in range(1, 6)}
    _, labels, subgroups = expected_test_correct(data_root)
    severity_3 = np.arange(N_TEST) % 5 < 3
    assert entry["macro_std"]["fog"][3] == pytest.approx(macro_std(severity_3, labels, subgroups))
    bench = entry["summary"]["benchmark"]
    # only fog of the 15 benchmark corruptions: flagged incomplete, mean over its 5 cells = 60
    assert bench["mean"] == pytest.approx(60.0) and not bench["complete"] and len(bench["missing"]) == 70
    assert entry["summary"]["extra"]["per_corruption"] == {"saturate": pytest.approx(60.0)}
    assert entry["num_images_per_block"] == N_TEST


def test_cifar10_1_gap_measures_clean_when_not_requested(data_root):
    alone = evaluate(PlantedModel(), ["cifar10.1"], data_root, device="cpu", progress=False)
    with_clean = evaluate(PlantedModel(), ["cifar10.1", "clean"], data_root, device="cpu", progress=False)
    correct, _, _ = expected_test_correct(data_root)
    for report in (alone, with_clean):
        shift = report["suites"]["cifar10.1"]
        assert shift["accuracy"] == 50.0 and shift["num_images"] == N_SHIFT
        assert shift["gap"] == pytest.approx(100.0 * correct.mean() - 50.0)
        assert shift["clean_description"] == "CIFAR-10 (official)"
    assert list(with_clean["suites"]) == ["cifar10.1", "clean"]


def test_limit_evaluates_a_prefix(data_root):
    report = evaluate(PlantedModel(), ["cifar10c"], data_root, corruptions=["fog"], severities=[2], limit=50,
                      device="cpu", progress=False)
    entry = report["suites"]["cifar10c"]
    assert entry["accuracy"] == {"fog": {2: 40.0}} and entry["num_images_per_block"] == 50
    assert entry["subset"] == "first 50 of 200 images" and report["limit"] == 50


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"suites": ["clean", "imagenet"]}, "unknown suite"),
    ({"suites": ["cifar10c"], "corruptions": ["rain"]}, "unknown corruption"),
    ({"suites": ["cifar10c"], "severities": [0]}, "severities"),
    ({"suites": ["cifar10c"], "severities": []}, "severities"),
    ({"suites": ["cifar10c"], "corruptions": []}, "corruptions must not be empty"),
    ({"suites": ["clean"], "dataset": "mnist"}, "dataset"),
    ({"suites": ["clean"], "limit": 0}, "limit"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        evaluate(PlantedModel(), data_root="unused", progress=False, **kwargs)
    if message == "unknown suite":
        assert all(name in str(error.value) for name in SUITES)


def test_cli_writes_report_and_plots(data_root, tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint = tmp_path / "clf.pt"
    save_classifier(build_classifier("small", 10), checkpoint, "small", 10, meta={"note": "random weights"})
    out = tmp_path / "out"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--suites", "clean", "cifar10b", "cifar10c",
                 "--corruptions", "fog", "--severities", "1", "2", "--data-root", str(data_root),
                 "--out", str(out), "--device", "cpu", "--limit", "100"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    direct = evaluate(load_classifier(checkpoint), ["clean"], data_root, device="cpu", limit=100, progress=False)
    assert report["suites"]["clean"]["accuracy"] == pytest.approx(direct["suites"]["clean"]["accuracy"])
    assert report["checkpoint"]["meta"] == {"note": "random weights"}
    assert set(report["suites"]["cifar10c"]["accuracy"]["fog"]) == {"1", "2"}
    for name in ("cifar10b_subgroups.png", "cifar10c_corruptions.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "clean: accuracy" in capsys.readouterr().out


def test_cli_reports_missing_data_as_one_line_error(data_root, tmp_path, capsys):
    checkpoint = tmp_path / "clf.pt"
    save_classifier(build_classifier("small", 10), checkpoint, "small", 10)
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--suites", "cifar100", "--data-root",
                 str(data_root), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 2
    assert "CIFAR-100 test split not found" in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.json").exists()


def test_missing_corruption_file_fails_before_any_suite_runs(data_root, monkeypatch):
    import flowaug.evaluation as evaluation

    def must_not_run(*args, **kwargs):
        raise AssertionError("a suite ran although a requested file is missing")

    monkeypatch.setattr(evaluation, "predict", must_not_run)
    with pytest.raises(DatasetNotFoundError, match="lacks snow.npy, labels.npy"):
        evaluate(PlantedModel(), ["clean", "cifar10c"], data_root, corruptions=["snow"],
                 c_dir=data_root / "nowhere", progress=False)


class BackgroundModel(torch.nn.Module):
    """Predicts the SpuriousBackgrounds class from the background hue alone (the shortcut)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from flowaug.data.spurious import NUM_GROUPS

        corner = x[:, :, :2, :2].mean((2, 3))
        r, g, b = corner.unbind(1)
        hue = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b) / (2 * math.pi) % 1.0
        group = (hue * NUM_GROUPS + 0.5).long() % NUM_GROUPS
        return torch.nn.functional.one_hot(group, NUM_GROUPS).float()


def test_spurious_suite_separates_aligned_from_conflicting_images():
    report = evaluate(BackgroundModel(), ("spurious",), None, device="cpu", progress=False, limit=1000)
    entry = report["suites"]["spurious"]
    assert entry["num_images"] == 1000 and entry["classes"][0] == "disk"
    assert entry["aligned_accuracy"] > 90 and entry["conflicting_accuracy"] < 10
    assert entry["accuracy"] == pytest.approx(0.1 * entry["aligned_accuracy"] + 0.9 * entry["conflicting_accuracy"])
    assert entry["worst_group"]["cell"]["accuracy"] < 10
