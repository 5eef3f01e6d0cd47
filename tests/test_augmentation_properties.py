"""Property-based tests (hypothesis) of the augmentation contract.

Covered, over generated batch sizes (0 to 6), dtypes (uint8, float16, bfloat16, float32, float64),
p, modes, donor policies, labels and groups:

- FlowAug (a perturbed tiny flow and the shipped colour flow's short path) and RegionalColourSwap:
  shape, dtype and device kept; values in range; images not augmented come back bit-exactly;
  p = 0 is the identity; replaying ``last_params`` is bit-exact; masks keep the object bit-exactly;
  a batch of one in swap/mix mode is refused with a message that says what to do;
- invalid settings (p, mode, donor, temperature, mix_range, grid) are refused at construction with
  one error naming the argument;
- the baselines (CropFlip, kornia ColorJitter under GlobalRNGOp): shape, dtype and device kept,
  values in range, the same seed gives the same output.

Derandomised with a bounded number of examples in CI (profile ``ci`` in conftest.py); run with
``HYPOTHESIS_PROFILE=thorough`` for more.
"""
from __future__ import annotations

import kornia.augmentation as K
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowaug import FlowAug, RegionalColourSwap, load_pretrained
from flowaug.augmentation.baselines import CropFlip, GlobalRNGOp
from flowaug.augmentation.params import DONORS

DTYPES = [torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64]
FLOAT_DTYPES = DTYPES[1:]


@pytest.fixture(scope="module")
def flows(tiny_flow):
    return {"tiny": tiny_flow, "colour": load_pretrained("cifar10")}


@st.composite
def batches(draw, min_size: int = 0, dtypes: list[torch.dtype] = DTYPES):
    """(images (B,3,32,32) of a drawn dtype, labels (B,), groups (B,)) from a drawn seed."""
    size = draw(st.integers(min_size, 6))
    dtype = draw(st.sampled_from(dtypes))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    images = torch.rand(size, 3, 32, 32, generator=generator)
    images = (images * 255).round().to(torch.uint8) if dtype == torch.uint8 else images.to(dtype)
    labels = torch.randint(0, draw(st.integers(1, 3)), (size,), generator=generator)
    groups = torch.randint(0, draw(st.integers(1, 3)), (size,), generator=generator)
    return images, labels, groups


@st.composite
def augmentations(draw, flows):
    """A FlowAug (either flow) or RegionalColourSwap with drawn p, mode, donor policy and seed."""
    kind = draw(st.sampled_from(["flowaug-tiny", "flowaug-colour", "regionalswap"]))
    p = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
    donor = draw(st.sampled_from(DONORS))
    seed = draw(st.integers(0, 2**16))
    if kind == "regionalswap":
        return RegionalColourSwap(p=p, mode=draw(st.sampled_from(["swap", "mix"])), donor=donor,
                                  grid=draw(st.integers(1, 8)), generator=seed)
    return FlowAug(flows[kind.split("-")[1]], p=p, mode=draw(st.sampled_from(["swap", "prior", "mix"])),
                   donor=donor, generator=seed, guard=None)


def in_range(x: torch.Tensor) -> bool:
    return x.dtype == torch.uint8 or bool(((x >= 0) & (x <= 1)).all())


@given(data=st.data())
def test_donor_augmentations_keep_the_contract(flows, data):
    aug = data.draw(augmentations(flows))
    images, labels, groups = data.draw(batches())
    if len(images) == 1 and aug.mode != "prior":
        with pytest.raises(ValueError, match="single image; .*apply .* to batches"):
            aug(images, labels, groups=groups)
        return
    out, same_labels = aug(images, labels, groups=groups)
    assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
    assert same_labels is labels and in_range(out)
    if len(images) == 0:
        return
    kept = ~aug.last_augmented
    assert torch.equal(out[kept], images[kept])
    if aug.p == 0:
        assert torch.equal(out, images)
    again, _ = aug(images, labels, groups=groups, params=aug.last_params)
    assert torch.equal(again, out)
    masks = torch.zeros(len(images), 1, 32, 32)
    masks[..., 4:20, 10:28] = 1.0
    background_only, _ = aug(images, labels, groups=groups, masks=masks, params=aug.last_params)
    inside = masks.bool().expand_as(images)
    assert torch.equal(background_only[inside], images[inside]) and in_range(background_only)


@given(name=st.sampled_from(["p", "temperature", "mix_range", "mode", "donor", "grid"]),
       value=st.sampled_from([-0.5, 1.5, float("nan"), float("inf"), "0.5", True, None, "bogus"]))
def test_invalid_settings_get_one_error_naming_the_argument(flows, name, value):
    if name in ("temperature",) and isinstance(value, float) and value == 1.5:
        value = -1.0  # 1.5 is a valid temperature
    settings = {"mix_range": (value, 1.0)} if name == "mix_range" else {name: value}
    build = (lambda: RegionalColourSwap(**settings)) if name == "grid" else \
        (lambda: FlowAug(flows["tiny"], **settings))
    with pytest.raises((ValueError, TypeError), match=name):
        build()


@given(batch=batches(min_size=1, dtypes=FLOAT_DTYPES), seed=st.integers(0, 2**16),
       which=st.sampled_from(["cropflip", "colorjitter"]))
def test_baselines_keep_shape_dtype_device_and_repeat_with_a_seed(batch, seed, which):
    images, labels, _ = batch
    build = {"cropflip": lambda: CropFlip(generator=seed),
             "colorjitter": lambda: GlobalRNGOp(K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), generator=seed)}[which]
    work = images.float() if images.dtype in (torch.float16, torch.bfloat16) and which == "colorjitter" else images
    out, same_labels = build()(work, labels)
    assert out.shape == work.shape and out.dtype == work.dtype and out.device == work.device
    assert same_labels is labels and in_range(out)
    assert torch.equal(build()(work, labels)[0], out)
