"""Appearance/motion encoder: image -> identity latent s_r, motion coefficients, skip features."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig
from .layers import ConvAct, ScaledConv2d, ScaledLinear


class ResDown(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = ConvAct(cin, cin, 3)
        self.conv2 = ConvAct(cin, cout, 3, downsample=True)
        self.skip = ScaledConv2d(cin, cout, 1, downsample=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


class MotionEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        size = cfg.input_size
        log_size = int(math.log2(size))
        if 2 ** log_size != size or size < 8:
            raise ValueError(f"input_size must be a power of two >= 8, got {size}")
        self.stem = ConvAct(3, cfg.width(size), 1)
        blocks, cin = [], cfg.width(size)
        for res_log in range(log_size, 2, -1):
            cout = cfg.width(2 ** (res_log - 1))
            blocks.append(ResDown(cin, cout))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head = ScaledConv2d(cin, cfg.dim_w, 4, padding=0)
        dims = [cfg.dim_w] * 5 + [cfg.dim_m]
        self.motion_fc = nn.ModuleList(ScaledLinear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the identity latent (B, dim_w) and the skip features, coarsest (8x8) first."""
        h = self.stem(image)
        feats = [h]
        for block in self.blocks:
            h = block(h)
            feats.append(h)
        latent = self.head(h).flatten(1)
        # The decoder warps the features from 8x8 up to full size; the 4x4 map is unused.
        return latent, feats[::-1][1:]

    def motion_coefficients(self, latent: torch.Tensor) -> torch.Tensor:
        for fc in self.motion_fc:
            latent = fc(latent)
        return latent
