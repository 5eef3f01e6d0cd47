"""flowaug.baselines: every augmentation name builds and runs on a batch, draws per sample, is
reproducible from the generator alone, and compositions run in stage order."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from flowaug.baselines import AUGMENTATIONS, AugmentContext, build_augment, parse_augmentations
from flowaug.per_image import PerImage
from flowaug.flow import DecoupledFlow, get_preset

BATCH = 6
MIXING = ("mixup", "cutmix")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def labels() -> torch.Tensor:
    return torch.arange(BATCH) % 10


@pytest.fixture(scope="module")
def context(images) -> AugmentContext:
    """Tiny untrained flow (initialised on the test images); FlowAug augments every image (p=1)."""
    flow = DecoupledFlow(get_preset("tiny"))
    flow.initialize(images)
    return AugmentContext(num_classes=10, flow=flow, flowaug_p=1.0)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_every_name_builds_runs_and_is_reproducible(name, images, labels, context):
    augment = build_augment(name, context)
    global_state = torch.get_rng_state()
    out, out_labels = augment(images, labels, generator(1))
    assert torch.equal(torch.get_rng_state(), global_state), "the global RNG must be left untouched"
    assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    if name in MIXING:
        assert out_labels.shape == (BATCH, 10) and out_labels.is_floating_point()
        assert torch.allclose(out_labels.sum(1), torch.ones(BATCH))
    else:
        assert torch.equal(out_labels, labels)
    again, again_labels = augment(images, labels, generator(1))
    assert torch.equal(out, again) and torch.equal(out_labels, again_labels)
    if name == "none":
        assert torch.equal(out, images)
    elif name != "flowaug":  # an untrained flow decodes new nuisance codes to near-identical images
        other, _ = augment(images, labels, generator(2))
        assert not torch.equal(out, other)


def test_flowaug_augments_and_keeps_labels(images, labels, context):
    augment = build_augment("flowaug", context)
    out, out_labels = augment(images, labels, generator(0))
    assert augment.steps[0].aug.augmented_count > 0 and torch.equal(out_labels, labels)


def test_augmix_works_on_uint8_pixels(images, labels, context):
    out, _ = build_augment("augmix", context)(images, labels, generator(0))
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4)


class RecordingOp(nn.Module):
    """Adds a random offset drawn once per call (like a policy picking one sub-policy per call)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return x * 0.5 + torch.rand(()) * 0.5


def test_per_image_calls_the_policy_once_per_image(images, labels):
    op = RecordingOp()
    out, _ = PerImage(lambda: op)(images, labels, generator(0))
    assert op.calls == [(3, 32, 32)] * BATCH, "one call per image"
    offsets = (out - images * 0.5).flatten(1)[:, 0]
    assert len(set(offsets.tolist())) == BATCH, "each image must get its own draw"


@pytest.mark.parametrize("name", ["randaugment", "augmix"])
def test_per_image_workers_give_the_same_result_as_in_process(name, images, labels, context):
    in_process = build_augment(name, context)
    with_workers = build_augment(name, dataclasses.replace(context, workers=2))
    try:
        expected, _ = in_process(images, labels, generator(3))
        out, _ = with_workers(images, labels, generator(3))
    finally:
        with_workers.steps[0].close()
    assert torch.equal(out, expected) and not torch.equal(out, images)


def test_per_image_rejects_negative_workers():
    with pytest.raises(ValueError, match="workers must be >= 0"):
        PerImage(RecordingOp, workers=-1)


@pytest.mark.parametrize("spec, order", [
    ("standard", ["standard"]),
    ("cutmix,colorjitter,standard,flowaug", ["flowaug", "standard", "colorjitter", "cutmix"]),
    (" randaugment , standard ", ["standard", "randaugment"]),
])
def test_compositions_run_in_stage_order(spec, order):
    assert parse_augmentations(spec) == order


def test_composition_applies_every_step(images, labels, context):
    composed, _ = build_augment("standard,colorjitter", context)(images, labels, generator(3))
    crop_only, _ = build_augment("standard", context)(images, labels, generator(3))
    assert not torch.equal(composed, crop_only)


@pytest.mark.parametrize("spec, message", [
    ("standard,nope", "unknown augmentation"),
    ("", "unknown augmentation"),
    ("standard,standard", "names one augmentation twice"),
    ("mixup,cutmix", "use one of them"),
])
def test_bad_specs_raise(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_augmentations(spec)


def test_flowaug_with_a_latent_cache_reads_latents_by_index(images, labels, context, monkeypatch):
    cached = dataclasses.replace(context, cache_images=images)
    augment = build_augment("flowaug,standard", cached)
    expected, _ = augment(images, labels, generator(4), index=torch.arange(BATCH))
    flow = augment.steps[0].aug.flow

    def no_encoding(*args, **kwargs):
        raise AssertionError("the flow encoded a batch although its latents are cached")

    monkeypatch.setattr(flow, "encode", no_encoding)
    out, out_labels = augment(images, labels, generator(4), index=torch.arange(BATCH))
    assert torch.equal(out, expected) and torch.equal(out_labels, labels)
    with pytest.raises(AssertionError, match="encoded a batch"):
        augment(images, labels, generator(4))  # no index: FlowAug must encode
