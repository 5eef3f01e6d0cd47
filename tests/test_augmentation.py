"""FlowAug: semantics, determinism, errors, fallback, latent cache and pipeline integration."""
from __future__ import annotations

import copy

import kornia.augmentation as K
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from flowaug import FlowAug, load_pretrained
from flowaug.augmentation.params import draw_params
from flowaug.flow import DecoupledFlow, Latents, get_preset

MODES = ["swap", "prior", "mix"]


@pytest.fixture
def flow(tiny_flow) -> DecoupledFlow:
    return tiny_flow


@pytest.fixture
def images(colour_images) -> torch.Tensor:
    return colour_images


class ColourFlow(nn.Module):
    """A stand-in flow whose nuisance code is an image's mean value and whose decode paints it:
    the output of FlowAug then shows which donor each image received."""

    def __init__(self) -> None:
        super().__init__()
        self.config = get_preset("tiny")
        self.anchor = nn.Parameter(torch.zeros(()))

        self.num_dims = 3 * 32 * 32
        self.code_enters_image_end_only = False

    def encode_nuisance(self, x: torch.Tensor, validate: bool = True) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))[:, None]

    def encode(self, x: torch.Tensor, validate: bool = True, with_log_det: bool = False):
        latents = Latents(x.flatten(1), self.encode_nuisance(x))
        return (latents, torch.zeros(len(x))) if with_log_det else latents

    def decode(self, latents: Latents, with_log_det: bool = False):
        out = latents.nuisance[:, :, None, None].expand(-1, 3, 32, 32).clone()
        return (out, torch.zeros(len(out))) if with_log_det else out


def painted_donors(out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Which image's mean each ColourFlow output shows (its donor), (B,)."""
    own_means = images.mean(dim=(1, 2, 3))
    return (out[:, 0, 0, 0][:, None] - own_means[None, :]).abs().argmin(dim=1)


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
    aug = FlowAug(flow, p=1.0, mode=mode, generator=0, guard=None)
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


@pytest.mark.parametrize("donor", ["any", "same_class", "other_class", "other_group", "balanced"])
def test_donor_policies_are_honoured_and_reported(images, donor):
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
    groups = torch.tensor([0, 1, 0, 1, 0, 1, 2, 2])
    aug = FlowAug(ColourFlow(), p=1.0, mode="swap", donor=donor, generator=0, guard=None)
    out, _ = aug(images, labels, groups=groups)
    donor_index = painted_donors(out, images)
    assert torch.equal(donor_index, aug.last_params.donor), "last_params must name the donors used"
    assert (donor_index != torch.arange(8)).all()
    same_class, same_group = labels[donor_index] == labels, groups[donor_index] == groups
    expected = {"same_class": same_class, "other_class": ~same_class, "other_group": ~same_group}
    assert expected.get(donor, torch.ones(8, dtype=torch.bool)).all()


def test_balanced_donors_make_class_and_group_independent():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (4000,), generator=generator)
    groups = torch.where(torch.rand(4000, generator=generator) < 0.9, labels, 1 - labels)  # 90% aligned
    params = draw_params(4000, 1.0, "swap", "balanced", groups=groups, generator=torch.Generator().manual_seed(1))
    new_group = groups[params.donor]
    for c in (0, 1):
        share = (new_group[labels == c] == 0).double().mean().item()
        assert abs(share - 0.5) < 0.04, f"class {c}: {share:.3f} of the outputs in group 0"


@pytest.mark.parametrize("donor, ids", [("same_class", [0, 1, 1]), ("other_group", [4, 4, 4])])
def test_a_sample_without_an_allowed_donor_is_kept_and_counted(images, donor, ids):
    aug = FlowAug(ColourFlow(), p=1.0, donor=donor, generator=0, guard=None)
    ids = torch.tensor(ids)
    out, _ = aug(images[:3], ids, groups=ids)
    alone = torch.tensor([True, False, False]) if donor == "same_class" else torch.ones(3, dtype=torch.bool)
    assert torch.equal(out[alone], images[:3][alone])
    assert aug.no_donor_count == int(alone.sum()) and torch.equal(aug.last_params.no_donor, alone)


@pytest.mark.parametrize("mode, donor", [("swap", "any"), ("prior", "any"), ("mix", "same_class"),
                                         ("swap", "other_group"), ("mix", "balanced")])
def test_params_replay_reproduces_the_call_bit_for_bit(flow, images, mode, donor):
    labels, groups = torch.arange(8) % 2, torch.arange(8) % 3
    aug = FlowAug(flow, p=0.8, mode=mode, donor=donor, generator=7)
    first, _ = aug(images, labels, groups=groups)
    replayed, _ = aug(images, labels, groups=groups, params=aug.last_params)
    assert torch.equal(first, replayed)
    fresh, _ = aug(images, labels, groups=groups)
    assert not torch.equal(first, fresh), "a new call must draw new parameters"
    drawn = aug.forward_parameters(images, labels, groups=groups)
    applied, _ = aug(images, labels, groups=groups, params=drawn)
    assert torch.equal(applied, aug(images, labels, groups=groups, params=aug.last_params)[0])


