"""Measures of augmentation quality: does an augmented image keep its object and label while
taking another image's colour and background? (docs/status.md, "Does a swap keep the object?")

Every image argument is a float tensor (B, 3, H, W) with values in [0, 1], on any device; the
batches compared by one function share shape and device. Inputs are validated: a wrong shape,
dtype, a NaN/Inf value (except in :func:`finite_fraction`, which counts them) or a value
outside [0, 1] raises ``ValueError``. Scalars come back as Python floats.

Correlations are Pearson correlations. They are NaN where undefined because the *reference*
(the original, or the donor) does not vary; a reference that varies against an output that does
not (e.g. an output clamped flat) scores 0, i.e. nothing was retained or transferred.

The augmented images these measures see come from calling the augmentation itself
(``benchmarks/augment_quality.py`` calls FlowAug and reads its donors from ``aug.last_params``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowaug.flow.model import DecoupledFlow, Latents
from flowaug.models.layers import luma
from flowaug.models.predict import predict
from flowaug.validation import check_float_images

REDUCTIONS = ("mean", "none")
FLAT_STD = 1e-6  # a reference whose std is below this is "constant" (correlation undefined)


def _check_same(reference_name: str, reference: Tensor, **others: Tensor) -> None:
    check_float_images(reference, reference_name)
    for name, x in others.items():
        check_float_images(x, name)
        if x.shape != reference.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)} but {reference_name} has "
                             f"{tuple(reference.shape)}; they must match")
        if x.device != reference.device:
            raise ValueError(f"{name} is on {x.device} but {reference_name} is on {reference.device}")


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _check_labels(labels: Tensor, n: int) -> None:
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool \
            or labels.shape != (n,):
        found = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer tensor of shape ({n},), got {found}")


def correlation(reference: Tensor, measured: Tensor, dim: int = -1) -> Tensor:
    """Pearson correlation of ``measured`` with ``reference`` along ``dim`` (float64 result).

    Same-shape tensors; the result drops ``dim``. NaN where ``reference`` is constant
    (std < :data:`FLAT_STD`); 0 where only ``measured`` is constant.
    """
    ref = reference.double() - reference.double().mean(dim, keepdim=True)
    mea = measured.double() - measured.double().mean(dim, keepdim=True)
    n = reference.shape[dim]
    ref_norm, mea_norm = ref.norm(dim=dim), mea.norm(dim=dim)
    flat = FLAT_STD * math.sqrt(n)
    corr = (ref * mea).sum(dim) / (ref_norm * mea_norm).clamp_min(1e-300)
    corr = torch.where(mea_norm > flat, corr, torch.zeros_like(corr))
    return torch.where(ref_norm > flat, corr.clamp(-1, 1), torch.full_like(corr, math.nan))


def border_colour(x: Tensor, width: int = 4) -> Tensor:
    """Mean RGB of the outer ``width``-pixel ring of each image (the background proxy).

    x: (B, 3, H, W) in [0, 1] with ``2 * width < min(H, W)``. Returns (B, 3) in [0, 1],
    same device and dtype as ``x``.
    """
    check_float_images(x, "x")
    height, wide = x.shape[-2:]
    if isinstance(width, bool) or not isinstance(width, int) or width < 1 or 2 * width >= min(height, wide):
        raise ValueError(f"width must be an int with 1 <= width and 2 * width < {min(height, wide)} "
                         f"(image size {height}x{wide}), got {width!r}")
    ring = torch.ones(height, wide, dtype=torch.bool, device=x.device)
    ring[width:height - width, width:wide - width] = False
    return x[:, :, ring].mean(dim=-1)


def nuisance_transfer(output: Tensor, original: Tensor, donor: Tensor, width: int = 4) -> dict[str, float]:
    """How far the output's border colour moved from its original's to its donor's.

    output, original, donor: (B, 3, H, W) in [0, 1]; ``donor[i]`` is the image whose nuisance
    code ``output[i]`` received. B >= 2 (the correlations run across images).

    Returns:
        corr_donor / corr_original: Pearson correlation across the B images of the output's
            border colour with the donor's / the original's, computed per RGB channel and
            averaged over the 3 channels (NaN if the reference's border colour is constant).
        shift_toward_donor: pooled projection ``sum_i <o_i - a_i, d_i - a_i> / sum_i |d_i - a_i|^2``
            of the border-colour change onto the original->donor direction (0: unchanged,
            1: the donor's border colour reached; o, a, d = output, original, donor border colours).
        distance_to_donor_before / distance_to_donor_after: mean Euclidean RGB distance of the
            original's / the output's border colour to the donor's.
    """
    _check_same("output", output, original=original, donor=donor)
    if output.shape[0] < 2:
        raise ValueError("nuisance_transfer needs at least 2 images (correlations run across images)")
    out, orig, don = (border_colour(x, width).double() for x in (output, original, donor))
    direction = don - orig
    squared = direction.pow(2).sum()
    shift = ((out - orig) * direction).sum() / squared if squared > 0 else torch.tensor(math.nan)
    return {
        "corr_donor": correlation(don, out, dim=0).mean().item(),
        "corr_original": correlation(orig, out, dim=0).mean().item(),
        "shift_toward_donor": shift.item(),
        "distance_to_donor_before": direction.norm(dim=1).mean().item(),
        "distance_to_donor_after": (out - don).norm(dim=1).mean().item(),
    }


def gradient_magnitude(x: Tensor) -> Tensor:
    """Sobel gradient magnitude of the grayscale (BT.601 luma) image: (B,3,H,W) -> (B,H,W).

    Borders use replicate padding. No input validation (internal helper of the measures).
    """
    gray = F.pad(luma(x), (1, 1, 1, 1), mode="replicate")
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([sobel_x, sobel_x.T]).unsqueeze(1)
    return F.conv2d(gray, kernels).pow(2).sum(1).sqrt()


def structure_retention(output: Tensor, original: Tensor, centre: int = 16,
                        reduction: str = "mean") -> float | Tensor:
    """Correlation of the grayscale Sobel gradient-magnitude maps of the central region.

    output, original: (B, 3, H, W) in [0, 1]. The gradient maps are computed on the whole image
    and cropped to the central ``centre`` x ``centre`` pixels (the object), then correlated per
    image. A global brightness or colour change keeps the gradient map and scores ~1;
    scrambling the object scores ~0. NaN for an image whose original centre is flat.

    reduction: "mean" -> float, the mean over images with a defined value (NaN if none);
    "none" -> (B,) float64 tensor on the inputs' device.
    """
    _check_same("output", output, original=original)
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")
    height, wide = output.shape[-2:]
    if isinstance(centre, bool) or not isinstance(centre, int) or not 2 <= centre <= min(height, wide):
        raise ValueError(f"centre must be an int in [2, {min(height, wide)}] (image size {height}x{wide}), "
                         f"got {centre!r}")
    top, left = (height - centre) // 2, (wide - centre) // 2
    maps = [gradient_magnitude(x)[:, top:top + centre, left:left + centre].flatten(1) for x in (original, output)]
    per_image = correlation(*maps, dim=1)
    if reduction == "none":
        return per_image
    defined = per_image[~per_image.isnan()]
    return defined.mean().item() if defined.numel() else math.nan


def mean_abs_change(output: Tensor, original: Tensor) -> float:
    """Mean absolute pixel difference over all images, channels and pixels (in [0, 1])."""
    _check_same("output", output, original=original)
    return (output.double() - original.double()).abs().mean().item()


def _finite_images(x: Tensor) -> Tensor:
    """(B, ...) -> (B,) bool: whether each image's values are all finite."""
    return torch.isfinite(x).flatten(1).all(1)


def finite_fraction(x: Tensor) -> float:
    """Fraction of the B images (B, 3, H, W) whose values are all finite (NaN/Inf allowed in x)."""
    check_float_images(x, "x", finite=False)
    return _finite_images(x).double().mean().item()


def _accuracy(classifier: nn.Module, x: Tensor, labels: Tensor, batch_size: int) -> float:
    return (predict(classifier, x, batch_size=batch_size) == labels.cpu()).float().mean().item()


def label_preservation(classifier: nn.Module, output: Tensor, original: Tensor, labels: Tensor,
                       batch_size: int = 256) -> dict[str, float]:
    """Accuracy of a fixed classifier on augmented images relative to clean ones.

    classifier: maps float images (b, 3, H, W) in [0, 1] to logits (b, C); run in eval mode
    on its own device (its train/eval state is restored afterwards). output, original:
    (B, 3, H, W) in [0, 1]; labels: (B,) integer class ids.

    Returns accuracy_clean and accuracy_augmented (fractions in [0, 1]) and
    label_preservation = accuracy_augmented / accuracy_clean (NaN if accuracy_clean is 0).
    """
    _check_same("output", output, original=original)
    _check_batch_size(batch_size)
    _check_labels(labels, output.shape[0])
    was_training = classifier.training
    classifier.eval()
    try:
        clean = _accuracy(classifier, original, labels, batch_size)
        augmented = _accuracy(classifier, output, labels, batch_size)
    finally:
        classifier.train(was_training)
    return {"accuracy_clean": clean, "accuracy_augmented": augmented,
            "label_preservation": augmented / clean if clean > 0 else math.nan}


@torch.no_grad()
def _encode_all(flow: DecoupledFlow, x: Tensor, batch_size: int) -> Latents:
    device = flow.initialized.device
    codes = [flow.encode(x[start:start + batch_size].to(device)) for start in range(0, x.shape[0], batch_size)]
    return Latents(torch.cat([c.semantic for c in codes]), torch.cat([c.nuisance for c in codes]))


@torch.no_grad()
def _decode_all(flow: DecoupledFlow, latents: Latents, batch_size: int) -> Tensor:
    semantic, nuisance = latents
    return torch.cat([flow.decode(Latents(semantic[start:start + batch_size], nuisance[start:start + batch_size]))
                      for start in range(0, semantic.shape[0], batch_size)])


def round_trip_error(flow: DecoupledFlow, x: Tensor, batch_size: int = 256) -> float:
    """max |decode(encode(x)) - x| over all images and pixels (inf if a decode is non-finite).

    x: (B, 3, S, S) in [0, 1] on any device (moved batch-wise to the flow's device).
    """
    check_float_images(x, "x")
    _check_batch_size(batch_size)
    decoded = _decode_all(flow, _encode_all(flow, x, batch_size), batch_size).to(x.device)
    if not torch.isfinite(decoded).all():
        return math.inf
    return (decoded.double() - x.double()).abs().max().item()
