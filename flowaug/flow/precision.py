"""Full float32 for the flow's inference paths.

An invertible flow is only invertible at the precision it runs in. On CUDA, PyTorch runs
convolutions in TF32 by default (``torch.backends.cudnn.allow_tf32``), and autocast runs them in
bf16/fp16; measured on an H100 with the shipped ``cifar10`` flow, decode(encode(x)) then differs
from x by up to 1.1e-2 (TF32) instead of 1.6e-5 (full fp32) on 20 real CIFAR-100 test images.
Full fp32 is slower on large batches (docs/status.md).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def full_fp32(device_type: str) -> Iterator[None]:
    """Within the block: no TF32 convolutions or matmuls, no autocast on ``device_type``; the
    previous settings are restored afterwards (also on error)."""
    cudnn_tf32, matmul_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn_tf32, matmul_tf32
