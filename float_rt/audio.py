"""Audio encoder: wav2vec2 (transformers) + FLOAT's frame alignment and projection.

The 50 Hz convolutional features are linearly resampled (align_corners) onto the
video frame clock *before* the transformer; the per-layer outputs of all
transformer layers are concatenated per frame and projected.  The transformer is
run layer by layer here, so the per-layer outputs do not depend on how a given
transformers release reports hidden states.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model


def pad_to_frames(input_values: torch.Tensor, num_frames: int, sampling_rate: int, fps: float) -> torch.Tensor:
    """Replicate the last sample up to ``num_frames`` whole frames (the official clip padding)."""
    need = int(num_frames * sampling_rate / fps)
    if input_values.shape[1] < need:
        pad = input_values[:, -1:].expand(-1, need - input_values.shape[1])
        input_values = torch.cat([input_values, pad], dim=1)
    return input_values


def run_layers(w2v: Wav2Vec2Model, hidden: torch.Tensor, all_layers: bool) -> torch.Tensor:
    """Transformer part of wav2vec2 on projected features (B, T, H).

    Returns (B, T, L*H) concatenated layer outputs, or (B, T, H) last hidden state.
    """
    enc = w2v.encoder
    stable = w2v.config.do_stable_layer_norm
    hidden = hidden + enc.pos_conv_embed(hidden)
    if not stable:
        hidden = enc.layer_norm(hidden)
    outs = []
    for layer in enc.layers:
        hidden = layer(hidden)
        if isinstance(hidden, tuple):
            hidden = hidden[0]
        outs.append(hidden)
    if stable:
        # Stable-layer-norm models normalise the final output only.
        outs[-1] = hidden = enc.layer_norm(hidden)
    return torch.cat(outs, dim=-1) if all_layers else hidden


class AudioEncoder(nn.Module):
    def __init__(self, w2v_config: Wav2Vec2Config, dim_out: int, only_last_features: bool = False):
        super().__init__()
        self.wav2vec2 = Wav2Vec2Model(w2v_config)
        self.all_layers = not only_last_features
        h = w2v_config.hidden_size
        self.proj = nn.Linear(h * (w2v_config.num_hidden_layers if self.all_layers else 1), dim_out)
        self.norm = nn.LayerNorm(dim_out)

    def conv_features(self, input_values: torch.Tensor) -> torch.Tensor:
        """(B, n) normalised 16 kHz audio -> (B, L, C) 50 Hz features."""
        return self.wav2vec2.feature_extractor(input_values).transpose(1, 2)

    def encode_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Frame-aligned conv features (B, T, C) -> projected audio features (B, T, dim_out)."""
        hidden, _ = self.wav2vec2.feature_projection(feats)
        return F.silu(self.norm(self.proj(run_layers(self.wav2vec2, hidden, self.all_layers))))

    def encode_frames(self, input_values: torch.Tensor) -> torch.Tensor:
        """(B, n) normalised audio of whole frames -> (B, n // spf, dim_out), frame j from conv feature 2j.

        For a clip of T whole frames the offline align_corners resampling of its 2T - 1 conv
        features lands exactly on the even ones, so this is the offline computation as well.
        """
        return self.encode_features(self.conv_features(input_values)[:, ::2])

    @staticmethod
    def to_frames(feats: torch.Tensor, num_frames: int) -> torch.Tensor:
        return F.interpolate(feats.transpose(1, 2), size=num_frames, mode="linear",
                             align_corners=True).transpose(1, 2)

    @torch.no_grad()
    def forward(self, input_values: torch.Tensor, num_frames: int, sampling_rate: int, fps: float) -> torch.Tensor:
        """Whole-clip encoding (offline semantics): (B, n) -> (B, num_frames, dim_out)."""
        input_values = pad_to_frames(input_values, num_frames, sampling_rate, fps)
        return self.encode_features(self.to_frames(self.conv_features(input_values), num_frames))


class EmotionEncoder(nn.Module):
    """wav2vec2 speech-emotion classifier: mean-pooled hidden states -> dense/tanh -> logits."""

    def __init__(self, w2v_config: Wav2Vec2Config):
        super().__init__()
        self.wav2vec2 = Wav2Vec2Model(w2v_config)
        h = w2v_config.hidden_size
        self.dense = nn.Linear(h, h)
        self.out_proj = nn.Linear(h, w2v_config.num_labels)

    @torch.no_grad()
    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """(B, n) normalised 16 kHz audio -> (B, num_labels) probabilities."""
        hidden = self.wav2vec2(input_values).last_hidden_state.mean(dim=1)
        return F.softmax(self.out_proj(torch.tanh(self.dense(hidden))), dim=-1)
