"""SpuriousBackgrounds: determinism, exact masks, the correlation honoured, test_shift balanced."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowaug.data.spurious import NUM_GROUPS, SHAPES, SpuriousBackgrounds, background_group, draw_groups, render


def test_same_seed_same_split_and_splits_differ():
    first, again = SpuriousBackgrounds("train", num_images=64, seed=3), SpuriousBackgrounds("train", num_images=64, seed=3)
    assert np.array_equal(first.arrays.images, again.arrays.images)
    assert np.array_equal(first.arrays.masks, again.arrays.masks)
    other = SpuriousBackgrounds("test", num_images=64, seed=3)
    assert not np.array_equal(first.arrays.images, other.arrays.images)


def test_masks_are_exact_foregrounds():
    rng = np.random.default_rng(0)
    labels = np.arange(40) % len(SHAPES)
    images, masks, backgrounds = render(labels, labels % NUM_GROUPS, 32, rng)
    assert masks.dtype == bool and masks.any(axis=(1, 2)).all() and not masks.all(axis=(1, 2)).any()
    assert np.array_equal(images[~masks], backgrounds[~masks]), "outside the mask the image is its background"
    inside_differs = np.abs(images.astype(int) - backgrounds.astype(int)).sum(-1)[masks] > 0
    assert inside_differs.mean() > 0.95, "inside the mask the foreground replaces the background"


@pytest.mark.parametrize("rho", [0.95, 0.5, 0.1])
def test_correlation_is_honoured_within_sampling_error(rho):
    data = SpuriousBackgrounds("train", correlation=rho, num_images=4000)
    aligned = (data.arrays.labels == data.arrays.groups).mean()
    assert abs(aligned - rho) < 4 * math.sqrt(rho * (1 - rho) / 4000) + 1e-9
    off = data.arrays.groups[data.arrays.labels != data.arrays.groups]
    assert len(np.unique(off)) == NUM_GROUPS or rho > 0.9


def test_other_groups_are_uniform():
    labels = np.zeros(9000, dtype=np.int64)
    groups = draw_groups(labels, 0.0, np.random.default_rng(0))
    counts = np.bincount(groups, minlength=NUM_GROUPS)
    assert counts[0] == 0 and counts[1:].min() > 850


def test_test_shift_fills_every_cell_equally():
    data = SpuriousBackgrounds("test_shift", num_images=300)
    cells = np.bincount(data.arrays.labels * NUM_GROUPS + data.arrays.groups, minlength=100)
    assert cells.min() == cells.max() == 3


def test_background_colour_follows_the_group():
    data = SpuriousBackgrounds("test_shift", num_images=200)
    images, _, groups, masks = data.tensors()
    background = (images * (1 - masks)).sum((2, 3)) / (1 - masks).sum((2, 3))
    means = torch.stack([background[groups == g].mean(0) for g in range(NUM_GROUPS)])
    spread_between = torch.cdist(means, means).masked_fill(torch.eye(NUM_GROUPS, dtype=torch.bool), 9).min()
    spread_within = torch.stack([background[groups == g].std(0).norm() for g in range(NUM_GROUPS)]).max()
    assert spread_between > spread_within, "groups must be told apart by background colour"


def test_items_and_tensors_agree():
    data = SpuriousBackgrounds("val", num_images=10, size=48)
    image, label, group, mask = data[3]
    images, labels, groups, masks = data.tensors()
    assert image.shape == (3, 48, 48) and mask.shape == (1, 48, 48)
    assert torch.equal(image, images[3]) and torch.equal(mask, masks[3])
    assert (label, group) == (int(labels[3]), int(groups[3]))


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "holdout"}, "unknown split"),
    ({"correlation": 1.5}, "correlation"),
    ({"num_images": 0}, "num_images"),
    ({"size": 4}, "size"),
])
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpuriousBackgrounds(**kwargs)


def test_make_spurious_writes_every_split_and_reads_it_back(tmp_path, monkeypatch):
    from flowaug.cli import main
    from flowaug.data import spurious

    monkeypatch.setattr(spurious, "DEFAULT_SIZES", {"train": 30, "val": 10, "test": 10, "test_shift": 100})
    assert main(["make-spurious", "--out", str(tmp_path), "--correlation", "0.8", "--seed", "2"]) == 0
    path = tmp_path / "spurious_rho0.8_size32_seed2.npz"
    for split, n in (("train", 30), ("test_shift", 100)):
        read = SpuriousBackgrounds.from_npz(path, split)
        made = SpuriousBackgrounds(split, correlation=0.8, num_images=n, seed=2)
        assert read.correlation == 0.8 and len(read) == n
        assert np.array_equal(read.arrays.images, made.arrays.images)
        assert np.array_equal(read.arrays.masks, made.arrays.masks)
    with pytest.raises(ValueError, match="split 'holdout'"):
        SpuriousBackgrounds.from_npz(path, "holdout")
    with pytest.raises(FileNotFoundError, match="make-spurious"):
        SpuriousBackgrounds.from_npz(tmp_path / "missing.npz")


@pytest.mark.parametrize("argv, message", [
    (["make-spurious", "--out", "OUT", "--correlation", "2"], "correlation must be a number in"),
    (["make-spurious", "--out", "OUT", "--size", "3"], "size must be an int"),
])
def test_cli_mistakes_are_one_line_errors(tmp_path, capsys, monkeypatch, argv, message):
    from flowaug.cli import main

    monkeypatch.delenv("FLOWAUG_DEBUG", raising=False)
    assert main([part.replace("OUT", str(tmp_path)) for part in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_background_group_reads_the_group_of_benchmark_images_and_of_recoloured_ones():
    images, labels, groups, masks = SpuriousBackgrounds("test_shift", num_images=300).tensors()
    assert torch.equal(background_group(images, masks), groups)
    recoloured = torch.lerp(images.roll(1, 0), images, masks)   # the same objects on the next image's background
    both_objects = torch.maximum(masks, masks.roll(1, 0))    # the other image's object is not background
    assert torch.equal(background_group(recoloured, both_objects), groups.roll(1, 0))


def test_pretraining_reads_the_benchmark(tmp_path):
    from flowaug.data.spurious import write_npz
    from flowaug.data.specs import load_train_val

    path = write_npz(tmp_path / "s.npz", sizes={"train": 40, "val": 8, "test": 4, "test_shift": 100})
    data = load_train_val(f"spurious:{path}")
    assert data.train.shape == (40, 32, 32, 3) and data.val.shape == (8, 32, 32, 3) and "SpuriousBackgrounds" in data.description
    assert np.array_equal(data.train, SpuriousBackgrounds("train", num_images=40).arrays.images)


def _gradient_energy(backgrounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grey = backgrounds.astype(np.float64).mean(-1)
    return np.abs(np.diff(grey, axis=1)).mean((1, 2)), np.abs(np.diff(grey, axis=2)).mean((1, 2))


def test_texture_cue_keeps_labels_groups_and_masks_and_draws_hue_apart_from_the_group():
    colour = SpuriousBackgrounds("test_shift", num_images=200)
    texture = SpuriousBackgrounds("test_shift", num_images=200, cue="texture")
    for name in ("labels", "groups", "masks"):
        assert np.array_equal(getattr(colour.arrays, name), getattr(texture.arrays, name))
    images, _, groups, masks = texture.tensors()
    hue_groups = background_group(images, masks)
    assert (hue_groups == groups).float().mean() < 0.3    # colour cue: 1.0 by construction
    assert (background_group(*colour.tensors()[::3]) == colour.tensors()[2]).all()
    assert "cue texture" in texture.description


def test_texture_families_differ_in_pattern_not_in_colour():
    """Horizontal stripes vary down the rows, vertical ones across the columns; the pattern, not the
    colour, tells them apart."""
    labels = np.zeros(40, dtype=np.int64)
    groups = np.repeat([0, 1], 20)
    _, _, backgrounds = render(labels, groups, 32, np.random.default_rng(0), cue="texture")
    down, across = _gradient_energy(backgrounds)
    assert (down[:20] > 2 * across[:20]).all() and (across[20:] > 2 * down[20:]).all()
    with pytest.raises(ValueError, match="unknown cue 'shape'"):
        SpuriousBackgrounds("train", num_images=10, cue="shape")


def test_make_spurious_writes_the_cue_and_from_npz_reads_it(tmp_path):
    from flowaug.cli import main

    assert main(["make-spurious", "--out", str(tmp_path), "--cue", "texture"]) == 0
    path = tmp_path / "spurious_texture_rho0.95_size32_seed0.npz"
    split = SpuriousBackgrounds.from_npz(path, "val")
    assert split.cue == "texture" and np.array_equal(
        split.arrays.images[:50], SpuriousBackgrounds("val", cue="texture").arrays.images[:50])
