"""DecoupledFlow: invertibility, likelihood, nuisance code, validation, checkpoints."""
from __future__ import annotations

import math

import pytest
import torch

from flowaug.errors import CheckpointError
from flowaug.flow import PRESETS, DecoupledFlow, FlowConfig, Latents, get_preset, save_flow
from flowaug.flow.layers import (ActNorm, ContextAffine, FiLMConvNet, InvertibleConv1x1, MLPNet,
                                  PatternField, SplitPriorNet)
from flowaug.training.flow_init import warm_start


def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """(n,3,size,size) float32 images on the 1/255 grid: colour gradients plus a bright blob."""
    gen = torch.Generator().manual_seed(seed)
    coords = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    base = torch.rand(n, 3, 1, 1, generator=gen)
    slope = torch.rand(n, 3, 1, 1, generator=gen) - 0.5
    centre = torch.rand(n, 2, 1, 1, generator=gen)
    blob = torch.exp(-((xx - centre[:, :1]) ** 2 + (yy - centre[:, 1:]) ** 2) / 0.05)
    images = (base + slope * xx + 0.4 * blob).clamp(0, 1)
    images = images + 0.03 * torch.rand(images.shape, generator=gen)
    return (images.clamp(0, 1) * 255).round() / 255


def trained_tiny(image_size: int = 32, steps: int = 5) -> DecoupledFlow:
    """A ``tiny`` flow after initialisation and a few Adam steps (every layer non-trivial)."""
    torch.manual_seed(0)
    model = DecoupledFlow(get_preset("tiny", image_size=image_size))
    x = smooth_images(8, image_size, seed=1)
    model.initialize(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(x, gen).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def model() -> DecoupledFlow:
    return trained_tiny()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return smooth_images(8, 32, seed=2)


def test_get_preset_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="cpu-small"):
        get_preset("huge")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_dict_round_trip(name):
    config = get_preset(name)
    assert FlowConfig.from_dict(config.to_dict()) == config
    assert get_preset(name, image_size=64).image_size == 64


