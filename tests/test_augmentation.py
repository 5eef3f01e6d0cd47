"""FlowAug: semantics, determinism, errors, fallback, latent cache and pipeline integration."""
from __future__ import annotations

import copy

import kornia.augmentation as K
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from flowaug import FlowAug
from flowaug.augmentation.params import draw_params
from flowaug.flow import DecoupledFlow, Latents, get_preset

MODES = ["swap", "prior", "mix"]


@pytest.fixture(scope="module")
def flow() -> DecoupledFlow:
    """A tiny flow whose zero-initialised layers are perturbed, so the nuisance code matters."""
    torch.manual_seed(0)
    model = DecoupledFlow(get_preset("tiny"))
    model.initialize(torch.rand(16, 3, 32, 32))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return model.eval()


@pytest.fixture
def images() -> torch.Tensor:
    """Eight images with distinct colour casts, so their nuisance codes differ."""
    generator = torch.Generator().manual_seed(1)
    cast = torch.rand(8, 3, 1, 1, generator=generator) * 0.5
    return cast + 0.5 * torch.rand(8, 3, 32, 32, generator=generator)


class ColourFlow(nn.Module):
    """A stand-in flow whose nuisance code is an image's mean value and whose decode paints it:
    the output of FlowAug then shows which donor each image received."""

    def __init__(self) -> None:
        super().__init__()
        self.config = get_preset("tiny")
        self.anchor = nn.Parameter(torch.zeros(()))

    def encode_nuisance(self, x: torch.Tensor, validate: bool = True) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))[:, None]

    def encode(self, x: torch.Tensor, validate: bool = True) -> Latents:
        return Latents(x.flatten(1), self.encode_nuisance(x))

    def decode(self, latents: Latents) -> torch.Tensor:
        return latents.nuisance[:, :, None, None].expand(-1, 3, 32, 32).clone()


@pytest.mark.parametrize("mode", MODES)
def test_same_generator_seed_gives_same_output(flow, images, mode):
    first = FlowAug(flow, p=0.7, mode=mode, generator=3)(images)
    second = FlowAug(flow, p=0.7, mode=mode, generator=3)(images)
    assert torch.equal(first, second)
    third = FlowAug(flow, p=0.7, mode=mode, generator=4)(images)
    assert not torch.equal(first, third)


@pytest.mark.parametrize("mode", MODES)
def test_p0_returns_input_bit_exactly(flow, images, mode):
    out = FlowAug(flow, p=0.0, mode=mode, generator=0)(images)
    assert torch.equal(out, images)


@pytest.mark.parametrize("mode", MODES)
def test_p1_changes_every_image(flow, images, mode):
    aug = FlowAug(flow, p=1.0, mode=mode, generator=0)
    out = aug(images)
    change = (out - images).abs().flatten(1).amax(dim=1)
    assert (change > 1e-3).all(), change
    assert aug.augmented_count == images.shape[0] and aug.fallback_count == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.uint8])
def test_shape_dtype_device_kept(flow, images, dtype):
    x = (images * 255).round().to(torch.uint8) if dtype == torch.uint8 else images.to(dtype)
    out = FlowAug(flow, p=1.0, generator=0)(x)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    unbatched = FlowAug(flow, p=1.0, mode="prior", generator=0)(x[0])
    assert unbatched.shape == x[0].shape and unbatched.dtype == dtype


def test_labels_returned_unchanged(flow, images):
    y = torch.arange(8) % 3
    out, labels = FlowAug(flow, p=1.0, donor="same_class", generator=0)(images, y)
    assert labels is y and out.shape == images.shape


