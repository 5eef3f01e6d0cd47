"""The one augmentation contract of flowaug.

Every augmentation (FlowAug, the baselines, crop+flip, the per-image wrapper) is an
:class:`Augmentation`: an ``nn.Module`` called as ``aug(x)`` -> ``x`` or ``aug(x, y)`` ->
``(x, y)`` that draws from its own CPU ``torch.Generator``. It composes with
``torchvision.transforms.v2.Compose`` (which passes ``(x, y)`` through) and with :class:`Compose`
(the same, with its steps registered as submodules).

Reproducibility: ``generator`` may be an int seed, a CPU generator or None (a generator seeded
from torch's global RNG when the module is built). :func:`reseed` re-seeds every augmentation
inside a module tree from a position (e.g. ``(seed, epoch, rank)``), which is how the recipes
resume exactly. Inside ``DataLoader`` workers each worker draws from a generator derived from
the module's seed and the worker's torch seed, which torch re-draws every epoch, so workers and
epochs differ and a seeded run repeats.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from flowaug.seeding import seeded_generator


def make_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A CPU generator from an int seed, a CPU generator (used as is) or None (seeded from torch's RNG)."""
    if generator is None:
        return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator (draws are made on the CPU and moved), "
                             f"got one on {generator.device}")
        return generator
    if isinstance(generator, bool) or not hasattr(generator, "__index__"):
        raise TypeError(f"generator must be an int seed, a CPU torch.Generator or None, got {generator!r}")
    seed = int(generator.__index__())
    if seed < 0:
        raise ValueError(f"generator seed must be >= 0, got {seed}")
    return torch.Generator().manual_seed(seed)


class Augmentation(nn.Module):
    """Base of every flowaug augmentation: ``(x, y) -> (x, y)``, owning a CPU generator.

    Subclasses implement :meth:`augment` on a batch; ``forward`` returns ``x`` alone when called
    without labels. Images are float (B, 3, H, W) in [0, 1] unless a subclass says more.
    """

    def __init__(self, generator: torch.Generator | int | None = None) -> None:
        super().__init__()
        self.generator = make_generator(generator)
        self._worker_generator: tuple[int, torch.Generator] | None = None

    def manual_seed(self, seed: int) -> "Augmentation":
        """Re-seed this augmentation's generator; returns self."""
        self.generator.manual_seed(seed)
        self._worker_generator = None
        return self

    def call_generator(self) -> torch.Generator:
        """The generator to draw from now: :attr:`generator`, or in a DataLoader worker one derived from
        (its initial seed, the worker's torch seed), which torch re-draws every epoch."""
        worker = torch.utils.data.get_worker_info()
        if worker is None:
            return self.generator
        worker_seed = torch.initial_seed()
        if self._worker_generator is None or self._worker_generator[0] != worker_seed:
            derived = seeded_generator("cpu", self.generator.initial_seed(), worker_seed % 2**63)
            self._worker_generator = (worker_seed, derived)
        return self._worker_generator[1]

    def augment(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        out, labels = self.augment(x, y)
        return out if y is None else (out, labels)


class Compose(nn.Module):
    """Augmentations applied in order, ``(x, y) -> (x, y)`` (``x`` alone without labels).

    Like ``torchvision.transforms.v2.Compose``, but the steps are registered submodules, so
    ``.to(device)``, ``reseed`` and ``state_dict`` reach them (v2.Compose keeps a plain list).
    """

    def __init__(self, steps: list[nn.Module]) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        for step in self.steps:
            if y is None:
                x = step(x)
            else:
                x, y = step(x, y)
        return x if y is None else (x, y)


def reseed(module: nn.Module, *words: int) -> None:
    """Re-seed every :class:`Augmentation` in ``module``'s tree from ``words`` (e.g. seed, epoch, rank)
    and its position in the tree, so a resumed run draws exactly what the uninterrupted one drew."""
    position = 0
    for child in module.modules():
        if isinstance(child, Augmentation):
            child.manual_seed(int(seeded_generator("cpu", *words, position).initial_seed()))
            position += 1
