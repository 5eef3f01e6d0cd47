"""flowaug: semantic data augmentation with normalizing flows."""
from flowaug.augmentation import Augmentation, Compose, FlowAug, FlowAugParams, LatentCache
from flowaug.evaluation import evaluate
from flowaug.flow import DecoupledFlow, FlowConfig, Latents
from flowaug.models.classifiers import build_classifier, load_classifier, save_classifier
from flowaug.pretrained import available_pretrained, load_pretrained
from flowaug.pretraining import PretrainConfig, pretrain

__version__ = "0.1.0"

__all__ = [
    "Augmentation",
    "Compose",
    "DecoupledFlow",
    "FlowAug",
    "FlowAugParams",
    "FlowConfig",
    "LatentCache",
    "Latents",
    "PretrainConfig",
    "available_pretrained",
    "build_classifier",
    "evaluate",
    "load_classifier",
    "load_pretrained",
    "pretrain",
    "save_classifier",
]
