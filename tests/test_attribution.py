"""FIDO attribution: known answers on tiny problems, the samplers, determinism and bad input."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from flowaug.attribution import (OBJECTIVES, SAMPLERS, background_reliance, centre_square, fido, region_auc,
                                 region_iou, sample_masks)


class RegionReader(nn.Module):
    """Logits from the mean brightness of one square region only: class 1 when it is bright."""

    def __init__(self, rows: slice, cols: slice) -> None:
        super().__init__()
        self.rows, self.cols = rows, cols

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        signal = (x[:, :, self.rows, self.cols].mean((1, 2, 3)) - 0.5) * 8.0
        return torch.stack([-signal, signal], 1)


@pytest.fixture
def problem():
    images = torch.full((4, 3, 12, 12), 0.5)
    images[:, :, 2:6, 6:10] = 1.0                       # the region the model reads is bright
    images[:, :, 8:11, 1:4] = 1.0                       # a bright distractor it ignores
    region = torch.zeros(4, 1, 12, 12)
    region[:, :, 2:6, 6:10] = 1.0
    return RegionReader(slice(2, 6), slice(6, 10)), images, torch.ones(4, dtype=torch.long), region


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_maps_find_the_region_the_classifier_reads(problem, objective, sampler):
    model, images, labels, region = problem
    result = fido(model, images, labels, objective, sampler, torch.Generator().manual_seed(0), steps=60,
                  masks_per_step=4, lr=1.0, l1=1.0, tv=1.0, temperature=0.1, infill="mean", progress=False)
    assert result.maps.shape == (4, 1, 12, 12) and 0 <= result.maps.min() and result.maps.max() <= 1
    assert region_auc(result.maps, region).min() > 0.9
    assert background_reliance(result.maps, region).mean() < 0.5   # the region is 11% of the image
    assert len(result.history) == 60 and result.history[-1]["loss"] < result.history[0]["loss"]


def test_same_generator_state_same_maps(problem):
    model, images, labels, _ = problem
    runs = [fido(model, images, labels, generator=torch.Generator().manual_seed(3), steps=5, infill="noise",
                 progress=False).maps for _ in range(2)]
    other = fido(model, images, labels, generator=torch.Generator().manual_seed(4), steps=5, infill="noise",
                 progress=False).maps
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], other)


def test_the_model_is_left_as_it_was(problem):
    _, images, labels, _ = problem
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 12 * 12, 2)).train()
    before = [t.clone() for t in model.state_dict().values()]
    fido(model, images, labels, steps=3, progress=False)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values())), "weights and BN statistics"


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_keep_a_pixel_with_its_probability(sampler):
    """Near temperature 0 the relaxed mask is a Bernoulli(sigmoid(theta)) draw: unbiased for the map."""
    theta = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0])
    z = sample_masks(theta, sampler, 20000, 0.01, torch.Generator().manual_seed(0))
    kept = (z > 0.5).float().mean(0)
    assert torch.allclose(kept, torch.sigmoid(theta), atol=4 * 0.5 / 20000 ** 0.5)


def test_samplers_agree_forward_and_the_simplified_gradient_survives_saturation():
    theta = torch.linspace(-6, 6, 1000)
    assert torch.allclose(sample_masks(theta, "concrete", 1, 0.5, torch.Generator().manual_seed(1)),
                          sample_masks(theta, "simplified", 1, 0.5, torch.Generator().manual_seed(1)), atol=1e-5)
    far = torch.full((8,), 25.0, requires_grad=True)     # sigmoid(25) rounds to 1 in float32
    grads = {}
    for sampler in SAMPLERS:
        far.grad = None
        sample_masks(far, sampler, 64, 10.0, torch.Generator().manual_seed(2)).sum().backward()
        grads[sampler] = far.grad.clone()
    assert torch.all(grads["concrete"] == 0) and torch.all(grads["simplified"] > 0)


def test_scores_known_values():
    maps = torch.zeros(2, 1, 4, 4)
    truth = torch.zeros(2, 1, 4, 4)
    truth[:, :, :2] = 1.0
    maps[0, :, :2] = 0.9                    # exactly the foreground
    maps[1, :, 2:] = 0.9                    # exactly the background
    assert torch.allclose(background_reliance(maps, truth), torch.tensor([0.0, 1.0]))
    assert torch.allclose(region_iou(maps, truth), torch.tensor([1.0, 0.0]))
    assert torch.allclose(region_auc(maps, truth), torch.tensor([1.0, 0.0]))
    assert centre_square(8, 2).sum() == 16


def test_bad_input_is_refused_clearly(problem):
    model, images, labels, _ = problem
    with pytest.raises(ValueError, match="images must be a float tensor"):
        fido(model, images[0], labels, progress=False)
    with pytest.raises(ValueError, match="one label per image"):
        fido(model, images, labels[:2], progress=False)
    with pytest.raises(ValueError, match="labels must lie in"):
        fido(model, images, labels + 5, progress=False)
    with pytest.raises(ValueError, match="logits"):
        fido(nn.Flatten(0), images, labels, progress=False)
    with pytest.raises(ValueError, match="unknown objective"):
        fido(model, images, labels, objective="ssd", progress=False)
    with pytest.raises(ValueError, match="unknown sampler"):
        fido(model, images, labels, sampler="gumbel", progress=False)
    with pytest.raises(ValueError, match="unknown infill"):
        fido(model, images, labels, infill="inpaint", progress=False)
    with pytest.raises(ValueError, match="masks_per_step must be a positive int"):
        fido(model, images, labels, masks_per_step=0, progress=False)


def test_explain_command_writes_a_grid_and_numbers(tmp_path):
    from flowaug.cli import main
    from flowaug.models import build_classifier, save_classifier

    torch.manual_seed(0)
    save_classifier(build_classifier("small", 10), tmp_path / "model.pt", "small", 10)
    out = tmp_path / "explain"
    assert main(["explain", "--checkpoint", str(tmp_path / "model.pt"), "--images", "spurious@test", "--out", str(out),
                 "--count", "3", "--steps", "2"]) == 0
    report = json.loads((out / "explain.json").read_text())
    assert report["foreground"] == "exact masks" and len(report["per_image"]) == 3
    assert 0 <= report["ssr_background_reliance"] <= 1 and (out / "explain_grid.png").stat().st_size > 0


def test_explain_command_names_a_bad_image_source(tmp_path, capsys):
    from flowaug.cli import main

    assert main(["explain", "--checkpoint", "cifar10-classifier", "--images", "imagenet", "--out", str(tmp_path)]) == 2
    assert "unknown dataset spec 'imagenet'" in capsys.readouterr().err