def test_params_of_another_batch_size_are_refused(flow, images):
    aug = FlowAug(flow, p=1.0, generator=0)
    params = aug.forward_parameters(images[:4])
    with pytest.raises(ValueError, match="rows for this batch"):
        aug(images, params=params)
    with pytest.raises(TypeError, match="FlowAugParams"):
        aug(images, params={"apply": torch.ones(8)})


def test_each_image_receives_its_donors_code(images):
    aug = FlowAug(ColourFlow(), p=1.0, mode="mix", mix_range=(0.25, 0.75), generator=3, guard=None)
    out = aug(images)
    params, means = aug.last_params, images.mean(dim=(1, 2, 3))
    expected = (1 - params.mix_weight) * means + params.mix_weight * means[params.donor]
    torch.testing.assert_close(out[:, 0, 0, 0], expected)


def test_a_large_batch_gets_donors_from_the_batch_and_never_itself():
    groups = torch.randint(0, 8, (16384,), generator=torch.Generator().manual_seed(0))
    params = draw_params(16384, 0.5, "mix", "balanced", groups=groups, generator=torch.Generator().manual_seed(0))
    assert params.donor.shape == (16384,) and params.prior_noise is None
    chosen = params.apply
    assert (params.donor[chosen] != torch.arange(16384)[chosen]).all()


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
    aug = FlowAug(flow, p=1.0, generator=0, guard=None)
    real_decode = flow.decode

    def half_broken_decode(latents, with_log_det=False):
        decoded, log_det = real_decode(latents, with_log_det=True)
        decoded[::2] = float("nan")
        return decoded, log_det

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
    with pytest.raises(ValueError, match="needs groups"):
        FlowAug(flow, donor="balanced")(images, torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="single image.*mode='prior'"):
        FlowAug(flow, mode="swap")(images[:1])
    with pytest.raises(ValueError, match="unknown mode 'recolour'"):
        FlowAug(flow, mode="recolour")
    with pytest.raises(ValueError, match="unknown donor"):
        FlowAug(flow, donor="neighbour")
    with pytest.raises(ValueError, match="p must be a finite number in"):
        FlowAug(flow, p=1.5)
    with pytest.raises(ValueError, match="p must be a finite number in"):
        FlowAug(flow, p="0.5")
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        FlowAug(flow, temperature=-1.0)
    for temperature in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature must be a finite number"):
            FlowAug(flow, mode="prior", temperature=temperature)
    with pytest.raises(TypeError, match="generator must be an int seed"):
        FlowAug(flow, generator=1.5)
    with pytest.raises(ValueError, match="guard must be a number"):
        FlowAug(flow, guard="strict")


@pytest.mark.parametrize("make_input, hint", [
    (lambda x: x * 255, "divide by 255"),
    (lambda x: (x * 255).to(torch.uint8).permute(0, 2, 3, 1), "permute"),
    (lambda x: (x - 0.5) / 0.25, "before normalisation"),
])
def test_errors_point_the_right_way(flow, images, make_input, hint):
    with pytest.raises(ValueError, match=hint):
        FlowAug(flow)(make_input(images))


def test_numpy_integer_seed_and_empty_batch(flow, images):
    import numpy as np

    out = FlowAug(flow, p=1.0, generator=np.int64(3))(images)
    assert torch.equal(out, FlowAug(flow, p=1.0, generator=3)(images))
    empty = torch.zeros(0, 3, 32, 32)
    assert FlowAug(flow)(empty).shape == (0, 3, 32, 32)


def test_resize_opt_in(flow):
    x = torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    out = FlowAug(flow, p=1.0, resize=True, generator=0)(x)
    assert out.shape == x.shape and torch.isfinite(out).all() and not torch.equal(out, x)


@pytest.mark.parametrize("dtype, mean_tolerance", [(torch.float32, 1e-6), (torch.float16, 3e-2)])
def test_latent_cache_finds_rows_by_content(flow, images, dtype, mean_tolerance):
    aug = FlowAug(flow, p=1.0, mode="mix", generator=2)
    cache = aug.cache_latents(images, dtype=dtype, progress=False)
    assert len(cache) == 8 and cache.semantic.dtype == dtype
    shuffled = torch.tensor([3, 1, 7, 0, 2, 6, 5, 4])
    out = aug(images[shuffled])
    reference = FlowAug(flow, p=1.0, mode="mix", generator=2)(images[shuffled])
    assert (out - reference).abs().mean() < mean_tolerance
    assert aug.cache_misses == 0


