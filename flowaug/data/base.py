"""The one in-memory dataset every loader returns, plus array validation and uint8 -> float conversion."""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from flowaug.errors import DataFormatError

IMAGE_SHAPE = (32, 32, 3)


def to_float_chw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 HWC ``(..., H, W, 3)`` -> float32 CHW ``(..., 3, H, W)`` in [0, 1] (same device as a tensor input)."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    return x.movedim(-1, -3).to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def to_float_images(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) in [0, 255] -> float32 (B, 3, H, W) in [0, 1]; float (B, 3, H, W) passes through as float32."""
    return to_float_chw(batch) if batch.dtype == torch.uint8 else batch.float()


def validate_labels(labels: np.ndarray, num_classes: int, source: str | os.PathLike) -> np.ndarray:
    """Check ``labels`` are 1-D integers in [0, num_classes); return them as int64.

    ``source`` (usually the file path) is named in the :class:`DataFormatError`.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(
            f"{source}: labels have shape {labels.shape} and dtype {labels.dtype}, expected 1-D integers"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataFormatError(
            f"{source}: labels range over [{labels.min()}, {labels.max()}], expected [0, {num_classes - 1}]"
        )
    return labels.astype(np.int64)


def validate_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    source: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray]:
    """Check ``images`` uint8 (N,32,32,3) and ``labels`` integer (N,) in [0, num_classes).

    Returns ``(images, labels as int64)``. ``source`` (usually the file path)
    is named in the :class:`DataFormatError` raised on any violation.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataFormatError(f"{source}: images have dtype {images.dtype}, expected uint8")
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise DataFormatError(f"{source}: images have shape {images.shape}, expected (N, 32, 32, 3) HWC")
    labels = validate_labels(labels, num_classes, source)
    if len(labels) != len(images):
        raise DataFormatError(f"{source}: {len(images)} images but {len(labels)} labels")
    return images, labels


class ArrayDataset(Dataset):
    """Images held as one uint8 NHWC array, with labels and optional subgroups.

    Item ``i`` is ``(image float32 (3,32,32) in [0,1], label int)``, or
    ``(image, label, subgroup int)`` when the dataset has subgroups.

    Attributes:
        images: uint8 (N, 32, 32, 3) HWC RGB.
        labels: int64 (N,).
        classes: class names in label order.
        description: human-readable origin, e.g. "CIFAR-10 (JPEG-q75 proxy)".
        subgroups: int64 (N,) or ``None``.
        num_subgroups: number of subgroup ids (0 when there are no subgroups).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: tuple[str, ...],
        description: str,
        subgroups: np.ndarray | None = None,
        num_subgroups: int = 0,
    ) -> None:
        self.images, self.labels = validate_arrays(images, labels, len(classes), description)
        self.classes = tuple(classes)
        self.description = description
        self.subgroups = None if subgroups is None else np.asarray(subgroups, dtype=np.int64)
        if self.subgroups is not None and self.subgroups.shape != self.labels.shape:
            raise DataFormatError(
                f"{description}: {len(self.subgroups)} subgroup ids for {len(self.labels)} images"
            )
        self.num_subgroups = num_subgroups

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple:
        image = to_float_chw(self.images[index])
        label = int(self.labels[index])
        if self.subgroups is None:
            return image, label
        return image, label, int(self.subgroups[index])

    def tensors(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split: ``x`` float32 (N,3,32,32) in [0,1] and ``y`` int64 (N,), on ``device``.

        The uint8 array is moved first and converted there, so a GPU does the conversion.
        """
        x = to_float_chw(torch.from_numpy(self.images).to(device))
        y = torch.from_numpy(self.labels).to(device)
        return x, y

    def __repr__(self) -> str:
        extra = f", num_subgroups={self.num_subgroups}" if self.subgroups is not None else ""
        return f"{type(self).__name__}({self.description!r}, n={len(self)}{extra})"
