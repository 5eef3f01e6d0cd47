"""Classifiers: shared layers (:mod:`~flowaug.models.layers`), CNNs (:mod:`~flowaug.models.cnn`), a
small ViT (:mod:`~flowaug.models.vit`) and the registry with checkpoints (:mod:`~flowaug.models.registry`).
The flow lives in :mod:`flowaug.flow`."""
from flowaug.models.registry import CLASSIFIERS, build_classifier, load_classifier, save_classifier

__all__ = ["CLASSIFIERS", "build_classifier", "load_classifier", "save_classifier"]
