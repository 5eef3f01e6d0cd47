"""flowaug.validation: the image checks shared by the flow, FlowAug and the quality metrics."""
from __future__ import annotations

import pytest
import torch

from flowaug.validation import check_finite_unit_range, check_float_images


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_valid_batches_pass(dtype):
    x = torch.rand(2, 3, 8, 8).to(dtype)
    check_float_images(x, "x")
    check_float_images(x, "x", size=8)


@pytest.mark.parametrize("x, kwargs, match", [
    ([[0.5]], {}, "must be a torch.Tensor, got list"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), {}, r"float in \[0, 1\], got dtype torch.uint8"),
    (torch.rand(3, 8, 8), {}, r"shape \(B, 3, H, W\), got \(3, 8, 8\)"),
    (torch.rand(2, 3, 8, 8), {"size": 16}, "config.image_size=16"),
    (torch.rand(0, 3, 8, 8), {}, "empty batch"),
    (torch.full((1, 3, 8, 8), float("inf")), {}, "NaN or Inf"),
    (torch.rand(1, 3, 8, 8) + 1.5, {}, r"lie in \[0, 1\], got values in \[1.5"),
])
def test_bad_batches_name_the_problem(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_float_images(x, "x", **kwargs)


def test_finite_false_skips_only_the_value_checks():
    check_float_images(torch.full((1, 3, 8, 8), float("nan")), "x", finite=False)
    with pytest.raises(ValueError, match="shape"):
        check_float_images(torch.full((1, 1, 8, 8), float("nan")), "x", finite=False)


def test_range_error_carries_the_hint():
    with pytest.raises(ValueError, match="got values in .*; normalise later"):
        check_finite_unit_range(torch.tensor([-0.5, 0.5]), "x", hint="; normalise later")
