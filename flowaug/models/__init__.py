"""Neural networks: CIFAR classifiers (the flow lives in its own modules)."""
from flowaug.models.classifiers import CLASSIFIERS, build_classifier, load_classifier, save_classifier

__all__ = ["CLASSIFIERS", "build_classifier", "load_classifier", "save_classifier"]