@pytest.mark.parametrize("donor", ["same_class", "other_class"])
def test_class_aware_donors_respect_labels(images, donor):
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
    aug = FlowAug(ColourFlow(), p=1.0, mode="swap", donor=donor, generator=0)
    out, _ = aug(images, labels)
    own_means = images.mean(dim=(1, 2, 3))
    painted = out[:, 0, 0, 0]
    donor_index = (painted[:, None] - own_means[None, :]).abs().argmin(dim=1)
    assert (donor_index != torch.arange(8)).all()
    same = labels[donor_index] == labels
    assert same.all() if donor == "same_class" else (~same).all()


def test_draw_params_gives_self_when_no_allowed_donor():
    labels = torch.tensor([0, 1, 1])
    params = draw_params(3, 1.0, labels, "same_class", (0.5, 1.0), torch.Generator().manual_seed(0))
    assert params.donor.tolist() == [0, 2, 1]


def test_image_without_same_class_donor_is_unchanged(flow, images):
    labels = torch.tensor([0, 1, 1, 2, 2, 3, 3, 3])
    out, _ = FlowAug(flow, p=1.0, donor="same_class", generator=0)(images, labels)
    assert torch.equal(out[0], images[0])
    assert not torch.equal(out[1], images[1])


def test_mix_weight_one_equals_swap(flow, images):
    swap = FlowAug(flow, p=1.0, mode="swap", generator=5)(images)
    mix = FlowAug(flow, p=1.0, mode="mix", mix_range=(1.0, 1.0), generator=5)(images)
    torch.testing.assert_close(mix, swap, atol=1e-5, rtol=0)


def test_autocast_runs_the_flow_in_fp32(flow, images):
    expected = FlowAug(flow, p=1.0, generator=0)(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = FlowAug(flow, p=1.0, generator=0)(images)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


def test_no_autograd_through_the_flow(flow, images):
    x = images.clone().requires_grad_(True)
    out = FlowAug(flow, p=0.5, generator=0)(x)
    out.sum().backward()
    augmented = (out != images).flatten(1).any(dim=1)
    assert augmented.any() and (~augmented).any()
    assert (x.grad[augmented] == 0).all(), "gradient flowed through the flow's decode"
    assert (x.grad[~augmented] == 1).all(), "untouched images must pass gradients through"
    assert all(parameter.grad is None for parameter in flow.parameters())


def test_non_finite_decodes_fall_back_to_the_input(flow, images, monkeypatch):
    aug = FlowAug(flow, p=1.0, generator=0)
    real_decode = flow.decode

    def half_broken_decode(latents):
        decoded = real_decode(latents)
        decoded[::2] = float("nan")
        return decoded

    monkeypatch.setattr(flow, "decode", half_broken_decode)
    out = aug(images)
    assert torch.isfinite(out).all()
    assert torch.equal(out[::2], images[::2])
    assert not torch.equal(out[1::2], images[1::2])
    assert aug.fallback_count == 4 and aug.augmented_count == 4


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda: torch.rand(2, 1, 32, 32), "3 \\(RGB\\) channels"),
        (lambda: torch.rand(2, 3, 24, 24), "trained on 32x32"),
        (lambda: torch.rand(3, 32), "shape \\(B,3,H,W\\)"),
        (lambda: torch.full((2, 3, 32, 32), float("nan")), "NaN"),
        (lambda: torch.rand(2, 3, 32, 32) * 255, "in \\[0, 1\\]"),
        (lambda: torch.ones(2, 3, 32, 32, dtype=torch.int32), "dtype"),
    ],
)
def test_bad_images_raise_clear_errors(flow, make_input, message):
    with pytest.raises((ValueError, TypeError), match=message):
        FlowAug(flow, p=1.0)(make_input())


