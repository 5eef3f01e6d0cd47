"""flowaug.augmentation.baselines: every augmentation name builds and runs on a batch under the one
contract (``(x, y) -> (x, y)``, own generator), draws per sample, is reproducible from its seed,
and compositions run in stage order."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from flowaug.augmentation import Augmentation, reseed
from flowaug.augmentation.baselines import (AUGMENTATIONS, AugmentContext, CropFlip, build_augment,
                                            parse_augmentations)
from flowaug.augmentation.per_image import PerImage

BATCH = 6
MIXING = ("mixup", "cutmix")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def labels() -> torch.Tensor:
    return torch.arange(BATCH) % 10


@pytest.fixture
def context(tiny_flow) -> AugmentContext:
    """The perturbed tiny flow of conftest; FlowAug augments every image (p=1)."""
    return AugmentContext(num_classes=10, flow=tiny_flow, flowaug_p=1.0)


def seeded(augment: nn.Module, seed: int) -> nn.Module:
    reseed(augment, seed)
    return augment


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_every_name_builds_runs_and_is_reproducible(name, images, labels, context):
    augment = build_augment(name, context)
    assert all(isinstance(step, Augmentation) for step in augment.steps)
    global_state = torch.get_rng_state()
    out, out_labels = seeded(augment, 1)(images, labels)
    assert torch.equal(torch.get_rng_state(), global_state), "the global RNG must be left untouched"
    assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    if name in MIXING:
        assert out_labels.shape == (BATCH, 10) and out_labels.is_floating_point()
        assert torch.allclose(out_labels.sum(1), torch.ones(BATCH))
    else:
        assert torch.equal(out_labels, labels)
    again, again_labels = seeded(augment, 1)(images, labels)
    assert torch.equal(out, again) and torch.equal(out_labels, again_labels)
    if name == "none":
        assert torch.equal(out, images)
    else:
        other, _ = seeded(augment, 2)(images, labels)
        assert not torch.equal(out, other)


def test_flowaug_augments_and_keeps_labels(images, labels, context):
    augment = build_augment("flowaug", context)
    out, out_labels = augment(images, labels)
    assert augment.steps[0].augmented_count > 0 and torch.equal(out_labels, labels)
    assert (out - images).abs().mean() > 0.01


def test_augmix_works_on_uint8_pixels(images, labels, context):
    out, _ = build_augment("augmix", context)(images, labels)
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
    out, _ = PerImage(lambda: op, generator=0)(images, labels)
    assert op.calls == [(3, 32, 32)] * BATCH, "one call per image"
    offsets = (out - images * 0.5).flatten(1)[:, 0]
    assert len(set(offsets.tolist())) == BATCH, "each image must get its own draw"


@pytest.mark.parametrize("name", ["randaugment", "augmix"])
def test_per_image_workers_give_the_same_result_as_in_process(name, images, labels, context):
    in_process = build_augment(name, context)
    with_workers = build_augment(name, dataclasses.replace(context, workers=2))
    try:
        expected, _ = seeded(in_process, 3)(images, labels)
        out, _ = seeded(with_workers, 3)(images, labels)
    finally:
        with_workers.steps[0].close()
    assert torch.equal(out, expected) and not torch.equal(out, images)


def test_per_image_rejects_negative_workers():
    with pytest.raises(ValueError, match="workers must be an int >= 0"):
        PerImage(RecordingOp, workers=-1)


@pytest.mark.parametrize("spec, order", [
    ("standard", ["standard"]),
    ("cutmix,colorjitter,standard,flowaug", ["flowaug", "standard", "colorjitter", "cutmix"]),
    (" randaugment , standard ", ["standard", "randaugment"]),
])
def test_compositions_run_in_stage_order(spec, order):
    assert parse_augmentations(spec) == order


def test_composition_applies_every_step(images, labels, context):
    composed, _ = seeded(build_augment("standard,colorjitter", context), 3)(images, labels)
    crop_only, _ = seeded(build_augment("standard", context), 3)(images, labels)
    assert not torch.equal(composed, crop_only)


def test_reseeding_gives_every_augmentation_its_own_stream(images, labels):
    pipeline = nn.Sequential(CropFlip(), CropFlip())
    reseed(pipeline, 5)
    first, second = pipeline
    assert first.generator.initial_seed() != second.generator.initial_seed()
    reseed(pipeline, 5)
    assert torch.equal(first(images), CropFlip(generator=first.generator.initial_seed())(images))


@pytest.mark.parametrize("spec, message", [
    ("standard,nope", "unknown augmentation"),
    ("", "unknown augmentation"),
    ("standard,standard", "names one augmentation twice"),
    ("mixup,cutmix", "use one of them"),
])
def test_bad_specs_raise(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_augmentations(spec)


def test_flowaug_with_a_latent_cache_does_not_encode_cached_images(images, labels, context, monkeypatch):
    cached = dataclasses.replace(context, cache_images=images)
    augment = seeded(build_augment("flowaug,standard", cached), 4)
    expected, _ = augment(images, labels)
    flow = augment.steps[0].flow

    def no_encoding(*args, **kwargs):
        raise AssertionError("the flow encoded a batch although its latents are cached")

    monkeypatch.setattr(flow, "encode", no_encoding)
    out, out_labels = seeded(augment, 4)(images, labels)
    assert torch.equal(out, expected) and torch.equal(out_labels, labels)
    with pytest.raises(AssertionError, match="encoded a batch"):
        augment(images.flip(-1), labels)  # not the cached images: FlowAug must encode
