"""flowaug: semantic data augmentation with normalizing flows."""
from flowaug.attribution import FidoResult, fido
from flowaug.augmentation import (Augmentation, BackgroundTransplant, Compose, FlowAug, FlowAugParams, LatentCache,
                                  RegionalColourSwap)
from flowaug.data.spurious import SpuriousBackgrounds
from flowaug.evaluation import evaluate
from flowaug.flow import DecoupledFlow, FlowConfig, Latents
from flowaug.masking import EarlyMasking, LateMasking, train_mask_predictor
from flowaug.models import build_classifier, load_classifier, save_classifier
from flowaug.pretrained import available_pretrained, load_pretrained
from flowaug.training import PretrainConfig, pretrain

__version__ = "0.1.0"

__all__ = [
    "Augmentation",
    "BackgroundTransplant",
    "Compose",
    "DecoupledFlow",
    "EarlyMasking",
    "FidoResult",
    "FlowAug",
    "FlowAugParams",
    "FlowConfig",
    "LateMasking",
    "LatentCache",
    "Latents",
    "PretrainConfig",
    "RegionalColourSwap",
    "SpuriousBackgrounds",
    "available_pretrained",
    "build_classifier",
    "evaluate",
    "fido",
    "load_classifier",
    "load_pretrained",
    "pretrain",
    "save_classifier",
    "train_mask_predictor",
]
