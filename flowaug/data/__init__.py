"""Datasets: CIFAR-10/100, CIFAR10-B/100-B subgroups, CIFAR-10.1, CIFAR-10-C/100-C."""
from flowaug.data.paths import resolve_data_root

__all__ = ["resolve_data_root"]
