"""Augmentations under one contract (:class:`Augmentation`: ``(x, y) -> (x, y)``, own generator):
FlowAug, its parameters and cache, and the baselines of the recipes."""
from flowaug.augmentation.base import Augmentation, Compose, reseed
from flowaug.augmentation.cache import LatentCache
from flowaug.augmentation.flowaug import FlowAug
from flowaug.augmentation.params import FlowAugParams

__all__ = ["Augmentation", "Compose", "FlowAug", "FlowAugParams", "LatentCache", "reseed"]
