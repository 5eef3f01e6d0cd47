"""The dataset-spec grammar KIND[:PATH][@SPLIT], shared by pretraining and the picture commands."""
from __future__ import annotations

import numpy as np
import pytest

from flowaug.data.specs import DatasetSpec, load_image_sample, load_train_val
from flowaug.errors import FlowaugError


@pytest.mark.parametrize("spec, parsed", [
    ("cifar10", ("cifar10", "", "")),
    ("cifar100@train", ("cifar100", "", "train")),
    ("spurious", ("spurious", "", "")),
    ("spurious:runs/s.npz@val", ("spurious", "runs/s.npz", "val")),
    ("folder:photos/", ("folder", "photos/", "")),
    ("npz:a.npz@test", ("npz", "a.npz", "test")),
])
def test_specs_parse(spec, parsed):
    result = DatasetSpec.parse(spec)
    assert (result.kind, result.path, result.split) == parsed


@pytest.mark.parametrize("spec, message", [
    ("imagenet", "unknown dataset spec"),
    ("cifar10:somewhere", "cifar10 takes no PATH"),
    ("folder", "folder takes a PATH"),
    ("spurious@test-shift", "unknown split 'test-shift'; spurious has train, val, test, test_shift"),
])
def test_bad_specs_name_the_grammar(spec, message):
    with pytest.raises(FlowaugError, match=message):
        DatasetSpec.parse(spec)


def test_pretraining_refuses_a_split_and_pictures_take_one(tmp_path):
    path = tmp_path / "x.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 255, (6, 8, 8, 3), dtype=np.uint8),
             x_test=np.full((3, 8, 8, 3), 7, dtype=np.uint8))
    with pytest.raises(FlowaugError, match="drop @train"):
        load_train_val(f"npz:{path}@train", image_size=8)
    assert load_train_val(f"npz:{path}", image_size=8).val.shape == (3, 8, 8, 3)
    held_out = load_image_sample(f"npz:{path}", 2, size=8)
    assert held_out.images.shape == (2, 3, 8, 8) and np.allclose(held_out.images.numpy(), 7 / 255)
    assert not np.allclose(load_image_sample(f"npz:{path}@train", 2, size=8).images.numpy(), 7 / 255)


def test_spurious_pictures_default_to_test_shift_with_masks():
    sample = load_image_sample("spurious", 4, seed=1)
    assert "test_shift" in sample.description and sample.masks.shape == (4, 1, 32, 32)
    assert "val" in load_image_sample("spurious@val", 4).description
