"""Training engines: the classifier trainer and the flow pretraining trainer, on one runtime
(process group, progress bar, metrics log) and one checkpoint/resume policy."""
from flowaug.training.checkpoint import check_resume, load_train_state, save_train_state
from flowaug.training.classifier import takes_masks, train_classifier, train_epoch
from flowaug.training.flow_config import PretrainConfig, TrainingDivergedError, kl_weight_at, lr_at
from flowaug.training.flow_trainer import pretrain
from flowaug.training.inputs import as_image_tensor, as_label_tensor
from flowaug.training.runtime import MetricsLog, Runtime, device_name, run_progress
from flowaug.training.schedules import OPTIMIZERS, one_cycle

__all__ = ["MetricsLog", "OPTIMIZERS", "PretrainConfig", "Runtime", "TrainingDivergedError", "as_image_tensor",
           "as_label_tensor", "check_resume", "device_name", "kl_weight_at", "load_train_state", "lr_at", "one_cycle",
           "pretrain", "run_progress", "save_train_state", "takes_masks", "train_classifier",
           "train_epoch"]
