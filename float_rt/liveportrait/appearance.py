"""Appearance encoder: a 256x256 RGB crop -> the 3-D feature volume f_s (B, C, D, H/4, W/4)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBN
from .sizes import AppearanceSizes


class Residual3d(nn.Module):
    """Pre-activation residual block: (BN, ReLU, conv3x3x3) twice, plus the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn_a = nn.BatchNorm3d(channels)
        self.conv_a = nn.Conv3d(channels, channels, 3, padding=1)
        self.bn_b = nn.BatchNorm3d(channels)
        self.conv_b = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x):
        y = self.conv_a(F.relu(self.bn_a(x)))
        y = self.conv_b(F.relu(self.bn_b(y)))
        return y + x


class AppearanceEncoder(nn.Module):
    def __init__(self, sizes: AppearanceSizes | None = None):
        super().__init__()
        s = self.sizes = sizes or AppearanceSizes()
        if s.reshape_channel * s.reshape_depth != s.max_features:
            raise ValueError(f"reshape_channel*reshape_depth ({s.reshape_channel}*{s.reshape_depth}) "
                             f"must equal max_features ({s.max_features})")
        self.stem = ConvBN(2, s.image_channel, s.width(0), 3, 1)
        self.down = nn.ModuleList(ConvBN(2, s.width(i), s.width(i + 1), 3, 1) for i in range(s.num_down_blocks))
        self.project = nn.Conv2d(s.width(s.num_down_blocks), s.max_features, 1)
        self.res3d = nn.ModuleList(Residual3d(s.reshape_channel) for _ in range(s.num_resblocks))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(image))
        for block in self.down:
            x = F.avg_pool2d(F.relu(block(x)), 2)
        x = self.project(x)
        b, _, h, w = x.shape
        # The 2-D channels are read as (channel, depth) of a 3-D volume.
        f = x.view(b, self.sizes.reshape_channel, self.sizes.reshape_depth, h, w)
        for block in self.res3d:
            f = block(f)
        return f
