"""Early and late background masking on tiny models and SpuriousBackgrounds images."""
from __future__ import annotations

import pytest
import torch

from flowaug.data import SpuriousBackgrounds
from flowaug.errors import DataFormatError
from flowaug.masking import FILLS, EarlyMasking, LateMasking, mask_background, mask_iou, train_mask_predictor
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


@pytest.mark.parametrize("arch", ["small", "resnet18"])
def test_late_masking_with_a_full_mask_is_the_plain_model(batch, arch):
    images, masks = batch
    torch.manual_seed(0)
    model = build_classifier(arch, 10).eval()
    late = LateMasking.from_classifier(model)
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


def test_mask_predictor_learns_the_foreground():
    images, _, _, masks = SpuriousBackgrounds("train", num_images=1024, seed=1).tensors()
    test_images, _, _, test_masks = SpuriousBackgrounds("test", num_images=128, seed=1).tensors()
    predictor = train_mask_predictor(images, masks, epochs=2, batch_size=64, seed=0, progress=False)
    iou = mask_iou(predictor.predict(test_images), test_masks).mean()
    everything = mask_iou(torch.ones_like(test_masks), test_masks).mean()
    assert iou > 0.6 > everything
    again = train_mask_predictor(images[:256], masks[:256], epochs=1, batch_size=64, seed=0, progress=False)
    first = train_mask_predictor(images[:256], masks[:256], epochs=1, batch_size=64, seed=0, progress=False)
    assert torch.equal(again.predict(test_images), first.predict(test_images)), "same seed, same predictor"


def test_mask_iou_known_values():
    a = torch.zeros(3, 1, 4, 4)
    b = torch.zeros(3, 1, 4, 4)
    a[0, :, :2] = 1.0
    b[0, :, :1] = 1.0            # half of a
    a[1, :, :2] = 1.0
    b[1, :, 2:] = 1.0            # disjoint
    assert torch.allclose(mask_iou(a, b), torch.tensor([0.5, 0.0, 1.0]))
    with pytest.raises(ValueError, match="differ in shape"):
        mask_iou(a, b[:2])


def test_an_image_folder_beside_a_mask_folder_trains_an_early_masked_model(tmp_path):
    import numpy as np
    from PIL import Image

    from flowaug.data.masked_folder import load_masked_folder
    from flowaug.training import train_classifier

    data = SpuriousBackgrounds("train", num_images=24, seed=2)
    for i, (image, mask, label) in enumerate(zip(data.arrays.images, data.arrays.masks, data.arrays.labels)):
        for root, array in (("images", image), ("masks", mask.astype(np.uint8) * 255)):
            folder = tmp_path / root / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / f"{i}.png")
    loaded = load_masked_folder(tmp_path / "images", tmp_path / "masks")
    assert loaded.images.shape == (24, 3, 32, 32) and loaded.masks.shape == (24, 1, 32, 32)
    assert sorted(loaded.masks.sum((1, 2, 3)).tolist()) == sorted(data.arrays.masks.sum((1, 2)).tolist())
    model = EarlyMasking(build_classifier("small", len(loaded.classes)))
    history = train_classifier(model, loaded.images, loaded.labels, epochs=1, batch_size=8, masks=loaded.masks,
                               progress=False)
    assert len(history) == 1

    (tmp_path / "masks" / f"class{data.arrays.labels[0]}" / "0.png").unlink()
    with pytest.raises(DataFormatError, match="no mask for"):
        load_masked_folder(tmp_path / "images", tmp_path / "masks")


@pytest.mark.parametrize("readout", ["gap", "cls"])
def test_a_vit_with_a_mask_drops_background_patches(batch, readout):
    from flowaug.models.vit import SmallViT

    images, masks = batch
    torch.manual_seed(0)
    vit = SmallViT(10, readout).eval()
    # Background-only change, outside every patch that holds a foreground pixel.
    patches = torch.nn.functional.max_pool2d(masks, 4)
    background_patches = torch.nn.functional.interpolate(patches, scale_factor=4) == 0
    changed = torch.where(background_patches, images.roll(1, 0), images)
    with torch.no_grad():
        torch.testing.assert_close(vit(changed, masks), vit(images, masks), atol=1e-5, rtol=0)
        assert not torch.allclose(vit(changed), vit(images), atol=1e-3), "without a mask it sees the background"
    with pytest.raises(ValueError, match="unknown readout"):
        SmallViT(10, "mean")
