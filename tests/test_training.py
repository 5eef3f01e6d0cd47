"""The supervised training loop: determinism, learning, batch augmentation and input checks."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowaug.augmentation.baselines import CropFlip
from flowaug.models import build_classifier
from flowaug.training import train_classifier


def tiny_split(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 32, 32, 3) noise images whose brightness encodes the label (0 dark, 1 bright)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 100, (n, 32, 32, 3)) + 150 * labels[:, None, None, None]
    return images.astype(np.uint8), labels


def train_tiny(images, labels, seed=0, epochs=2, **kwargs):
    torch.manual_seed(0)
    model = build_classifier("small", 2)
    history = train_classifier(model, images, labels, epochs=epochs, batch_size=16, lr=0.05, seed=seed,
                               device="cpu", progress=False, **{"augment": CropFlip(), **kwargs})
    return model, history


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()])


def test_same_seed_same_weights_and_other_seed_differs():
    images, labels = tiny_split()
    first, history = train_tiny(images, labels, seed=1)
    second, _ = train_tiny(images, labels, seed=1)
    other, _ = train_tiny(images, labels, seed=2)
    assert torch.equal(weights(first), weights(second))
    assert not torch.equal(weights(first), weights(other))
    assert [record["epoch"] for record in history] == [1, 2]
    assert set(history[0]) >= {"loss", "train_accuracy", "lr", "seconds", "images_per_second"}


def test_uint8_and_float_inputs_train_identically():
    images, labels = tiny_split()
    as_float = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    from_uint8, _ = train_tiny(images, labels)
    from_float, _ = train_tiny(as_float, torch.from_numpy(labels))
    assert torch.allclose(weights(from_uint8), weights(from_float), atol=1e-5)


def test_learns_a_separable_task_and_reports_epoch_callback():
    images, labels = tiny_split(128)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255

    def evaluate(epoch, model):
        with torch.no_grad():
            return {"eval_accuracy": 100.0 * (model(x).argmax(1).numpy() == labels).mean()}

    _, history = train_tiny(images, labels, epochs=6, on_epoch_end=evaluate)
    assert history[-1]["eval_accuracy"] >= 95.0


def test_amp_trains_with_finite_loss():
    images, labels = tiny_split(32)
    model, history = train_tiny(images, labels, epochs=1, amp=True)
    assert all(np.isfinite(record["loss"]) for record in history)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_crop_flip_returns_windows_of_the_padded_image():
    images = torch.rand(6, 3, 32, 32)
    out = CropFlip(padding=4, padding_mode="constant", generator=0)(images)
    padded = F.pad(images, (4, 4, 4, 4))
    found_flip = set()
    for i in range(len(images)):
        windows = {(dy, dx): padded[i][:, dy:dy + 32, dx:dx + 32] for dy, dx in itertools.product(range(9), range(9))}
        matches = [flip for window in windows.values() for flip in (False, True)
                   if torch.equal(out[i], window.flip(-1) if flip else window)]
        assert matches, f"output {i} is not a (flipped) 32x32 window of the padded input"
        found_flip.update(matches)
    assert found_flip == {False, True}


@pytest.mark.parametrize(("images", "labels", "kwargs", "message"), [
    (np.zeros((8, 3, 32, 32), np.uint8), np.zeros(8, int), {}, r"\(N, H, W, 3\)"),
    (np.full((8, 3, 32, 32), 2.0, np.float32), np.zeros(8, int), {}, r"\[0, 1\]"),
    (np.zeros((8, 32, 32, 3), np.int32), np.zeros(8, int), {}, "dtype"),
    (np.zeros((8, 32, 32, 3), np.uint8), np.zeros(7, int), {}, "shape"),
    (np.zeros((8, 32, 32, 3), np.uint8), np.zeros(8), {}, "integers"),
    (np.zeros((8, 32, 32, 3), np.uint8), np.zeros(8, int), {"optimizer": "lbfgs"}, "unknown optimizer"),
    (np.zeros((8, 32, 32, 3), np.uint8), np.zeros(8, int), {"batch_size": 16}, "larger than"),
])
def test_bad_inputs_raise(images, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_classifier(build_classifier("small", 2), images, labels, epochs=1, device="cpu",
                         progress=False, **{"batch_size": 4, **kwargs})


def test_masks_go_to_the_augmentation_when_the_model_takes_none():
    from flowaug import RegionalColourSwap
    from flowaug.masking import EarlyMasking

    images, labels = tiny_split(32)
    masks = torch.zeros(32, 1, 32, 32)
    masks[..., 8:24, 8:24] = 1.0
    seen = []

    class Recording(RegionalColourSwap):
        def forward(self, x, y=None, groups=None, masks=None, params=None):
            out = super().forward(x, y, groups=groups, masks=masks, params=params)
            seen.append((x, out[0], masks))
            return out

    train_tiny(images, labels, epochs=1, augment=Recording(p=1.0), masks=masks)
    for x, out, batch_masks in seen:
        inside = batch_masks.bool().expand_as(x)
        assert torch.equal(out[inside], x[inside]) and not torch.equal(out[~inside], x[~inside])
    with pytest.raises(ValueError, match="model \\(SmallCNN\\) takes no mask and the augmentation \\(CropFlip\\)"):
        train_tiny(images, labels, epochs=1, masks=masks)
    with pytest.raises(ValueError, match="masks must lie in \\[0, 1\\]"):
        train_tiny(images, labels, epochs=1, augment=Recording(p=1.0), masks=masks * 3)
    torch.manual_seed(0)
    masking = EarlyMasking(build_classifier("small", 2))  # a masking model takes them itself
    train_classifier(masking, images, labels, epochs=1, batch_size=16, device="cpu", progress=False,
                     augment=Recording(p=1.0), masks=masks)
    assert seen[-1][2] is None


def test_a_run_folder_resumes_exactly(tmp_path):
    """stop_after, then the same call again, gives the uninterrupted run's weights and history."""
    images, labels = tiny_split()
    whole, whole_history = train_tiny(images, labels, epochs=3)
    _, first_part = train_tiny(images, labels, epochs=3, run_dir=tmp_path, stop_after=1)
    assert [record["epoch"] for record in first_part] == [1]
    resumed, history = train_tiny(images, labels, epochs=3, run_dir=tmp_path)
    assert torch.equal(weights(resumed), weights(whole))
    assert [r["loss"] for r in history] == [r["loss"] for r in whole_history]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_run_folder_refuses_other_settings(tmp_path):
    from flowaug.errors import CheckpointError

    images, labels = tiny_split()
    train_tiny(images, labels, epochs=2, run_dir=tmp_path, stop_after=1)
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.05 vs now 0.1"):
        torch.manual_seed(0)
        train_classifier(build_classifier("small", 2), images, labels, epochs=2, batch_size=16, lr=0.1,
                         device="cpu", progress=False, run_dir=tmp_path)


def test_check_resume_names_what_must_match_and_returns_what_may_change():
    from flowaug.errors import CheckpointError
    from flowaug.training import check_resume

    saved = {"seed": 0, "lr": 1e-3, "epochs": 5}
    assert check_resume(saved, {**saved, "epochs": 9}, "ckpt", may_change=("epochs", "lr")) == {"epochs": [5, 9]}
    with pytest.raises(CheckpointError, match="seed: checkpoint 0 vs now 1"):
        check_resume(saved, {**saved, "seed": 1}, "ckpt", may_change=("epochs",))


def test_runtime_of_one_process_slices_nothing_and_checks_the_global_batch():
    from flowaug.training import Runtime

    runtime = Runtime(rank=1, world_size=2)
    assert runtime.shard(torch.arange(6)).tolist() == [1, 3, 5] and not runtime.is_main
    assert runtime.local_batch(8) == 4
    with pytest.raises(ValueError, match="must divide by the number of processes 2"):
        runtime.local_batch(7)
    assert Runtime.from_env("cpu").world_size == 1
