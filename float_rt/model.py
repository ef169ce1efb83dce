"""The FLOAT model: motion autoencoder, audio/emotion encoders and the FMT in one module."""
from __future__ import annotations

import math

import torch
from torch import nn
from transformers import Wav2Vec2Config

from .audio import AudioEncoder, EmotionEncoder
from .config import EMOTIONS, ModelConfig
from .fmt import FlowMatchingTransformer
from .motion import MotionAutoencoder


class FloatModel(nn.Module):
    def __init__(self, cfg: ModelConfig, audio_config: Wav2Vec2Config, emotion_config: Wav2Vec2Config):
        super().__init__()
        self.cfg = cfg
        self.motion = MotionAutoencoder(cfg)
        self.audio = AudioEncoder(audio_config, cfg.dim_a, cfg.only_last_features)
        self.emotion = EmotionEncoder(emotion_config)
        self.fmt = FlowMatchingTransformer(cfg)
        self.labels = EMOTIONS
        self.eval()

    def num_frames(self, num_samples: int) -> int:
        """Video frames for an audio clip: ceil(duration * fps)."""
        return math.ceil(num_samples * self.cfg.fps / self.cfg.sampling_rate)

    @torch.no_grad()
    def encode_audio(self, input_values: torch.Tensor) -> torch.Tensor:
        t = self.num_frames(input_values.shape[1])
        return self.audio(input_values, t, self.cfg.sampling_rate, self.cfg.fps)

    @property
    def device(self) -> torch.device:
        return self.fmt.pos_embed.device
