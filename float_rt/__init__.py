"""FLOAT-RT: the FLOAT talking-avatar model and its offline pipeline."""
from .config import EMOTIONS, FloatConfig, ModelConfig, SamplingConfig, load_config
from .errors import CheckpointError, FloatRTError

__all__ = ["EMOTIONS", "FloatConfig", "ModelConfig", "SamplingConfig", "load_config",
           "FloatRTError", "CheckpointError"]
__version__ = "0.1.0"
