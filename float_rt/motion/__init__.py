"""LIA-style motion autoencoder: encoder, motion directions, synthesis decoder."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .decoder import SynthesisDecoder
from .direction import MotionDirections
from .encoder import MotionEncoder


class MotionAutoencoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.encoder = MotionEncoder(cfg)
        self.direction = MotionDirections(cfg.dim_w, cfg.dim_m)
        self.decoder = SynthesisDecoder(cfg)

    @torch.no_grad()
    def encode_reference(self, image: torch.Tensor):
        """image (B,3,S,S) in [-1,1] -> (s_r, r_s_lambda, r_s, feats)."""
        s_r, feats = self.encoder(image)
        coeffs = self.encoder.motion_coefficients(s_r)
        return s_r, coeffs, self.direction(coeffs), feats

    @torch.no_grad()
    def decode(self, s_r: torch.Tensor, motion: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        """Render frames for motion latents (N, dim_w) of one reference (s_r: (1, dim_w))."""
        return self.decoder(s_r + motion, feats)


__all__ = ["MotionAutoencoder", "MotionEncoder", "SynthesisDecoder", "MotionDirections"]
