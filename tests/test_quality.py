"""Tests of flowaug.quality: hand-checkable synthetic cases and the round trip of the tiny flow."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flowaug import quality
from flowaug.flow import DecoupledFlow


def painted(interior: torch.Tensor, ring: torch.Tensor, width: int = 4) -> torch.Tensor:
    """Images (B,3,32,32) equal to ``interior`` inside and to the colours ``ring`` (B,3) on the outer ring."""
    out = ring.view(-1, 3, 1, 1).expand_as(interior).clone()
    out[:, :, width:-width, width:-width] = interior[:, :, width:-width, width:-width]
    return out


def smooth_images(n: int, seed: int) -> torch.Tensor:
    """(n,3,32,32) images in [0.1, 0.8] with structure (upsampled noise), so gradients are not flat."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    return 0.1 + 0.7 * nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("width", [1, 4])
def test_border_colour_of_painted_ring(width: int) -> None:
    ring = torch.tensor([[0.2, 0.4, 0.6], [1.0, 0.0, 0.5]])
    images = painted(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), ring, width)
    assert torch.allclose(quality.border_colour(images, width), ring, atol=1e-6)


def test_border_colour_ignores_the_interior() -> None:
    ring = torch.tensor([[0.3, 0.3, 0.3]])
    a = painted(torch.zeros(1, 3, 32, 32), ring)
    b = painted(torch.ones(1, 3, 32, 32), ring)
    assert torch.equal(quality.border_colour(a), quality.border_colour(b))


def test_structure_retention_identical_is_one() -> None:
    x = smooth_images(6, seed=0)
    assert quality.structure_retention(x, x) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("shift", [(0.15, 0.15, 0.15), (0.1, -0.05, 0.2)], ids=["brightness", "colour"])
def test_structure_retention_ignores_global_colour_shift(shift: tuple[float, float, float]) -> None:
    x = smooth_images(6, seed=0)
    shifted = x + torch.tensor(shift).view(1, 3, 1, 1)
    assert quality.structure_retention(shifted, x) == pytest.approx(1.0, abs=1e-4)


def test_structure_retention_is_low_for_shuffled_pixels() -> None:
    x = smooth_images(6, seed=0)
    perm = torch.randperm(32 * 32, generator=torch.Generator().manual_seed(0))
    shuffled = x.flatten(2)[:, :, perm].view_as(x)
    assert quality.structure_retention(shuffled, x) < 0.3


def test_structure_retention_per_image_and_degenerate_cases() -> None:
    x = smooth_images(3, seed=0)
    flat = torch.full((1, 3, 32, 32), 0.5)
    output = torch.cat([x[:1], flat, flat])
    original = torch.cat([x[:1], x[1:2], flat])
    per_image = quality.structure_retention(output, original, reduction="none")
    assert per_image.shape == (3,)
    assert per_image[0].item() == pytest.approx(1.0, abs=1e-9)
    assert per_image[1].item() == 0.0  # structure lost: a flat output of a structured original
    assert math.isnan(per_image[2].item())  # undefined: the original has no structure
    assert quality.structure_retention(output, original) == pytest.approx(0.5, abs=1e-9)


def test_nuisance_transfer_when_output_border_is_the_donors() -> None:
    g = torch.Generator().manual_seed(0)
    original = painted(torch.rand(8, 3, 32, 32, generator=g), torch.rand(8, 3, generator=g))
    donor = painted(torch.rand(8, 3, 32, 32, generator=g), torch.rand(8, 3, generator=g))
    output = painted(original, quality.border_colour(donor))
    result = quality.nuisance_transfer(output, original, donor)
    assert result["corr_donor"] == pytest.approx(1.0, abs=1e-9)
    assert result["shift_toward_donor"] == pytest.approx(1.0, abs=1e-6)
    assert result["distance_to_donor_after"] == pytest.approx(0.0, abs=1e-6)
    assert result["distance_to_donor_before"] > 0.1
    assert abs(result["corr_original"]) < 0.99


def test_nuisance_transfer_when_output_is_unchanged() -> None:
    g = torch.Generator().manual_seed(1)
    original, donor = torch.rand(2, 8, 3, 32, 32, generator=g)
    result = quality.nuisance_transfer(original, original, donor)
    assert result["corr_original"] == pytest.approx(1.0, abs=1e-9)
    assert result["shift_toward_donor"] == pytest.approx(0.0, abs=1e-9)
    assert result["distance_to_donor_after"] == pytest.approx(result["distance_to_donor_before"])


def test_mean_abs_change_by_hand() -> None:
    original = torch.zeros(2, 3, 8, 8)
    output = original.clone()
    output[0] = 0.5
    assert quality.mean_abs_change(output, original) == pytest.approx(0.25)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_finite_fraction_counts_images_with_a_bad_value(bad: float) -> None:
    x = torch.rand(4, 3, 8, 8)
    x[2, 1, 3, 3] = bad
    assert quality.finite_fraction(x) == 0.75
    assert quality.finite_fraction(x[:2]) == 1.0


class BrightnessClassifier(nn.Module):
    """Class 1 if the mean pixel value exceeds 0.5, else class 0 (hand-checkable accuracies)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = x.flatten(1).mean(1) > 0.5
        return torch.stack([(~bright).float(), bright.float()], dim=1)


def test_label_preservation_by_hand() -> None:
    original = torch.cat([torch.full((2, 3, 8, 8), 0.2), torch.full((2, 3, 8, 8), 0.8)])
    labels = torch.tensor([0, 0, 1, 1])
    output = original.clone()
    output[3] = 0.1  # the last bright image turns dark: one of four labels lost
    classifier = BrightnessClassifier().train()
    result = quality.label_preservation(classifier, output, original, labels, batch_size=3)
    assert result == {"accuracy_clean": 1.0, "accuracy_augmented": 0.75, "label_preservation": 0.75}
    assert classifier.training  # train/eval state restored


def test_round_trip_error_of_tiny_flow(tiny_flow: DecoupledFlow) -> None:
    assert quality.round_trip_error(tiny_flow, smooth_images(10, seed=2), batch_size=4) < 1e-4


GOOD = torch.full((2, 3, 16, 16), 0.5)


def _with(value: float) -> torch.Tensor:
    x = GOOD.clone()
    x[1, 2, 5, 5] = value
    return x


@pytest.mark.parametrize("call, match", [
    (lambda: quality.mean_abs_change(GOOD, GOOD[:1]), "shape"),
    (lambda: quality.mean_abs_change(GOOD, GOOD[:, :2]), "shape"),
    (lambda: quality.mean_abs_change(_with(math.nan), GOOD), "NaN"),
    (lambda: quality.structure_retention(GOOD, _with(1.5)), r"\[0, 1\]"),
    (lambda: quality.border_colour((GOOD * 255).to(torch.uint8)), "float"),
    (lambda: quality.border_colour(GOOD, width=8), "width"),
    (lambda: quality.structure_retention(GOOD, GOOD, reduction="sum"), "reduction"),
    (lambda: quality.structure_retention(GOOD, GOOD, centre=17), "centre"),
    (lambda: quality.nuisance_transfer(GOOD[:1], GOOD[:1], GOOD[:1]), "at least 2"),
    (lambda: quality.label_preservation(BrightnessClassifier(), GOOD, GOOD, torch.zeros(3, dtype=torch.long)),
     "labels"),
    (lambda: quality.label_preservation(BrightnessClassifier(), GOOD, GOOD, torch.zeros(2)), "labels"),
    (lambda: quality.finite_fraction(torch.rand(3, 8, 8)), "shape"),
])
def test_bad_input_raises_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
