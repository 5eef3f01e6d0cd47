"""What FlowAug and RegionalColourSwap share (DonorAugmentation): the same draws, background-only
application with masks, mask errors; RegionalColourSwap's op; FlowAug's colour-flow short path."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flowaug import FlowAug, Latents, RegionalColourSwap, load_pretrained


@pytest.fixture(scope="module")
def colour_flow():
    """The shipped default flow: its code enters only the colour map, and it is trained (not the identity)."""
    flow = load_pretrained("cifar10")
    assert flow.code_enters_image_end_only
    return flow


@pytest.fixture
def images(colour_images) -> torch.Tensor:
    return colour_images


def square_masks(batch: int, size: int = 32) -> torch.Tensor:
    masks = torch.zeros(batch, 1, size, size)
    masks[..., 10:22, 8:20] = 1.0
    return masks


@pytest.mark.parametrize("mode", ["swap", "mix"])
def test_regional_swap_gives_the_donors_cell_means_and_keeps_the_detail(images, mode):
    aug = RegionalColourSwap(p=1.0, mode=mode, generator=0)
    out = aug(images)
    params = aug.last_params
    means = F.adaptive_avg_pool2d(images, 4)
    weight = params.mix_weight[:, None, None, None] if mode == "mix" else 1.0
    target = means + weight * (means[params.donor] - means)
    expected = (images + F.interpolate(target - means, size=(32, 32), mode="bilinear", align_corners=False))
    torch.testing.assert_close(out, expected.clamp(0, 1))
    if mode == "swap":  # the output's cell means are near the donor's (bilinear upsampling smooths them)
        moved = F.adaptive_avg_pool2d(out, 4)
        assert (moved - means[params.donor]).abs().mean() < 0.25 * (means - means[params.donor]).abs().mean()
    high_pass = lambda x: x - F.avg_pool2d(x, 3, 1, 1)  # noqa: E731  detail: unchanged but near cell borders
    assert (high_pass(out) - high_pass(images))[..., 12:20, 12:20].abs().max() < 0.02


def test_flowaug_and_regional_swap_draw_the_same_params_from_the_same_seed(images, tiny_flow):
    labels = torch.arange(8) % 3
    flow_params = FlowAug(tiny_flow, p=0.6, donor="other_class", generator=5).forward_parameters(images, labels)
    swap_params = RegionalColourSwap(p=0.6, donor="other_class", generator=5).forward_parameters(images, labels)
    assert torch.equal(flow_params.apply, swap_params.apply) and torch.equal(flow_params.donor, swap_params.donor)


@pytest.mark.parametrize("make", [lambda flow: FlowAug(flow, p=1.0, generator=0, guard=None),
                                  lambda flow: RegionalColourSwap(p=1.0, generator=0)], ids=["flowaug", "regionalswap"])
def test_masks_keep_the_object_exactly_and_change_only_the_background(make, colour_flow, images):
    aug = make(colour_flow)
    masks = square_masks(8)
    full = aug(images)
    background_only = aug(images, masks=masks, params=aug.last_params)
    inside = masks.bool().expand_as(images)
    assert torch.equal(background_only[inside], images[inside])
    assert torch.equal(background_only[~inside], full[~inside])
    soft = aug(images, masks=masks * 0.25, params=aug.last_params)
    torch.testing.assert_close(soft[inside], (0.75 * full + 0.25 * images)[inside])


def test_masks_work_with_uint8_images_single_images_and_the_latent_cache(tiny_flow, images):
    pixels = (images * 255).round().to(torch.uint8)
    aug = FlowAug(tiny_flow, p=1.0, generator=0, guard=None)
    aug.cache_latents(images, progress=False)
    masks = square_masks(8)
    out = aug(pixels, masks=masks)
    inside = masks.bool().expand_as(pixels)
    assert out.dtype == torch.uint8 and torch.equal(out[inside], pixels[inside]) and aug.cache_misses == 0
    prior = FlowAug(tiny_flow, p=1.0, mode="prior", generator=0)
    single = prior(images[0], masks=masks[0])
    assert single.shape == (3, 32, 32) and torch.equal(single[masks[0].bool().expand(3, -1, -1)],
                                                       images[0][masks[0].bool().expand(3, -1, -1)])


@pytest.mark.parametrize("masks, error, match", [
    (torch.ones(8, 32, 32), ValueError, r"masks must have shape \(8, 1, 32, 32\)"),
    (torch.ones(4, 1, 32, 32), ValueError, r"masks must have shape \(8, 1, 32, 32\)"),
    (torch.full((8, 1, 32, 32), 2.0), ValueError, r"masks must lie in \[0, 1\].*1 = object"),
    (torch.full((8, 1, 32, 32), float("nan")), ValueError, "masks contains NaN"),
    (torch.ones(8, 1, 32, 32, dtype=torch.long), TypeError, "masks must be float in \\[0, 1\\] or bool"),
    (torch.ones(8, 1, 32, 32, device="meta"), ValueError, "masks are on meta but the images on cpu"),
    ([[1.0]], TypeError, "masks must be a torch.Tensor"),
])
def test_bad_masks_get_one_clear_error(images, masks, error, match):
    for aug in (RegionalColourSwap(p=1.0), FlowAug(p=1.0)):
        with pytest.raises(error, match=match):
            aug(images, masks=masks)


def test_regional_swap_refuses_bad_settings_and_images_smaller_than_its_grid(images):
    with pytest.raises(ValueError, match="grid must be an int >= 1"):
        RegionalColourSwap(grid=0)
    with pytest.raises(ValueError, match="unknown mode 'prior'"):
        RegionalColourSwap(mode="prior")
    with pytest.raises(ValueError, match="smaller than the 4x4 grid"):
        RegionalColourSwap()(images[:, :, :3, :3])
    with pytest.raises(ValueError, match="single image; apply RegionalColourSwap to batches"):
        RegionalColourSwap()(images[0])


@pytest.mark.parametrize("mode", ["swap", "prior", "mix"])
def test_colour_flow_short_path_equals_decoding_the_semantic_latent(colour_flow, mode, shared_file):
    """For a colour flow FlowAug runs only the encoder and the colour map: the same images (within
    the Glow's own round-trip error, which the short path does not have) and guard statistic as
    decoding the Glow's semantic latent under the new code."""
    import numpy as np

    with np.load(shared_file("cifar10/cifar10_lossless_subset.npz")) as data:
        images = torch.from_numpy(data["x_test_first1000"][:64]).permute(0, 3, 1, 2).float() / 255
    aug = FlowAug(colour_flow, p=1.0, mode=mode, generator=3, guard=None)
    out = aug(images)
    params = aug.last_params
    latents, own_log_det = colour_flow.encode(images, with_log_det=True)
    own = latents.nuisance
    if mode == "prior":
        new = colour_flow.nuisance_from_noise(params.prior_noise * aug.temperature)
    else:
        new = own[params.donor]
        if mode == "mix":
            new = (1 - params.mix_weight[:, None]) * own + params.mix_weight[:, None] * new
    decoded, new_log_det = colour_flow.decode(Latents(latents.semantic, new), with_log_det=True)
    assert (out - images).abs().max() > 0.05  # the code changes the image
    round_trip = (colour_flow.decode(latents) - images).abs().max()
    difference = (out - decoded.clamp(0, 1)).abs()
    assert difference.max() <= 1.5 * round_trip + 1e-6 and difference.mean() < 1e-6, (difference.max(), round_trip)
    expected_bits = (new_log_det - own_log_det) / (colour_flow.num_dims * math.log(2))
    torch.testing.assert_close(aug.last_extra_bits, expected_bits, atol=1e-5, rtol=0)
    assert not aug.needs_cache


def test_recode_refuses_a_flow_whose_code_enters_the_glow(tiny_flow, images):
    with pytest.raises(ValueError, match="conditioning='colour' or 'texture'"):
        tiny_flow.recode(images, torch.zeros(8, 4), torch.zeros(8, 4))


def test_regional_module_docstring_example_runs():
    import textwrap

    import flowaug.augmentation.regional as module

    example = textwrap.dedent(module.__doc__.split("Example::\n", 1)[1])
    namespace: dict = {}
    exec(compile(example, "flowaug/augmentation/regional.py", "exec"), namespace)
    masks, x, out = namespace["masks"], namespace["x"], namespace["background_only"]
    assert torch.equal(out[masks.bool().expand_as(x)], x[masks.bool().expand_as(x)])
