"""flowaug.flow.precision.full_fp32: the flow's inference paths run without TF32 or autocast."""
from __future__ import annotations

import pytest
import torch

from flowaug.flow.precision import full_fp32

from test_flow import trained_tiny


@pytest.fixture
def tf32_enabled():
    """TF32 switched on for convolutions and matmuls (as a user may have it), restored afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_switches_tf32_and_autocast_off_and_restores_them(tf32_enabled):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with full_fp32("cpu"):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            assert not torch.is_autocast_enabled("cpu")
        assert torch.is_autocast_enabled("cpu")
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32


def test_restores_settings_after_an_error(tf32_enabled):
    with pytest.raises(RuntimeError, match="boom"):
        with full_fp32("cpu"):
            raise RuntimeError("boom")
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32


def test_flow_round_trip_stays_exact_under_autocast():
    """bf16 autocast would run the couplings' convolutions in bf16 (error ~1e-2) without full_fp32."""
    model = trained_tiny()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        latents = model.encode(x)
        assert latents.semantic.dtype == torch.float32
        assert (model.decode(latents) - x).abs().max().item() <= 1e-4