@pytest.mark.parametrize("bad, match", [
    ({"image_size": 30}, "divisible"),
    ({"hidden_channels": 0}, "positive int"),
    ({"nuisance_dim": 1}, ">= 2"),
    ({"scale_bound": -1.0}, "scale_bound"),
    ({"colour": 3}, "unknown FlowConfig keys"),
    ({"colour_grid": 0}, "colour_grid"),
    ({"conditioning": "color"}, "conditioning must be one of"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        get_preset("tiny", **bad)


@pytest.mark.parametrize("image_size", [32, 64])
def test_encode_decode_round_trip(image_size):
    model = trained_tiny(image_size, steps=2)
    x = smooth_images(4, image_size, seed=3)
    with torch.no_grad():
        latents = model.encode(x)
        assert isinstance(latents, Latents)
        assert latents.semantic.shape == (4, 3 * image_size ** 2)
        assert latents.nuisance.shape == (4, model.config.nuisance_dim)
        assert latents.semantic.dtype == latents.nuisance.dtype == torch.float32
        assert (model.decode(latents) - x).abs().max().item() <= 1e-4


def test_log_det_matches_autograd_jacobian():
    torch.manual_seed(0)
    model = DecoupledFlow(get_preset("tiny", image_size=4)).double()
    for param in model.parameters():
        torch.nn.init.normal_(param, std=0.2)
    y = torch.rand(1, 3, 4, 4, dtype=torch.float64) - 0.5
    g = torch.randn(1, model.config.nuisance_dim, dtype=torch.float64)
    _, log_det = model._to_latent(y, g)
    jacobian = torch.autograd.functional.jacobian(lambda v: model._to_latent(v.view(1, 3, 4, 4), g)[0], y.flatten())
    assert log_det.item() == pytest.approx(torch.linalg.slogdet(jacobian.squeeze(0))[1].item(), abs=1e-8)

    u = torch.randn(1, model.config.nuisance_dim, dtype=torch.float64)
    prior_jacobian = torch.autograd.functional.jacobian(lambda v: model.prior.transform(v[None])[0], u[0])
    expected = -0.5 * (u.pow(2).sum() + u.numel() * math.log(2 * math.pi)) - torch.linalg.slogdet(prior_jacobian)[1]
    assert model.prior.log_prob(model.prior.transform(u)).item() == pytest.approx(expected.item(), abs=1e-8)


def test_loss_decreases_on_fixed_batch(images):
    torch.manual_seed(0)
    model = DecoupledFlow(get_preset("tiny"))
    model.initialize(images)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for step in range(15):
        optimizer.zero_grad()
        loss = model.loss(images, torch.Generator().manual_seed(step))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 0.5
    bpd = model.bits_per_dim(images)
    assert bpd.shape == (8,) and torch.isfinite(bpd).all()


def test_bits_per_dim_is_deterministic_given_generator(model, images):
    with torch.no_grad():
        first = model.bits_per_dim(images, torch.Generator().manual_seed(5))
        second = model.bits_per_dim(images, torch.Generator().manual_seed(5))
        other = model.bits_per_dim(images, torch.Generator().manual_seed(6))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_loss_requires_initialize(images):
    with pytest.raises(RuntimeError, match="initialize"):
        DecoupledFlow(get_preset("tiny")).loss(images)


def test_actnorm_does_not_reinitialise_after_initialize(images):
    model = DecoupledFlow(get_preset("tiny"))
    model.initialize(images)
    actnorms = [m for m in model.modules() if isinstance(m, ActNorm)]
    assert actnorms and all(bool(a.initialized) for a in actnorms)
    before = [(a.s.clone(), a.t.clone()) for a in actnorms]
    model.loss(smooth_images(8, 32, seed=9) * 0.5)
    assert all(torch.equal(a.s, s) and torch.equal(a.t, t) for a, (s, t) in zip(actnorms, before))


def test_swapping_nuisance_changes_decode(model, images):
    with torch.no_grad():
        latents = model.encode(images)
        own = model.decode(latents)
        swapped = model.decode(Latents(latents.semantic, latents.nuisance.roll(1, dims=0)))
    assert torch.isfinite(swapped).all()
    assert (swapped - images).abs().mean().item() > 1000 * (own - images).abs().mean().item()


def test_decode_stays_finite_off_manifold(images):
    """Coupling networks with huge random weights: bounded scales/shifts keep codes finite."""
    torch.manual_seed(0)
    model = DecoupledFlow(get_preset("tiny"))
    model.initialize(images)
    networks = (FiLMConvNet, SplitPriorNet, ContextAffine, MLPNet)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, networks):
                for param in module.parameters():
                    param.normal_(std=1.0)
        latents = model.encode(images)
        assert torch.isfinite(latents.semantic).all()
        codes = [model.sample_nuisance(8, 1.0, torch.Generator().manual_seed(0)), 3 * latents.nuisance]
        for nuisance in codes:
            assert torch.isfinite(model.decode(Latents(3 * latents.semantic, nuisance))).all()


def test_sample_nuisance_determinism_and_temperature(model):
    first = model.sample_nuisance(6, 0.7, torch.Generator().manual_seed(3))
    assert first.shape == (6, model.config.nuisance_dim)
    assert torch.equal(first, model.sample_nuisance(6, 0.7, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, model.sample_nuisance(6, 0.7, torch.Generator().manual_seed(4)))
    at_zero = model.sample_nuisance(3, 0.0)
    assert torch.equal(at_zero[0], at_zero[2])


@pytest.mark.parametrize("n, temperature", [(0, 1.0), (2.5, 1.0), (2, -1.0), (2, float("nan"))])
def test_sample_nuisance_rejects_bad_arguments(model, n, temperature):
    with pytest.raises(ValueError):
        model.sample_nuisance(n, temperature)


BAD_IMAGES = {
    "uint8": (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "float"),
    "no batch dim": (torch.rand(3, 32, 32), "shape"),
    "wrong size": (torch.rand(2, 3, 64, 64), "image_size=32"),
    "grayscale": (torch.rand(2, 1, 32, 32), "shape"),
    "nan": (torch.full((2, 3, 32, 32), float("nan")), "NaN"),
    "out of range": (torch.rand(2, 3, 32, 32) * 255, r"\[0, 1\]"),
}


@pytest.mark.parametrize("method", ["encode", "bits_per_dim", "loss", "initialize"])
@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_image_inputs_are_validated(method, case):
    images, match = BAD_IMAGES[case]
    model = DecoupledFlow(get_preset("tiny"))
    model.initialized.fill_(True)
    with pytest.raises(ValueError, match=match):
        getattr(model, method)(images)


@pytest.mark.parametrize("semantic_shape, nuisance_shape, match", [
    ((2, 100), (2, 4), "semantic"),
    ((2, 3072), (2, 5), "nuisance"),
    ((2, 3072), (3, 4), "batch sizes"),
])
def test_decode_validates_latents(model, semantic_shape, nuisance_shape, match):
    with pytest.raises(ValueError, match=match):
        model.decode(Latents(torch.zeros(semantic_shape), torch.zeros(nuisance_shape)))


def test_inverse_cache_follows_parameter_updates(images):
    model = trained_tiny(steps=1)
    conv = next(m for m in model.modules() if isinstance(m, InvertibleConv1x1))
    with torch.no_grad():
        model.decode(model.encode(images))
        conv.L.add_(0.3 * torch.tril(torch.ones_like(conv.L), diagonal=-1))
        assert (model.decode(model.encode(images)) - images).abs().max().item() <= 1e-4


def test_checkpoint_round_trip(model, images, tmp_path):
    path = tmp_path / "flow.pt"
    save_flow(model, path, meta={"epochs": 3})
    loaded = DecoupledFlow.from_checkpoint(path)
    assert loaded.config == model.config and loaded.meta == {"epochs": 3} and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded.encode(images).semantic, model.encode(images).semantic)
        assert torch.equal(loaded.bits_per_dim(images, torch.Generator().manual_seed(1)),
                           model.bits_per_dim(images, torch.Generator().manual_seed(1)))


def test_training_checkpoint_with_extra_keys_loads(model, tmp_path):
    path = tmp_path / "train.pt"
    save_flow(model, path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["train_state"] = {"epoch": 2, "optimizer": {"lr": 1e-3}}
    torch.save(checkpoint, path)
    assert DecoupledFlow.from_checkpoint(path).config == model.config


def _write_checkpoint(model: DecoupledFlow, path, case: str) -> None:
    if case == "not a torch file":
        path.write_bytes(b"definitely not a checkpoint")
        return
    save_flow(model, path)
    checkpoint = torch.load(path, weights_only=True)
    mutate = {
        "wrong format": lambda c: c.update(format="flowaug-classifier"),
        "wrong version": lambda c: c.update(version=99),
        "unknown config key": lambda c: c["config"].update(colour=1),
        "config mismatch": lambda c: c["config"].update(hidden_channels=32),
        "missing weights": lambda c: c["state_dict"].pop(next(iter(c["state_dict"]))),
    }
    mutate[case](checkpoint)
    torch.save(checkpoint, path)


@pytest.mark.parametrize("case, match", [
    ("not a torch file", "not a readable torch checkpoint"),
    ("wrong format", "not a flowaug flow checkpoint"),
    ("wrong version", "version 99"),
    ("unknown config key", "colour"),
    ("config mismatch", "do not form a valid"),
    ("missing weights", "Missing key"),
])
def test_bad_checkpoints_raise_checkpoint_error(model, tmp_path, case, match):
    path = tmp_path / "flow.pt"
    _write_checkpoint(model, path, case)
    with pytest.raises(CheckpointError, match=match):
        DecoupledFlow.from_checkpoint(path)


def test_missing_checkpoint_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        DecoupledFlow.from_checkpoint(tmp_path / "absent.pt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda(model, images):
    cuda_model = trained_tiny().cuda()
    x = images.cuda()
    gen = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        assert (cuda_model.decode(cuda_model.encode(x)) - x).abs().max().item() <= 1e-4
        assert cuda_model.sample_nuisance(4, 1.0, gen).device.type == "cuda"
        assert cuda_model.bits_per_dim(x, gen).device.type == "cuda"
    with pytest.raises(ValueError, match="generator"):
        cuda_model.bits_per_dim(x, torch.Generator())


def test_forward_is_the_training_loss(model, images):
    with torch.no_grad():
        assert torch.equal(model(images, torch.Generator().manual_seed(2)),
                           model.loss(images, torch.Generator().manual_seed(2)))


def test_kl_weight_interpolates_between_reconstruction_and_elbo(model, images):
    def loss(kl_weight: float) -> torch.Tensor:
        with torch.no_grad():
            return model.loss(images, torch.Generator().manual_seed(3), kl_weight=kl_weight)

    elbo = model.bits_per_dim(images, torch.Generator().manual_seed(3)).mean()
    torch.testing.assert_close(loss(1.0), elbo)
    torch.testing.assert_close(loss(0.25), 0.75 * loss(0.0) + 0.25 * loss(1.0))
    assert not torch.equal(loss(0.0), loss(1.0))


def test_prior_samples_from_a_cpu_generator_match_on_any_model_device(model):
    first = model.sample_nuisance(5, 0.7, torch.Generator().manual_seed(4))
    second = model.sample_nuisance(5, 0.7, torch.Generator().manual_seed(4))
    assert torch.equal(first, second) and first.shape == (5, model.config.nuisance_dim)


@pytest.mark.parametrize("conditioning", ["film", "shift", "colour", "texture"])
def test_decode_log_det_is_minus_the_encode_log_det_and_every_conditioning_inverts(conditioning, images):
    torch.manual_seed(0)
    model = DecoupledFlow(get_preset("tiny", conditioning=conditioning))
    model.initialize(images)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.03 * torch.randn_like(parameter))
        latents, encode_log_det = model.encode(images, with_log_det=True)
        decoded, decode_log_det = model.decode(latents, with_log_det=True)
    assert (decoded - images).abs().max() < 1e-4
    torch.testing.assert_close(decode_log_det, encode_log_det, atol=1e-3, rtol=1e-5)
    with torch.no_grad():
        other = model.decode(Latents(latents.semantic, latents.nuisance.flip(0)))
    assert (other - images).abs().mean() > 2e-5, "the nuisance code must change the decode"


def perturbed_colour_flow(images: torch.Tensor) -> DecoupledFlow:
    """A ``tiny`` colour-conditioned flow with every parameter moved off its initialisation."""
    torch.manual_seed(0)
    model = DecoupledFlow(get_preset("tiny", conditioning="colour", colour_grid=2))
    model.initialize(images)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.03 * torch.randn_like(parameter))
        model.colour.linear.weight.normal_(0, 0.3)
    return model


def test_colour_conditioning_changes_only_a_smooth_colour_map_of_the_same_image(images):
    model = perturbed_colour_flow(images)
    assert all(m.film.in_features == 0 for m in model.modules() if isinstance(m, FiLMConvNet))
    with torch.no_grad():
        latents = model.encode(images)
        donors = latents.nuisance.flip(0)
        swapped = model.decode(Latents(latents.semantic, donors))
        # undo each output's colour map with its own code: one image, whatever the code
        own, _ = model.colour.inverse(images - 0.5, latents.nuisance)
        new, _ = model.colour.inverse(swapped - 0.5, donors)
        log_scale, _ = model.colour._params(images, donors)
    assert (swapped - images).abs().mean() > 1e-3, "the code must recolour the image"
    torch.testing.assert_close(new, own, atol=1e-4, rtol=1e-4)
    # the map varies slowly: neighbouring pixels' gains differ far less than the gains themselves
    assert log_scale.diff(dim=-1).abs().max() < 0.5 * log_scale.abs().max()


def test_a_colour_flow_warm_started_from_a_film_flow_is_that_flow_at_code_zero(images, tmp_path):
    film = trained_tiny()
    save_flow(film, tmp_path / "film.pt")
    colour = DecoupledFlow(get_preset("tiny", conditioning="colour"))
    warm_start(colour, str(tmp_path / "film.pt"))
    with torch.no_grad():
        eps = film.encode(images).semantic
        codes = torch.randn(images.shape[0], film.config.nuisance_dim)
        expected = film.decode(Latents(eps, torch.zeros_like(codes)))
        torch.testing.assert_close(colour.eval().decode(Latents(eps, codes)), expected)


def test_the_colour_anchor_makes_the_code_carry_the_regional_colour():
    x = smooth_images(16, 32, seed=5)

    def anchor_error_after_training(anchor: float) -> float:
        torch.manual_seed(0)
        model = DecoupledFlow(get_preset("tiny", conditioning="colour", colour_grid=2))
        model.initialize(x)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(0)
        for _ in range(60):
            optimizer.zero_grad()
            model.loss(x, gen, colour_anchor=anchor).backward()
            optimizer.step()
        with torch.no_grad():
            return model.colour_anchor_error(x, model.encode_nuisance(x)).item()

    untrained = (torch.nn.functional.avg_pool2d(x - 0.5, 16) ** 2).mean().item()
    assert anchor_error_after_training(10.0) < 0.25 * min(untrained, anchor_error_after_training(0.0))


def test_the_colour_anchor_needs_colour_conditioning(model, images):
    with pytest.raises(ValueError, match="colour_anchor needs a flow with conditioning='colour'"):
        model.loss(images, colour_anchor=1.0)


def test_shift_conditioning_never_scales_hidden_activations():
    net = DecoupledFlow(get_preset("tiny", conditioning="shift")).levels[0][0].coupling.net
    assert not hasattr(net, "film") and net.shift.out_features == net.conv1.out_channels


def striped_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,3,32,32) flat-coloured images with vertical or horizontal stripes (+-0.1, period 4) on the background
    and a plain square object in the middle, and its masks (n,1,32,32)."""
    g = torch.Generator().manual_seed(seed)
    base = 0.3 + 0.4 * torch.rand(n, 3, 1, 1, generator=g)
    phase = torch.zeros(n, 1, 1, 1)  # one phase: the code need only say which direction
    coords = torch.arange(32.0)
    vertical = torch.sin(coords[None, None, None, :] * 1.57 + phase).expand(n, 1, 32, 32)
    horizontal = torch.sin(coords[None, None, :, None] * 1.57 + phase).expand(n, 1, 32, 32)
    which = (torch.arange(n) % 2).view(n, 1, 1, 1).bool()
    masks = torch.zeros(n, 1, 32, 32)
    masks[:, :, 10:22, 10:22] = 1
    images = base + 0.1 * torch.where(which, vertical, horizontal)
    return torch.lerp(images, torch.full_like(images, 0.9), masks).clamp(0, 1), masks


def test_the_texture_flow_recodes_pattern_and_colour_without_the_glow(images):
    torch.manual_seed(0)
    model = DecoupledFlow(get_preset("tiny", conditioning="texture"))
    model.initialize(images)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.03 * torch.randn_like(parameter))
        latents = model.encode(images)
        donors = latents.nuisance.flip(0)
        expected = model.decode(Latents(latents.semantic, donors))
        recoded, _ = model.recode(images, latents.nuisance, donors)
    assert model.code_enters_image_end_only
    torch.testing.assert_close(recoded, expected, atol=1e-4, rtol=0)
    assert (recoded - images).abs().mean() > 2e-5, "the code must change the image"


def test_a_fresh_pattern_field_draws_nothing_but_its_features_follow_the_code():
    """Only the last conv starts at zero: were the code map zero too, no gradient would reach the code."""
    torch.manual_seed(0)
    field = PatternField(context_dim=8)
    codes = torch.randn(2, 8)
    assert field.pattern(codes, (32, 32)).abs().max() == 0
    hidden = field.body[:-1](field.linear(codes).view(-1, field.channels, 4, 4))
    assert (hidden[0] - hidden[1]).abs().mean() > 1e-3


def test_the_pattern_anchor_makes_the_code_carry_the_background_pattern():
    """Trained with the anchor, a swap gives an image its donor's stripes; the object stays."""
    x, masks = striped_images(16, seed=1)
    torch.manual_seed(0)
    model = DecoupledFlow(get_preset("tiny", conditioning="texture"))
    model.initialize(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        optimizer.zero_grad()
        model.loss(x, gen, pattern_anchor=1000.0, masks=masks).backward()
        optimizer.step()
    with torch.no_grad():
        codes = model.encode_nuisance(x)
        swapped, _ = model.recode(x, codes, codes.roll(1, 0))  # odd images take even ones' stripes
    background = (1 - masks).bool().expand_as(x)
    orientation = lambda im: (im.diff(dim=-1).abs().mean((1, 2, 3)) - im.diff(dim=-2).abs().mean((1, 2, 3)))  # noqa: E731
    before, after = orientation(x * (1 - masks)), orientation(swapped * (1 - masks))
    assert ((before > 0) != (after > 0)).float().mean() >= 0.75, "most swaps take the donor's stripe direction"
    assert (swapped - x)[~background].abs().mean() < 0.15  # the object is recoloured and patterned, not erased


def test_the_pattern_anchor_needs_texture_conditioning_and_masks(model, images):
    with pytest.raises(ValueError, match="conditioning='texture'"):
        model.loss(images, pattern_anchor=1.0, masks=torch.zeros(len(images), 1, 32, 32))
