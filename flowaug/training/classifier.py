"""The classifier trainer: cross-entropy on an image split held whole on the device.

Each batch is converted to float, augmented on the device by an augmentation module
(``augment(x, y)``) and fed to the model. No DataLoader, no workers: fast on a GPU and simple on a
CPU. Optional: DDP (:class:`~flowaug.training.runtime.Runtime`), a run folder with a per-epoch
checkpoint that the same call resumes exactly, and a stop after some epochs.

Seeding (the rule every flowaug trainer follows): the model's initial weights are the caller's;
epoch e's data order comes from ``seeded_generator(device, seed, e)`` and every augmentation in
``augment`` is re-seeded from ``(seed, e, rank + 1)`` (:func:`flowaug.augmentation.reseed`), so a
resumed run draws exactly what the uninterrupted one drew and ranks draw independently.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from flowaug.augmentation.base import reseed
from flowaug.augmentation.donor import DonorAugmentation
from flowaug.seeding import seeded_generator
from flowaug.training.checkpoint import load_train_state, save_train_state
from flowaug.data.base import to_float_images
from flowaug.training.inputs import as_image_tensor, as_label_tensor
from flowaug.training.runtime import MetricsLog, Runtime, format_record, run_progress, synchronize
from flowaug.training.schedules import OPTIMIZERS, one_cycle
from flowaug.validation import check_finite_unit_range

STATE_NAME = "train_state.pt"
METRICS_NAME = "metrics.jsonl"


def takes_masks(model: nn.Module) -> bool:
    """Whether ``model`` is a masking model: its forward takes a ``mask`` (EarlyMasking, LateMasking,
    SmallViT's token dropping)."""
    return "mask" in inspect.signature(model.forward).parameters


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    augment: nn.Module | None,
    shuffle_generator: torch.Generator,
    memory_format: torch.memory_format = torch.channels_last,
    amp: bool = False,
    label_smoothing: float = 0.0,
    rank: int = 0,
    world_size: int = 1,
    desc: str = "epoch",
    progress: bool = True,
    groups: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    overall: tqdm | None = None,
) -> dict[str, Any]:
    """One pass over ``images`` (whole split on the model's device, uint8 (N, H, W, 3) or float
    (N, 3, H, W) in [0, 1]; ``labels`` int64 (N,)), one optimizer and scheduler step per batch.

    The order is a permutation drawn from ``shuffle_generator`` (identical on every DDP rank);
    each global batch of ``batch_size`` is split across ``world_size`` ranks (rank r takes rows
    r, r + world_size, ...; ``batch_size`` must divide by ``world_size``) and the last incomplete
    batch is dropped. ``augment`` (an :class:`~flowaug.augmentation.Augmentation` or a ``v2.Compose`` of
    them) is called as ``augment(x, y)`` and draws from its own generators (seed them per epoch and
    rank with :func:`flowaug.augmentation.reseed`). Soft labels
    (B, C) from mixing augmentations go straight into ``F.cross_entropy`` (probability targets).

    Returns loss and train_accuracy (this rank's batches; percent, on augmented batches, against
    the argmax of soft labels), lr (after the epoch), seconds, images_per_second (all ranks) and the wall time
    split into data_seconds (indexing, uint8 -> float), augment_seconds and model_seconds
    (forward, backward, step). The split waits for CUDA work at each phase boundary.
    """
    device = images.device
    to_model = takes_masks(model)
    local_batch = batch_size // world_size
    if local_batch * world_size != batch_size:
        raise ValueError(f"batch_size {batch_size} must divide by the number of processes {world_size}")
    steps = len(images) // batch_size
    if steps == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({len(images)} images)")
    model.train()
    times = {"data_seconds": 0.0, "augment_seconds": 0.0, "model_seconds": 0.0}
    start = synchronize(device)
    order = torch.randperm(len(images), generator=shuffle_generator, device=device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    bar = overall if overall is not None else tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    for step in range(steps):
        tick = synchronize(device)
        index = order[step * batch_size:(step + 1) * batch_size][rank::world_size]
        x, y = to_float_images(images[index]), labels[index]
        side = () if masks is None or not to_model else (masks[index],)
        extra = {} if groups is None else {"groups": groups[index]}
        if masks is not None and not to_model:
            extra["masks"] = masks[index]
        tock = synchronize(device)
        times["data_seconds"] += tock - tick
        if augment is not None:
            x, y = augment(x, y, **extra)
        tick = synchronize(device)
        times["augment_seconds"] += tick - tock
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x.contiguous(memory_format=memory_format), *side)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach()
        correct += (logits.argmax(1) == (y.argmax(1) if y.is_floating_point() else y)).sum()
        times["model_seconds"] += synchronize(device) - tick
        bar.update()
        if progress and step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    if overall is None:
        bar.close()
    seconds = synchronize(device) - start
    return {
        "loss": loss_sum.item() / steps,
        "train_accuracy": 100.0 * correct.item() / (steps * local_batch),
        "lr": optimizer.param_groups[0]["lr"],
        "seconds": seconds,
        "images_per_second": steps * batch_size / seconds,
        **times,
    }


