"""BackgroundTransplant: the object kept exactly, the donor's background outside its hole exactly, the
hole filled by a shift (exact on periodic backgrounds) or by a trained flow (closer to the true
background than the donor's object was); masks required; seeded."""
from __future__ import annotations

import math

import pytest
import torch

from flowaug import BackgroundTransplant, load_pretrained
from flowaug.augmentation.transplant import dilate, mean_fill, shift_fill
from flowaug.data.spurious import render_batch


@pytest.fixture(scope="module")
def texture_flow():
    """The shipped flow trained on this benchmark's texture backgrounds (not the identity)."""
    return load_pretrained("spurious-texture")


def spurious_texture_batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Texture-cue images, masks (N,1,32,32) and the true backgrounds (the renderer's, without objects)."""
    return render_batch(n, "texture", seed)


def test_the_object_is_kept_and_the_donors_background_taken_outside_its_hole():
    images, masks, _ = spurious_texture_batch()
    aug = BackgroundTransplant(p=1.0, fill="shift", generator=0)
    out = aug(images, masks=masks)
    donor = aug.last_params.donor
    assert not torch.equal(donor, torch.arange(len(images)))
    obj = masks.bool().expand_as(images)
    assert torch.equal(out[obj], images[obj])
    outside = ~obj & ~dilate(masks[donor] > 0, 1).expand_as(images)
    assert torch.equal(out[outside], images[donor][outside])


def test_shift_fill_restores_a_background_whose_period_divides_the_shift():
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    stripes = (0.4 + 0.2 * ((xx // 2) % 2) + 0.1 * ((yy // 4) % 2)).float().expand(2, 3, 32, 32).clone()
    holes = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    holes[0, :, 5:19, 9:23] = True
    holes[1, :, 20:30, 1:12] = True
    torch.testing.assert_close(shift_fill(stripes, holes), stripes)
    everywhere = torch.ones(1, 1, 32, 32, dtype=torch.bool)  # nothing to copy from: the mean colour
    assert torch.isfinite(shift_fill(stripes[:1], everywhere)).all()


def test_mean_fill_paints_the_hole_flat_in_the_backgrounds_mean_colour():
    images = torch.rand(2, 3, 8, 8)
    holes = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    holes[:, :, 2:5, 3:7] = True
    filled = mean_fill(images, holes)
    outside = ~holes.expand_as(images)
    assert torch.equal(filled[outside], images[outside])
    expected = torch.stack([images[i][outside[i]].view(3, -1).mean(1) for i in range(2)])  # (2, 3)
    torch.testing.assert_close(filled[:, :, 3, 4], expected)
    torch.testing.assert_close(filled[:, :, 2, 6], expected)


def test_the_flow_paints_the_hole_nearer_the_true_background_than_the_donors_object(texture_flow):
    images, masks, backgrounds = spurious_texture_batch(32)
    aug = BackgroundTransplant(p=1.0, fill="flow", flow=texture_flow, generator=0)
    out = aug(images, masks=masks)
    donor = aug.last_params.donor
    hole = (dilate(masks[donor] > 0, 1) & (masks == 0)).expand_as(images)  # the donor's object, not under ours
    painted = (out - backgrounds[donor]).abs()[hole].mean()
    unfilled = (images[donor] - backgrounds[donor]).abs()[hole].mean()
    assert painted < 0.5 * unfilled, (float(painted), float(unfilled))
    assert aug.last_augmented.all()


def test_the_fill_is_seeded(texture_flow):
    images, masks, _ = spurious_texture_batch(8)
    first, second, other = (BackgroundTransplant(p=1.0, fill="flow", flow=texture_flow, generator=seed)(images, masks=masks)
                            for seed in (3, 3, 4))
    assert torch.equal(first, second) and not torch.equal(first, other)


def test_bad_arguments_and_missing_masks_are_named(texture_flow):
    images, _, _ = spurious_texture_batch(4)
    with pytest.raises(ValueError, match="needs the objects' masks"):
        BackgroundTransplant(p=1.0)(images)
    with pytest.raises(ValueError, match="fill='flow' needs flow="):
        BackgroundTransplant(fill="flow")
    with pytest.raises(ValueError, match="fill='mean' is not learned and takes no flow"):
        BackgroundTransplant(fill="mean", flow=texture_flow)
    with pytest.raises(ValueError, match="unknown fill"):
        BackgroundTransplant(fill="inpaint")
    with pytest.raises(ValueError, match="dilation"):
        BackgroundTransplant(dilation=-1)
    with pytest.raises(ValueError, match="temperature"):
        BackgroundTransplant(fill="flow", flow=texture_flow, temperature=math.inf)
    with pytest.raises(ValueError, match="do not fit the fill flow"):
        BackgroundTransplant(fill="flow", flow=texture_flow)(
            torch.rand(2, 3, 16, 16), masks=torch.zeros(2, 1, 16, 16))
