"""SpuriousBackgrounds: a controlled benchmark where the background is a strong, known shortcut.

Ten classes of procedural shapes (the shape alone determines the class) with random position,
scale, rotation, colour and texture, on backgrounds of ten groups. What the group decides is the
``cue`` (:data:`CUES`):

- ``"colour"`` (default): the background's hue (ten hues), with a coarse blotchy texture and
  brightness drawn independently;
- ``"texture"``: the background's pattern family (:data:`PATTERNS`: stripe orientations and
  frequencies, checks, dots, rings, a grid and grain) with hue, saturation and brightness drawn
  uniformly, independently of class and group. No colour operation turns one family into another;
- ``"both"``: the group decides hue and pattern family.

In the ``train``, ``val`` and ``test`` splits a class-c image gets background group c with
probability ``correlation`` (rho), otherwise one of the other nine groups uniformly;
``test_shift`` fills every class x group cell equally. Labels, groups and shapes are the same
for every cue (one random stream per split); only the backgrounds differ. Every image comes with
its exact foreground mask. Generated deterministically from ``seed`` in seconds, no download (in
the spirit of Colored MNIST and the Backgrounds Challenge's Mixed-Rand; Xiao et al. 2021).

``flowaug make-spurious --out DIR [--cue texture]`` writes all four splits to one ``.npz``;
``SpuriousBackgrounds.from_npz(path, split)`` reads a split back without regenerating it.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from flowaug.data.base import to_float_chw
from flowaug.errors import DataFormatError, DatasetNotFoundError
from flowaug.fileio import atomic_path
from flowaug.seeding import seeded_generator

SHAPES = ("disk", "square", "triangle", "x-cross", "ring", "bar", "diamond", "plus", "half-disk", "l-shape")
NUM_GROUPS = 10
SPLITS = {"train": 0, "val": 1, "test": 2, "test_shift": 3}
DEFAULT_SIZES = {"train": 20000, "val": 2000, "test": 5000, "test_shift": 5000}
MAX_ROTATION = math.pi / 6  # +-30 degrees: no class turns into another
CUES = ("colour", "texture", "both")
PATTERNS = ("stripes-0", "stripes-90", "stripes-45", "stripes-135", "wide-stripes-0", "checks", "dots",
            "rings", "grid", "grain")
"""The texture cue's pattern families, group k = ``PATTERNS[k]`` (stripes-A: period 4 px at angle A
degrees; wide stripes: period 8 px; checks: 4 px squares; dots on a 6 px lattice; rings of period
5 px around a random centre; grid lines every 6 px; grain: independent per-pixel noise)."""
PATTERN_CONTRAST = (0.07, 0.12)  # half the peak-to-trough brightness swing: the background stays apart from the objects


def pattern_fields(groups: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Brightness patterns (N, size, size) in [-1, 1] of family ``PATTERNS[groups[i]]``, each with a
    random phase, period within +-10% and orientation within +-8 degrees."""
    n = len(groups)
    yy, xx = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    jitter = rng.uniform(0.9, 1.1, n)[:, None, None]
    tilt = np.deg2rad(rng.uniform(-8, 8, n))[:, None, None]
    phase = rng.uniform(0, 2 * math.pi, (n, 2))[:, :, None, None]
    centre = rng.uniform(0, size, (n, 2))[:, :, None, None]
    grain = rng.choice([-1.0, 1.0], (n, size, size))

    def along(angle_degrees: float) -> np.ndarray:  # (N, S, S) coordinate across stripes at that angle
        angle = np.deg2rad(angle_degrees) + tilt
        return xx * np.sin(angle) + yy * np.cos(angle)

    def wave(coordinate: np.ndarray, period: float, which: int = 0) -> np.ndarray:
        return np.sin(2 * math.pi * coordinate / (period * jitter) + phase[:, which])

    def lattice(period: float) -> tuple[np.ndarray, np.ndarray]:  # distance to the lines
        u = (along(0) / jitter + phase[:, 0] / (2 * math.pi) * period) % period
        v = (along(90) / jitter + phase[:, 1] / (2 * math.pi) * period) % period
        return np.minimum(u, period - u), np.minimum(v, period - v)

    du, dv = lattice(6.0)
    rings = np.hypot(xx - centre[:, 0], yy - centre[:, 1])
    families = np.stack([
        np.sign(wave(along(0), 4.0)),
        np.sign(wave(along(90), 4.0)),
        np.sign(wave(along(45), 4.0 * math.sqrt(2) / 1.5)),
        np.sign(wave(along(135), 4.0 * math.sqrt(2) / 1.5)),
        np.sign(wave(along(0), 8.0)),
        np.sign(wave(along(0), 8.0) * wave(along(90), 8.0, 1)),
        np.where(np.hypot(3.0 - du, 3.0 - dv) <= 1.6, 1.0, -0.6),
        np.sign(wave(rings, 5.0)),
        np.where(np.minimum(du, dv) <= 0.75, 1.0, -0.4),
        grain,
    ])  # (10, N, S, S)
    return families[groups, np.arange(n)]


