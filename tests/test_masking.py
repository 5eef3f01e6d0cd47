"""Early and late background masking on tiny models and SpuriousBackgrounds images."""
from __future__ import annotations

import pytest
import torch

from flowaug.data import SpuriousBackgrounds
from flowaug.masking import FILLS, EarlyMasking, LateMasking, mask_background
from flowaug.models import build_classifier


@pytest.fixture(scope="module")
def batch():
    images, labels, groups, masks = SpuriousBackgrounds("test_shift", num_images=12).tensors()
    return images, masks


def other_backgrounds(images, masks):
    """The same foregrounds on other backgrounds (a background-only change)."""
    return torch.lerp(images.roll(1, 0), images, masks)


@pytest.mark.parametrize("fill", ["mean", "zero", "blur"])
def test_a_background_only_change_does_not_change_an_early_masked_model(batch, fill):
    images, masks = batch
    torch.manual_seed(0)
    model = EarlyMasking(build_classifier("small", 10).eval(), fill=fill)
    changed = other_backgrounds(images, masks)
    assert not torch.equal(changed, images)
    with torch.no_grad():
        if fill == "blur":  # a blur of the background still carries its colour
            assert not torch.allclose(model(changed, masks), model(images, masks))
        else:
            torch.testing.assert_close(model(changed, masks), model(images, masks))


@pytest.mark.parametrize("fill", FILLS)
def test_mask_background_keeps_the_foreground_exactly(batch, fill):
    images, masks = batch
    out = mask_background(images, masks, fill, generator=torch.Generator().manual_seed(0))
    keep = masks.expand_as(images).bool()
    assert torch.equal(out[keep], images[keep]) and out.shape == images.shape
    assert not torch.equal(out[~keep], images[~keep])


def test_late_masking_with_a_full_mask_is_the_plain_model(batch):
    images, masks = batch
    torch.manual_seed(0)
    model = build_classifier("small", 10).eval()
    late = LateMasking.from_small_cnn(model)
    with torch.no_grad():
        torch.testing.assert_close(late(images, torch.ones_like(masks)), model(images))
        assert not torch.allclose(late(images, masks), model(images))


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_late_masking_ignores_background_features(pool):
    features = torch.nn.Identity()
    late = LateMasking(features, torch.nn.Identity(), pool=pool)
    x = torch.zeros(1, 3, 4, 4)
    x[..., :2, :2] = 1.0   # foreground value
    x[..., 2:, 2:] = 9.0   # a loud background
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1.0
    assert torch.equal(late(x, mask), torch.ones(1, 3))


def test_bad_masks_and_options_raise(batch):
    images, masks = batch
    with pytest.raises(ValueError, match="mask must have shape"):
        mask_background(images, masks[:3])
    with pytest.raises(ValueError, match="unknown fill"):
        EarlyMasking(torch.nn.Identity(), fill="paint")
    with pytest.raises(ValueError, match="unknown pool"):
        LateMasking(torch.nn.Identity(), torch.nn.Identity(), pool="median")
