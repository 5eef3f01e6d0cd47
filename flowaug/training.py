"""A small, reusable supervised training loop for CIFAR classifiers.

The whole split lives on the training device as one tensor (uint8 NHWC or
float NCHW); each batch is converted to float, augmented on the device by an
augmentation module (``augment(x, y)``, re-seeded per epoch) and fed to the model. No DataLoader, no workers:
fast on a GPU and simple on a CPU.
"""
from __future__ import annotations

import inspect
import os
import platform
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from flowaug.augmentation.base import reseed
from flowaug.augmentation.donor import DonorAugmentation
from flowaug.data.base import to_float_chw
from flowaug.errors import CheckpointError
from flowaug.fileio import atomic_torch_save, read_checkpoint
from flowaug.validation import check_finite_unit_range

TRAIN_STATE_FORMAT = "flowaug-train-state"
TRAIN_STATE_VERSION = 1


def to_float_images(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) in [0, 255] -> float32 (B, 3, H, W) in [0, 1]; float (B, 3, H, W) passes through."""
    return to_float_chw(batch) if batch.dtype == torch.uint8 else batch.float()


def as_image_tensor(images: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Check an image split and put it on ``device`` unchanged in dtype.

    Accepts uint8 (N, H, W, 3) (the CIFAR array layout) or float (N, 3, H, W) in [0, 1].
    """
    tensor = torch.as_tensor(images)
    if tensor.dtype == torch.uint8:
        if tensor.ndim != 4 or tensor.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (N, H, W, 3), got shape {tuple(tensor.shape)}")
    elif tensor.is_floating_point():
        if tensor.ndim != 4 or tensor.shape[1] != 3:
            raise ValueError(f"float images must be (N, 3, H, W), got shape {tuple(tensor.shape)}")
        if not torch.isfinite(tensor).all() or tensor.min() < 0 or tensor.max() > 1:
            raise ValueError("float images must be finite and in [0, 1]")
    else:
        raise ValueError(f"images must be uint8 (N, H, W, 3) or float (N, 3, H, W), got dtype {tensor.dtype}")
    return tensor.to(device)


def as_label_tensor(labels: np.ndarray | torch.Tensor, count: int, device: torch.device | str) -> torch.Tensor:
    """Check integer labels (count,) and return them as int64 on ``device``."""
    tensor = torch.as_tensor(labels)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {tensor.dtype}")
    if tensor.shape != (count,):
        raise ValueError(f"labels must have shape ({count},) to match the images, got {tuple(tensor.shape)}")
    if count and tensor.min() < 0:
        raise ValueError("labels must be non-negative")
    return tensor.long().to(device)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, lr, weight_decay: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True,
                                                            weight_decay=weight_decay),
    "adam": lambda params, lr, weight_decay: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay),
}


def one_cycle(step: int, total_steps: int, warmup_fraction: float) -> float:
    """Learning-rate multiplier: linear warm-up from 0.1 to 1 over ``warmup_fraction`` of the steps,
    then linear decay to 0 at ``total_steps``."""
    warmup = max(1, int(total_steps * warmup_fraction))
    if step < warmup:
        return 0.1 + 0.9 * step / warmup
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s first ``model name``), else what ``platform`` knows."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The device a run trained on, for its report: the GPU's name, else ``CPU (<model>, <N> cores)``.
    Results can differ in the last digits between CPU models (other vector kernels round differently),
    so reports name the model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({cpu_model()}, {os.cpu_count()} cores)"


def takes_masks(model: nn.Module) -> bool:
    """Whether ``model`` is a masking model: its forward takes a ``mask`` (EarlyMasking, LateMasking,
    SmallViT's token dropping)."""
    return "mask" in inspect.signature(model.forward).parameters


