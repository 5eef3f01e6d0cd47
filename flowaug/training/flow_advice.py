"""Whether a pretraining run is long enough to give a flow whose swaps change anything.

A flow starts as (nearly) the identity and its nuisance code is unused until training has run for
a while; a run far shorter than the shipped flows' gives swaps equal to the originals. The numbers
below are the shipped flows' (pretrained/MODEL_CARD.md).
"""
from __future__ import annotations

import math

from flowaug.training.flow_config import PretrainConfig, lr_at

FROM_SCRATCH_STEPS = 5000   # cifar10-film: 5,467 steps of batch 64 from scratch
WARM_START_STEPS = 1500     # spurious / spurious-texture: 1,872 steps warm-started from cifar10-film
STEPS_PER_SECOND = 1.9      # cpu-small, batch 64, 32 x 32, one thread of the 2-core development CPU beside another run


def short_run_advice(total_steps: int, steps_per_epoch: int, batch_size: int, image_size: int,
                     warm_started: bool) -> str | None:
    """A warning with what to run instead when ``total_steps`` is below what the shipped flows needed
    (:data:`WARM_START_STEPS` warm-started, else :data:`FROM_SCRATCH_STEPS`); None when it is not."""
    needed = WARM_START_STEPS if warm_started else FROM_SCRATCH_STEPS
    if total_steps >= needed:
        return None
    epochs = math.ceil(WARM_START_STEPS / steps_per_epoch)
    minutes = WARM_START_STEPS * (batch_size / 64) * (image_size / 32) ** 2 / STEPS_PER_SECOND / 60
    start = "" if warm_started else "--init-from cifar10-film "
    return (f"this run has {total_steps} optimizer steps ({steps_per_epoch} per epoch of batch {batch_size}); the "
            f"shipped flows needed about {FROM_SCRATCH_STEPS:,} from scratch or {WARM_START_STEPS:,} warm-started from "
            f"cifar10-film before their swaps differed from the input, so expect swaps that equal the originals. "
            f"Train with {start}--epochs {epochs} (about {minutes:.0f} min of one CPU thread at {image_size} x "
            f"{image_size}, measured at 32 x 32: {STEPS_PER_SECOND} steps/s of batch 64) and check the swap grids "
            f"in samples/")


def schedule_warnings(cfg: PretrainConfig, total_steps: int, steps_per_epoch: int) -> list[str]:
    """What is wrong with ``cfg``'s schedule before it runs: a warm-up longer than the run, and
    :func:`short_run_advice`."""
    found = []
    if total_steps <= cfg.warmup_steps:
        found.append(f"this run has {total_steps} steps but --warmup-steps {cfg.warmup_steps}: the learning rate "
                     f"never reaches --lr {cfg.lr:g} (it ends at {lr_at(total_steps - 1, total_steps, cfg):.2g}) and "
                     f"the flow will barely train; lower --warmup-steps or train for more epochs")
    advice = short_run_advice(total_steps, steps_per_epoch, cfg.batch_size, cfg.image_size, bool(cfg.init_from))
    return found + ([advice] if advice else [])