def test_latent_cache_never_returns_other_images(flow, images):
    aug = FlowAug(flow, p=1.0, mode="swap", generator=2)
    aug.cache_latents(images[:4], dtype=torch.float32, progress=False)
    flipped = images.flip(-1)  # not cached: must be encoded, not read from rows 0-7
    out = aug(flipped)
    reference = FlowAug(flow, p=1.0, mode="swap", generator=2)(flipped)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
    assert aug.cache_misses == 8


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
    dataset = PerSampleDataset(same_images, FlowAug(flow, p=1.0, mode="prior", generator=0, guard=None))
    loader = DataLoader(dataset, batch_size=4, num_workers=2)

    def two_epochs() -> list[torch.Tensor]:
        torch.manual_seed(0)
        return [augmented for _ in range(2) for augmented, _ in loader]

    first = two_epochs()
    for augmented, original in zip(first, [same_images[:4]] * 4):
        assert ((augmented - original).abs().flatten(1).amax(dim=1) > 1e-3).all()
    assert not torch.equal(first[0], first[1]), "workers repeated each other's random draws"
    assert not torch.equal(first[0], first[2]), "epoch 2 repeated epoch 1's augmentations"
    assert all(torch.equal(a, b) for a, b in zip(first, two_epochs())), "not reproducible for a seed"


def test_module_conversions_move_the_flow(flow, images):
    aug = FlowAug(copy.deepcopy(flow), p=1.0, generator=0).to("cpu").double().float()
    assert next(aug.flow.parameters()).dtype == torch.float32
    assert aug(images).shape == images.shape


def test_repr_is_readable(flow):
    text = repr(FlowAug(flow, p=0.3, mode="mix"))
    assert text.startswith("FlowAug(") and "mode='mix'" in text and "p=0.3" in text and "32x32" in text


def test_guard_rejects_implausible_decodes_and_counts_them(flow, images):
    aug = FlowAug(flow, p=1.0, mode="prior", temperature=3.0, generator=0, guard=None)
    unguarded = aug(images)
    bits = aug.last_extra_bits
    assert torch.isfinite(bits).all()
    threshold = float(bits.median())
    aug.guard = threshold
    guarded = aug(images, params=aug.last_params)
    rejected = bits > threshold
    assert rejected.any() and (~rejected).any()
    assert torch.equal(guarded[rejected], images[rejected])
    assert torch.equal(guarded[~rejected], unguarded[~rejected])
    assert aug.rejected_count == int(rejected.sum()) and torch.equal(aug.last_augmented, ~rejected)


def test_guard_statistic_is_the_change_in_bits_per_dim(flow, images):
    aug = FlowAug(flow, p=1.0, mode="swap", generator=0, guard=None)
    out = aug(images)
    donors = aug.last_params.donor
    latents = flow.encode(images)
    decoded, new_log_det = flow.decode(Latents(latents.semantic, latents.nuisance[donors]), with_log_det=True)
    _, own_log_det = flow.encode(images, with_log_det=True)
    expected = (new_log_det - own_log_det) / (flow.num_dims * torch.log(torch.tensor(2.0)))
    torch.testing.assert_close(aug.last_extra_bits, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(out, decoded.clamp(0, 1))


def test_from_pretrained_loads_the_registered_flow():
    aug = FlowAug.from_pretrained("cifar10", p=0.25, mode="prior")
    assert aug.p == 0.25 and aug.mode == "prior" and aug.flow.config.image_size == 32


def test_module_docstring_example_runs():
    import textwrap

    import flowaug.augmentation.flowaug as module

    example = textwrap.dedent(module.__doc__.split("Example::\n", 1)[1])
    namespace: dict = {}
    exec(compile(example, "flowaug/augmentation/flowaug.py", "exec"), namespace)
    donors, y = namespace["donors"], namespace["y"]
    assert (y[donors] != y).all()


def test_calibrate_guard_sets_the_quantile_of_swap_statistics_and_restores_the_settings(flow):
    images = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    aug = FlowAug(flow, p=0.3, mode="prior", generator=0, guard=None)
    threshold = aug.calibrate_guard(images, quantile=0.9, batch_size=20)
    assert aug.guard == threshold and (aug.mode, aug.p) == ("prior", 0.3) and aug.augmented_count == 0
    replay = FlowAug(flow, p=1.0, mode="swap", generator=0, guard=None)
    statistics = torch.cat([(replay(chunk), replay.last_extra_bits)[1] for chunk in images.split(20)])
    assert threshold == pytest.approx(torch.quantile(statistics, 0.9).item())


def test_flowaug_without_arguments_is_the_shipped_default_flow_with_the_documented_defaults():
    aug = FlowAug(generator=0)
    default = load_pretrained("cifar10")
    assert (aug.p, aug.mode, aug.donor, aug.temperature) == (0.5, "swap", "any", 0.7)
    assert all(torch.equal(a, b) for a, b in zip(aug.flow.state_dict().values(), default.state_dict().values()))
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = FlowAug(p=1.0, generator=0)(images)
    assert out.shape == images.shape and not torch.equal(out, images)
