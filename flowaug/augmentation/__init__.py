"""Augmentations under one contract (:class:`Augmentation`: ``(x, y) -> (x, y)``, own generator):
FlowAug, its non-learned twin RegionalColourSwap, BackgroundTransplant (all :class:`DonorAugmentation`),
FlowAug's parameters and cache, and the baselines of the recipes."""
from flowaug.augmentation.base import Augmentation, Compose, reseed
from flowaug.augmentation.cache import LatentCache
from flowaug.augmentation.donor import DonorAugmentation
from flowaug.augmentation.flowaug import FlowAug
from flowaug.augmentation.params import FlowAugParams
from flowaug.augmentation.regional import RegionalColourSwap
from flowaug.augmentation.transplant import BackgroundTransplant

__all__ = ["Augmentation", "BackgroundTransplant", "Compose", "DonorAugmentation", "FlowAug", "FlowAugParams",
           "LatentCache", "RegionalColourSwap", "reseed"]