def _synchronize(device: torch.device) -> float:
    """``time.perf_counter()`` after waiting for ``device``'s queued work (so phase times are honest on GPUs)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def run_progress(total_steps: int, done_steps: int = 0, enabled: bool = True,
                 desc: str = "training") -> tqdm:
    """One bar for a whole training run: steps done of all epochs, with an ETA smoothed over many
    steps (tqdm's moving average with factor 0.02), so it stays steady within and across epochs."""
    return tqdm(total=total_steps, initial=done_steps, desc=desc, unit="step", smoothing=0.02, disable=not enabled,
                dynamic_ncols=True)


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
    start = _synchronize(device)
    order = torch.randperm(len(images), generator=shuffle_generator, device=device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    bar = overall if overall is not None else tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    for step in range(steps):
        tick = _synchronize(device)
        index = order[step * batch_size:(step + 1) * batch_size][rank::world_size]
        x, y = to_float_images(images[index]), labels[index]
        side = () if masks is None or not to_model else (masks[index],)
        extra = {} if groups is None else {"groups": groups[index]}
        if masks is not None and not to_model:
            extra["masks"] = masks[index]
        tock = _synchronize(device)
        times["data_seconds"] += tock - tick
        if augment is not None:
            x, y = augment(x, y, **extra)
        tick = _synchronize(device)
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
        times["model_seconds"] += _synchronize(device) - tick
        bar.update()
        if progress and step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    if overall is None:
        bar.close()
    seconds = _synchronize(device) - start
    return {
        "loss": loss_sum.item() / steps,
        "train_accuracy": 100.0 * correct.item() / (steps * local_batch),
        "lr": optimizer.param_groups[0]["lr"],
        "seconds": seconds,
        "images_per_second": steps * batch_size / seconds,
        **times,
    }


def save_train_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, history: list[dict[str, Any]],
                     config: dict[str, Any]) -> None:
    """Atomically write model, optimizer and scheduler state, the per-epoch ``history`` and the run's
    ``config`` (plain data). Resuming is exact when the run derives its generators from (seed, epoch)."""
    atomic_torch_save({
        "format": TRAIN_STATE_FORMAT, "version": TRAIN_STATE_VERSION, "config": config,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "history": history,
    }, path)


def load_train_state(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler,
                     config: dict[str, Any]) -> list[dict[str, Any]]:
    """Restore a :func:`save_train_state` file into the given objects and return its history.

    Raises :class:`CheckpointError` when the file is missing or corrupt or was written with a
    different ``config`` (resuming under other settings would not continue the same run).
    """
    state = read_checkpoint(path, TRAIN_STATE_FORMAT, TRAIN_STATE_VERSION, "training state", "cpu")
    changed = sorted(k for k in set(config) | set(state["config"]) if config.get(k) != state["config"].get(k))
    if changed:
        raise CheckpointError(f"{path} was written with other settings ({', '.join(changed)} differ); "
                              f"resume with the original settings or start a new output folder")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["history"]


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
) -> list[dict[str, Any]]:
    """Train ``model`` in place with cross-entropy and return one record per epoch.

    images: uint8 (N, H, W, 3) or float (N, 3, H, W) in [0, 1], numpy or torch; held
    whole on ``device`` (default: CUDA if available, else CPU). labels: int (N,).
    Each epoch shuffles with a ``torch.Generator`` seeded from ``seed`` and drops the
    last incomplete batch; ``augment`` (e.g. :class:`~flowaug.augmentation.baselines.CropFlip`;
    None: no augmentation) runs on each float batch, re-seeded from (``seed``, epoch).
    ``optimizer`` is "sgd" (Nesterov, momentum 0.9) or "adam" (AdamW); the learning
    rate follows :func:`one_cycle` per step. Same seed, same inputs, same device ->
    same weights. ``amp`` runs forward and loss under bfloat16 autocast (for GPUs; no
    gradient scaler is needed with bfloat16). The model ends in eval mode, contiguous memory format, on ``device``.
    ``on_epoch_end(epoch, model)`` may return extra numbers (e.g. test
    accuracy) that are merged into the epoch record; the model is in eval mode
    during the call.

    ``groups`` (N,) and ``masks`` (N, 1, H, W) in [0, 1] (1 = object) travel with the batches as in
    :func:`train_epoch`: groups to the augmentation; masks to the model when it is a masking model
    (:func:`takes_masks`), else to the augmentation (``augment(x, y, masks=...)``, e.g. FlowAug or
    RegionalColourSwap changing the background only).

    Record keys: epoch (1-based) and those of :func:`train_epoch`.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = OPTIMIZERS[optimizer](params, lr, weight_decay)
    total_steps = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: one_cycle(step, total_steps, warmup_fraction))
    generator = torch.Generator(device=device).manual_seed(seed)
    history: list[dict[str, Any]] = []
    overall = run_progress(total_steps, enabled=progress)
    for epoch in range(1, epochs + 1):
        if augment is not None:
            reseed(augment, seed, epoch)
        overall.set_description(f"training, epoch {epoch}/{epochs}")
        record = train_epoch(model, opt, scheduler, x_all, y_all, batch_size=batch_size, augment=augment,
                             shuffle_generator=generator,
                             memory_format=memory_format, amp=amp, label_smoothing=label_smoothing,
                             progress=progress, groups=g_all, masks=m_all, overall=overall)
        record = {"epoch": epoch, **record}
        if on_epoch_end is not None:
            model.eval()
            record.update(on_epoch_end(epoch, model))
        history.append(record)
        if progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    overall.close()
    model.to(memory_format=torch.contiguous_format).eval()
    return history
