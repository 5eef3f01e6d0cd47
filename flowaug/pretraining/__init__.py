"""Flow pretraining: dataset specs, the training engine and the ``flowaug pretrain`` command."""
from flowaug.pretraining.datasets import PretrainData, load_pretrain_data
from flowaug.pretraining.loop import PretrainConfig, TrainingDivergedError, lr_at, pretrain

__all__ = ["PretrainConfig", "PretrainData", "TrainingDivergedError", "load_pretrain_data", "lr_at", "pretrain"]
