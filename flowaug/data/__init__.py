"""Datasets: CIFAR-10/100, CIFAR10-B/100-B subgroups, CIFAR-10.1, CIFAR-10-C/100-C, SpuriousBackgrounds."""
from flowaug.data.base import ArrayDataset, to_float_chw
from flowaug.data.cifar import (
    CIFAR10,
    CIFAR10_CLASSES,
    CIFAR100,
    CIFAR100_CLASSES,
    CifarArrays,
    load_cifar,
    load_cifar_labels,
)
from flowaug.data.cifar101 import CIFAR10_1
from flowaug.data.cifar_b import CIFAR10B, CIFAR100B, NUM_SUBGROUPS, load_subgroups
from flowaug.data.cifar_c import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, CIFARC, EXTRA_CORRUPTIONS
from flowaug.data.paths import resolve_data_root
from flowaug.data.masked_folder import MaskedImages, load_masked_folder
from flowaug.data.spurious import SpuriousBackgrounds

__all__ = [
    "ALL_CORRUPTIONS",
    "ArrayDataset",
    "BENCHMARK_CORRUPTIONS",
    "CIFAR10",
    "CIFAR100",
    "CIFAR100B",
    "CIFAR100_CLASSES",
    "CIFAR10B",
    "CIFAR10_1",
    "CIFAR10_CLASSES",
    "CIFARC",
    "CifarArrays",
    "EXTRA_CORRUPTIONS",
    "MaskedImages",
    "NUM_SUBGROUPS",
    "SpuriousBackgrounds",
    "load_cifar",
    "load_cifar_labels",
    "load_masked_folder",
    "load_subgroups",
    "resolve_data_root",
    "to_float_chw",
]
