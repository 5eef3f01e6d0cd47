"""Per-sample augmentation with ops that draw once per call: call the op once per image, each
image with its own seed, on the CPU, optionally spread over worker processes.

kornia's auto policies (RandAugment, AutoAugment, TrivialAugment) pick one sub-policy per call and
torchvision's AugMix shares its op chains across a batched call, so a per-sample baseline calls
them once per image. That loop is Python-bound (about 1.6 ms per image for kornia's RandAugment),
so :class:`PerImage` can run it in ``workers`` processes. Each image's seed is drawn from the
caller's generator, so the result does not depend on the number of workers or the device.
"""
from __future__ import annotations

import multiprocessing
import weakref
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from flowaug.augmentation.base import Augmentation

_WORKER_OP: nn.Module | None = None  # the op of a worker process, built once by _init_worker


def _init_worker(build_op: Callable[[], nn.Module]) -> None:
    global _WORKER_OP
    torch.set_num_threads(1)
    _WORKER_OP = build_op()


def _apply(op: nn.Module, pixels: np.ndarray, seeds: list[int]) -> np.ndarray:
    """``op`` on each (3, H, W) image of ``pixels`` after seeding torch's global RNG with its seed."""
    out = []
    for image, seed in zip(torch.from_numpy(pixels), seeds):
        torch.manual_seed(seed)
        out.append(op(image))
    return torch.stack(out).reshape(pixels.shape).numpy()


def _apply_in_worker(job: tuple[np.ndarray, list[int]]) -> np.ndarray:
    assert _WORKER_OP is not None, "worker was not initialised"
    return _apply(_WORKER_OP, *job)


class PerImage(Augmentation):
    """An augmentation that calls ``build_op()`` once per image, each with its own seed.

    Args:
        build_op: picklable callable returning the op (e.g. ``functools.partial(RandAugment, n=2, m=10)``);
            the op takes one image (3, H, W) and returns one (kornia's (1, 3, H, W) output is reshaped).
        uint8: feed the op uint8 pixels in [0, 255] (torchvision's AugMix) instead of float in [0, 1].
        workers: processes to spread each batch over (0: in this process, leaving torch's global RNG
            untouched). Workers start on first use (``spawn``) and stop with :meth:`close`.
        generator: seed or CPU generator of the per-image seeds (see :class:`Augmentation`).

    Call: float images (B, 3, H, W) in [0, 1] on any device (and labels); returns images of the
    same shape, dtype and device in [0, 1] (and the labels unchanged).
    """

    def __init__(self, build_op: Callable[[], nn.Module], uint8: bool = False, workers: int = 0,
                 generator: torch.Generator | int | None = None) -> None:
        super().__init__(generator)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an int >= 0, got {workers!r}")
        self.build_op, self.uint8, self.workers = build_op, uint8, workers
        self._op = build_op() if workers == 0 else None
        self._pool = None

    def augment(self, images: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        seeds = torch.randint(0, 2**62, (len(images),), generator=self.call_generator()).tolist()
        pixels = images.detach().to("cpu", torch.float32)
        pixels = (pixels * 255.0).round().to(torch.uint8) if self.uint8 else pixels
        if self.workers == 0:
            with torch.random.fork_rng(devices=[]):
                out = _apply(self._op, pixels.numpy(), seeds)
        else:
            chunks = [(part.numpy(), part_seeds) for part, part_seeds in
                      zip(pixels.tensor_split(self.workers), np.array_split(np.array(seeds, dtype=np.int64),
                                                                             self.workers)) if len(part)]
            out = np.concatenate(self._worker_pool().map(_apply_in_worker,
                                                         [(part, s.tolist()) for part, s in chunks]))
        result = torch.from_numpy(out)
        result = result.float() / 255.0 if self.uint8 else result
        return result.clamp(0.0, 1.0).to(device=images.device, dtype=images.dtype), labels

    def _worker_pool(self):
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(self.workers, _init_worker, (self.build_op,))
            weakref.finalize(self, self._pool.terminate)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (if any); a later call starts new ones."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def extra_repr(self) -> str:
        return f"{self.build_op!r}, uint8={self.uint8}, workers={self.workers}"
