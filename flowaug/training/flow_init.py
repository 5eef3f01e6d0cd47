"""How a pretraining run starts and ends beyond the loop: a warm start from another flow, and the
FlowAug guard threshold calibrated into the exported flow."""
from __future__ import annotations

import copy
from typing import Any

import torch

from flowaug.augmentation.flowaug import GUARD_QUANTILE, FlowAug
from flowaug.data.base import to_float_chw
from flowaug.errors import FlowaugError
from flowaug.flow import DecoupledFlow
from flowaug.pretrained import load_model
from flowaug.seeding import seeded_generator
from flowaug.training.flow_config import SAMPLES_STREAM


@torch.no_grad()
def guard_meta(flow: DecoupledFlow, images: torch.Tensor, seed: int, batch_size: int = 64) -> dict[str, Any]:
    """FlowAug's guard threshold for ``flow``, calibrated on swaps of ``images`` (uint8 (N,H,W,3), e.g. the
    first training images, so no test image informs it), as checkpoint meta (see ``FlowAug.calibrate_guard``).
    FlowAug freezes its flow, so it gets a copy: ``flow`` may be the model being trained."""
    if len(images) < 2:
        return {}
    device = flow.initialized.device
    aug = FlowAug(copy.deepcopy(flow), generator=seeded_generator("cpu", seed, SAMPLES_STREAM), guard=None)
    threshold = aug.calibrate_guard(to_float_chw(images).to(device), batch_size=batch_size)
    return {"guard_bits": threshold, "guard_calibration": f"quantile {GUARD_QUANTILE} of swaps of the first "
                                                          f"{len(images)} training images"}


def warm_start(flow: DecoupledFlow, source: str) -> dict[str, list[str]]:
    """Copy into ``flow`` every tensor of the flow ``source`` (path or registry name) whose name
    and shape match; return ``{"copied": [...], "kept": [...]}`` (names of ``flow``'s state dict)."""
    try:
        donor = load_model(source, "flow").state_dict()
    except (ValueError, OSError) as error:
        raise FlowaugError(f"--init-from {source!r}: {error}") from error
    own = flow.state_dict()
    copied = [k for k, v in donor.items() if k in own and own[k].shape == v.shape]
    if not copied:
        raise FlowaugError(f"--init-from {source!r} shares no tensor of matching name and shape with "
                           f"preset {flow.config}; nothing to warm-start from")
    flow.load_state_dict({**own, **{k: donor[k] for k in copied}})
    return {"copied": copied, "kept": sorted(set(own) - set(copied))}
