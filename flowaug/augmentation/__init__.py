"""The FlowAug transform and its latent cache."""
from flowaug.augmentation.cache import LatentCache
from flowaug.augmentation.flowaug import FlowAug

__all__ = ["FlowAug", "LatentCache"]