def train_classifier(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 256,
    lr: float = 0.2,
    weight_decay: float = 5e-4,
    seed: int = 0,
    augment: nn.Module | None = None,
    optimizer: str = "sgd",
    warmup_fraction: float = 0.2,
    label_smoothing: float = 0.0,
    device: torch.device | str | None = None,
    channels_last: bool = True,
    amp: bool = False,
    on_epoch_end: Callable[[int, nn.Module], dict[str, Any]] | None = None,
    progress: bool = True,
    groups: np.ndarray | torch.Tensor | None = None,
    masks: np.ndarray | torch.Tensor | None = None,
    run_dir: str | os.PathLike | None = None,
    config: dict[str, Any] | None = None,
    stop_after: int | None = None,
    runtime: Runtime | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` in place with cross-entropy and return one record per epoch.

    images: uint8 (N, H, W, 3) or float (N, 3, H, W) in [0, 1], numpy or torch; held
    whole on ``device`` (default: the runtime's, else CUDA if available, else CPU). labels: int (N,).
    Epochs draw as the module docstring says and drop the last incomplete batch; ``augment`` (e.g.
    :class:`~flowaug.augmentation.baselines.CropFlip`; None: no augmentation) runs on each float batch.
    ``optimizer`` is "sgd" (Nesterov, momentum 0.9) or "adam" (AdamW); the learning
    rate follows :func:`~flowaug.training.schedules.one_cycle` per step. Same seed, same inputs, same
    device -> same weights. ``amp`` runs forward and loss under bfloat16 autocast (for GPUs; no
    gradient scaler is needed with bfloat16). The model ends in eval mode, contiguous memory format, on ``device``.
    ``on_epoch_end(epoch, model)`` may return extra numbers (e.g. test
    accuracy) that are merged into the epoch record; the model is in eval mode
    during the call.

    ``groups`` (N,) and ``masks`` (N, 1, H, W) in [0, 1] (1 = object) travel with the batches as in
    :func:`train_epoch`: groups to the augmentation; masks to the model when it is a masking model
    (:func:`takes_masks`), else to the augmentation (``augment(x, y, masks=...)``, e.g. FlowAug or
    RegionalColourSwap changing the background only).

    ``run_dir``: after every epoch rank 0 writes ``train_state.pt`` (model, optimizer, scheduler,
    history; atomic) and ``metrics.jsonl`` there; when ``train_state.pt`` exists the call continues
    that run exactly, refusing (:class:`~flowaug.errors.CheckpointError`) a ``config`` other than the
    one it was written with (default: this call's settings). ``stop_after``: return after that epoch
    (a later call with the same settings goes on). ``runtime``: the process group of a DDP run
    (:meth:`Runtime.from_env`); ``batch_size`` is the global batch, split across ranks.

    Record keys: epoch (1-based) and those of :func:`train_epoch`.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    runtime = runtime or Runtime(device=torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    device = runtime.device
    x_all = as_image_tensor(images, device)
    y_all = as_label_tensor(labels, len(x_all), device)
    g_all = None if groups is None else as_label_tensor(groups, len(x_all), device)
    m_all = None if masks is None else torch.as_tensor(masks, dtype=torch.float32, device=device)
    height, width = x_all.shape[1:3] if x_all.dtype == torch.uint8 else x_all.shape[2:]
    if m_all is not None:
        if tuple(m_all.shape) != (len(x_all), 1, height, width):
            raise ValueError(f"masks must have shape ({len(x_all)}, 1, {height}, {width}) to match the images, "
                             f"got {tuple(m_all.shape)}")
        check_finite_unit_range(m_all, "masks", " (1 = object, 0 = background)")
        if not takes_masks(model) and not isinstance(augment, DonorAugmentation):
            raise ValueError(f"masks were given, but the model ({type(model).__name__}) takes no mask and the "
                             f"augmentation ({type(augment).__name__}) takes no masks=: use a masking model "
                             f"(EarlyMasking, LateMasking) or FlowAug / RegionalColourSwap, or drop the masks")
    steps_per_epoch = len(x_all) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({len(x_all)} images)")
    runtime.local_batch(batch_size)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    net = DistributedDataParallel(model) if runtime.world_size > 1 else model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = OPTIMIZERS[optimizer](params, lr, weight_decay)
    total_steps = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: one_cycle(step, total_steps, warmup_fraction))
    config = config if config is not None else {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
        "optimizer": optimizer, "warmup_fraction": warmup_fraction, "label_smoothing": label_smoothing,
        "amp": amp, "channels_last": channels_last, "train_images": len(x_all), "world_size": runtime.world_size}
    state_path = None if run_dir is None else Path(run_dir) / STATE_NAME
    history: list[dict[str, Any]] = []
    if state_path is not None and state_path.exists():
        history = load_train_state(state_path, model, opt, scheduler, config)
    metrics = None if run_dir is None else MetricsLog(Path(run_dir) / METRICS_NAME, runtime)
    show = progress and runtime.is_main
    overall = run_progress(total_steps, len(history) * steps_per_epoch, enabled=show)
    for epoch in range(len(history) + 1, min(epochs, stop_after or epochs) + 1):
        if augment is not None:
            reseed(augment, seed, epoch, runtime.rank + 1)
        overall.set_description(f"training, epoch {epoch}/{epochs}")
        record = train_epoch(net, opt, scheduler, x_all, y_all, batch_size=batch_size, augment=augment,
                             shuffle_generator=seeded_generator(device, seed, epoch),
                             memory_format=memory_format, amp=amp, label_smoothing=label_smoothing,
                             rank=runtime.rank, world_size=runtime.world_size, progress=show,
                             groups=g_all, masks=m_all, overall=overall)
        record = {"epoch": epoch, **record}
        if on_epoch_end is not None:
            model.eval()
            record.update(on_epoch_end(epoch, model))
        history.append(record)
        if state_path is not None and runtime.is_main:
            save_train_state(state_path, model, opt, scheduler, history, config)
            metrics.rewrite(history)
        if show:
            overall.write(format_record(record))
    overall.close()
    runtime.barrier()
    model.to(memory_format=torch.contiguous_format).eval()
    return history