def shape_masks(labels: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean masks (N, H, W) of shape ``labels[i]`` in shape coordinates u, v (N, H, W) (unit radius)."""
    r = np.sqrt(u ** 2 + v ** 2)
    au, av = np.abs(u), np.abs(v)
    inside = {
        "disk": r <= 1.0,
        "square": np.maximum(au, av) <= 0.8,
        "triangle": (v >= -0.6) & (1.7 * au + v <= 0.95),
        "x-cross": (np.minimum(np.abs(u - v), np.abs(u + v)) <= 0.35) & (np.maximum(au, av) <= 0.85),
        "ring": (r <= 1.0) & (r >= 0.55),
        "bar": (au <= 1.0) & (av <= 0.32),
        "diamond": au + av <= 1.1,
        "plus": (np.minimum(au, av) <= 0.3) & (np.maximum(au, av) <= 0.95),
        "half-disk": (r <= 1.0) & (v >= 0.0),
        "l-shape": (np.maximum(au, av) <= 0.9) & ((u <= -0.3) | (v >= 0.3)),
    }
    stacked = np.stack([inside[name] for name in SHAPES])  # (10, N, H, W)
    return stacked[labels, np.arange(len(labels))]


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] (broadcastable arrays) -> RGB (..., 3) in [0, 1]."""
    k = np.stack([(n + h * 6.0) % 6.0 for n in (5.0, 3.0, 1.0)], axis=-1)
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def render(labels: np.ndarray, groups: np.ndarray, size: int, rng: np.random.Generator, cue: str = "colour"
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images uint8 (N, size, size, 3), masks bool (N, size, size) and the backgrounds alone uint8.

    The image equals its background exactly outside the mask and its foreground inside. ``cue``
    says what the group decides (see the module docstring).
    """
    n = len(labels)
    grid = (np.arange(size) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    radius = rng.uniform(0.35, 0.6, n)[:, None, None]
    centre = rng.uniform(-1.0, 1.0, (n, 2))[:, :, None, None] * (0.95 - radius[:, None])
    angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION, n)[:, None, None]
    dx, dy = xx - centre[:, 0], yy - centre[:, 1]
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / radius
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / radius
    masks = shape_masks(labels, u, -v)

    hue = (groups + rng.uniform(-0.03, 0.03, n)) / NUM_GROUPS
    if cue == "texture":
        hue = rng.random(n)
    base = hsv_to_rgb(hue, rng.uniform(0.5, 0.9, n), rng.uniform(0.4, 0.7, n))  # (N, 3)
    if cue == "colour":
        coarse = rng.normal(0.0, 0.07, (n, 4, 4, 1))
        texture = np.repeat(np.repeat(coarse, math.ceil(size / 4), 1), math.ceil(size / 4), 2)[:, :size, :size]
    else:
        texture = rng.uniform(*PATTERN_CONTRAST, (n, 1, 1, 1)) * pattern_fields(groups, size, rng)[..., None]
    background = base[:, None, None, :] + texture + rng.normal(0.0, 0.02, (n, size, size, 1))

    dark = rng.random(n) < 0.5  # foregrounds far from the background's brightness, either way
    value = np.where(dark, rng.uniform(0.05, 0.25, n), rng.uniform(0.85, 1.0, n))
    fg = hsv_to_rgb(rng.random(n), rng.uniform(0.0, 0.8, n), value)
    stripes = 0.06 * np.sin(rng.uniform(2, 6, n)[:, None, None] * (u + v) * math.pi)[..., None]
    foreground = fg[:, None, None, :] + stripes

    to_uint8 = lambda x: (np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8)  # noqa: E731
    backgrounds = to_uint8(background)
    images = np.where(masks[..., None], to_uint8(foreground), backgrounds)
    return images, masks, backgrounds


def render_batch(num_images: int, cue: str = "colour", seed: int = 0, size: int = 32
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (N,3,S,S) in [0, 1], masks (N,1,S,S) float (1 = object) and the true backgrounds
    (N,3,S,S), the renderer's without objects; classes and groups drawn uniformly (seeded)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, num_images)
    images, masks, backgrounds = render(labels, rng.integers(0, NUM_GROUPS, num_images), size, rng, cue)
    return to_float_chw(images), torch.from_numpy(masks)[:, None].float(), to_float_chw(backgrounds)


def draw_groups(labels: np.ndarray, correlation: float, rng: np.random.Generator) -> np.ndarray:
    """Group of each image: its class with probability ``correlation``, else one of the other groups."""
    aligned = rng.random(len(labels)) < correlation
    other = (labels + rng.integers(1, NUM_GROUPS, len(labels))) % NUM_GROUPS
    return np.where(aligned, labels, other)


def background_group(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The background colour group (B,) int64 of images (B,3,H,W) in [0,1]: the group whose hue is
    nearest the hue of the mean background colour (``masks`` (B,1,H,W), 1 = foreground).

    Exact on the benchmark's own images (their hues stay within 0.03 of the group centre, 0.1
    apart); on augmented images it says which group a reader would see.
    """
    background = 1.0 - masks.to(images.dtype)
    colour = (images * background).sum((2, 3)) / background.sum((2, 3)).clamp_min(1.0)  # (B, 3)
    r, g, b = colour.unbind(1)
    hue = torch.atan2(math.sqrt(3.0) * (g - b), 2.0 * r - g - b) / (2.0 * math.pi)  # in (-0.5, 0.5]
    return torch.round(hue * NUM_GROUPS).long() % NUM_GROUPS


@dataclass(frozen=True)
class SpuriousArrays:
    """A split in memory: images uint8 (N,S,S,3), labels and groups int64 (N,), masks bool (N,S,S)."""

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    masks: np.ndarray


class SpuriousBackgrounds(Dataset):
    """One split of the benchmark as a ``torch`` dataset.

    Args:
        split: "train", "val", "test" (same correlation) or "test_shift" (every class x group cell
            equally filled).
        correlation: rho in [0, 1], the probability that a class-c image has background group c
            (0.1 = no correlation with 10 groups).
        num_images: images in the split (default: :data:`DEFAULT_SIZES`).
        size: image height = width in pixels.
        seed: the benchmark's seed; each split draws from its own stream of it.
        cue: what the background group decides: "colour" (hue), "texture" (pattern family) or
            "both" (:data:`CUES`, see the module docstring).

    Items are ``(image float (3,S,S) in [0,1], label, group, mask float (1,S,S) in {0,1})``;
    :meth:`tensors` gives the whole split at once.
    """

    def __init__(self, split: str = "train", correlation: float = 0.95, num_images: int | None = None,
                 size: int = 32, seed: int = 0, cue: str = "colour") -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if cue not in CUES:
            raise ValueError(f"unknown cue {cue!r}; choose one of {', '.join(CUES)}")
        if isinstance(correlation, bool) or not isinstance(correlation, (int, float)) or not 0 <= correlation <= 1:
            raise ValueError(f"correlation must be a number in [0, 1], got {correlation!r}")
        num_images = DEFAULT_SIZES[split] if num_images is None else num_images
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be a positive int, got {num_images!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an int >= 8, got {size!r}")
        self.split, self.correlation, self.size, self.seed, self.cue = split, float(correlation), size, seed, cue
        stream = seeded_generator("cpu", seed, SPLITS[split]).initial_seed()
        rng = np.random.default_rng(stream)
        if split == "test_shift":
            cells = np.arange(num_images) % (len(SHAPES) * NUM_GROUPS)
            labels, groups = cells % len(SHAPES), cells // len(SHAPES)
        else:
            labels = rng.integers(0, len(SHAPES), num_images)
            groups = draw_groups(labels, self.correlation, rng)
        images, masks, _ = render(labels, groups, size, rng, cue)
        self.arrays = SpuriousArrays(images, labels.astype(np.int64), groups.astype(np.int64), masks)

    @classmethod
    def from_npz(cls, path: str | os.PathLike, split: str = "train") -> "SpuriousBackgrounds":
        """Read ``split`` from a file written by :func:`write_npz` (``flowaug make-spurious``)."""
        path = Path(path)
        if not path.is_file():
            raise DatasetNotFoundError(f"{path} does not exist; write it with flowaug make-spurious --out DIR")
        with np.load(path, allow_pickle=False) as data:
            try:
                settings = json.loads(str(data["settings"]))
                arrays = SpuriousArrays(*(data[f"{split}_{name}"] for name in ("images", "labels", "groups", "masks")))
            except KeyError as error:
                raise DataFormatError(f"{path} is not a SpuriousBackgrounds file with split {split!r} ({error})") from None
        dataset = cls.__new__(cls)
        dataset.split, dataset.correlation = split, settings["correlation"]
        dataset.size, dataset.seed, dataset.arrays = settings["size"], settings["seed"], arrays
        dataset.cue = settings.get("cue", "colour")
        return dataset

    @property
    def description(self) -> str:
        return (f"SpuriousBackgrounds {self.split} (cue {self.cue}, rho={self.correlation:g}, {len(self)} images, "
                f"{self.size}x{self.size}, seed {self.seed})")

    def __len__(self) -> int:
        return len(self.arrays.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, torch.Tensor]:
        a = self.arrays
        image = to_float_chw(a.images[index])
        return image, int(a.labels[index]), int(a.groups[index]), torch.from_numpy(a.masks[index])[None].float()

    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        """The split as (images float (N,3,S,S), labels (N,), groups (N,), masks float (N,1,S,S)) on ``device``."""
        a = self.arrays
        images = to_float_chw(torch.from_numpy(a.images).to(device))
        return (images, torch.from_numpy(a.labels).to(device), torch.from_numpy(a.groups).to(device),
                torch.from_numpy(a.masks).to(device)[:, None].float())


def write_npz(path: str | os.PathLike, correlation: float = 0.95, size: int = 32, seed: int = 0,
              sizes: dict[str, int] | None = None, cue: str = "colour") -> Path:
    """Generate every split and write them atomically to one ``.npz`` (keys ``<split>_<array>``)."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    arrays = {}
    for split in SPLITS:
        dataset = SpuriousBackgrounds(split, correlation, sizes[split], size, seed, cue)
        arrays.update({f"{split}_{name}": value for name, value in asdict(dataset.arrays).items()})
    settings = {"correlation": float(correlation), "size": size, "seed": seed, "sizes": sizes, "cue": cue}
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, settings=np.array(json.dumps(settings)), **arrays)
    return path