def test_bad_labels_and_options_raise_clear_errors(flow, images):
    with pytest.raises(ValueError, match="labels must have shape"):
        FlowAug(flow)(images, torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        FlowAug(flow)(images, torch.zeros(8))
    with pytest.raises(ValueError, match="needs labels"):
        FlowAug(flow, donor="same_class")(images)
    with pytest.raises(ValueError, match="single image.*mode='prior'"):
        FlowAug(flow, mode="swap")(images[:1])
    with pytest.raises(ValueError, match="unknown mode 'recolour'"):
        FlowAug(flow, mode="recolour")
    with pytest.raises(ValueError, match="unknown donor"):
        FlowAug(flow, donor="neighbour")
    with pytest.raises(ValueError, match="p must be in"):
        FlowAug(flow, p=1.5)
    with pytest.raises(ValueError, match="no latent cache"):
        FlowAug(flow)(images, index=torch.arange(8))
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        FlowAug(flow, temperature=-1.0)


def test_resize_opt_in(flow):
    x = torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    out = FlowAug(flow, p=1.0, resize=True, generator=0)(x)
    assert out.shape == x.shape and torch.isfinite(out).all() and not torch.equal(out, x)


@pytest.mark.parametrize("dtype, mean_tolerance", [(torch.float32, 1e-6), (torch.float16, 3e-2)])
def test_latent_cache_matches_encoding(flow, images, dtype, mean_tolerance):
    aug = FlowAug(flow, p=1.0, mode="mix", generator=2)
    cache = aug.cache_latents(images, dtype=dtype, progress=False)
    assert len(cache) == 8 and cache.semantic.dtype == dtype
    assert cache.nbytes == 8 * 3 * 32 * 32 * torch.finfo(dtype).bits // 8 + 8 * flow.config.nuisance_dim * 4
    shuffled = torch.tensor([3, 1, 7, 0, 2, 6, 5, 4])
    out = aug(images[shuffled], index=shuffled)
    reference = FlowAug(flow, p=1.0, mode="mix", generator=2)(images[shuffled])
    assert (out - reference).abs().mean() < mean_tolerance
    with pytest.raises(IndexError, match="cache size"):
        aug(images, index=torch.arange(8) + 1)


def test_works_inside_torchvision_compose(flow, images):
    pipeline = v2.Compose([FlowAug(flow, p=1.0, generator=0), v2.RandomHorizontalFlip(p=1.0)])
    out = pipeline(images)
    expected = FlowAug(flow, p=1.0, generator=0)(images).flip(-1)
    torch.testing.assert_close(out, expected)


def test_works_next_to_kornia_ops(flow, images):
    pipeline = nn.Sequential(FlowAug(flow, p=1.0, generator=0), K.RandomHorizontalFlip(p=1.0))
    expected = FlowAug(flow, p=1.0, generator=0)(images).flip(-1)
    torch.testing.assert_close(pipeline(images), expected)


class PerSampleDataset(Dataset):
    def __init__(self, images: torch.Tensor, aug: FlowAug) -> None:
        self.images, self.aug = images, aug

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.aug(self.images[i]), self.images[i]


def test_per_sample_in_dataloader_workers(flow, images):
    same_images = images[:1].expand(8, -1, -1, -1)
    dataset = PerSampleDataset(same_images, FlowAug(flow, p=1.0, mode="prior", generator=0))
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2))
    assert len(batches) == 2
    for augmented, original in batches:
        assert augmented.shape == original.shape
        assert ((augmented - original).abs().flatten(1).amax(dim=1) > 1e-3).all()
    first_worker, second_worker = batches[0][0], batches[1][0]
    assert not torch.equal(first_worker, second_worker), "workers repeated each other's random draws"
    again = list(DataLoader(dataset, batch_size=4, num_workers=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again)), "not reproducible for a seed"


def test_module_conversions_move_the_flow(flow, images):
    aug = FlowAug(copy.deepcopy(flow), p=1.0, generator=0).to("cpu").double().float()
    assert next(aug.flow.parameters()).dtype == torch.float32
    assert aug(images).shape == images.shape


def test_repr_is_readable(flow):
    text = repr(FlowAug(flow, p=0.3, mode="mix"))
    assert text.startswith("FlowAug(") and "mode='mix'" in text and "p=0.3" in text and "32x32" in text
