"""flowaug: semantic data augmentation with normalizing flows."""
__version__ = "0.1.0"

from flowaug.flow import DecoupledFlow, FlowConfig, Latents  # noqa: E402
from flowaug.pretraining import PretrainConfig, pretrain  # noqa: E402
from flowaug.pretrained import available_pretrained, load_pretrained  # noqa: E402
from flowaug.augmentation import FlowAug, LatentCache  # noqa: E402
