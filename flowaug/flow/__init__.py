"""The DecoupledFlow generative model: configuration, layers, nuisance code, model."""
from flowaug.flow.config import PRESETS, FlowConfig, get_preset
from flowaug.flow.model import DecoupledFlow, Latents, save_flow

__all__ = ["PRESETS", "DecoupledFlow", "FlowConfig", "Latents", "get_preset", "save_flow"]
