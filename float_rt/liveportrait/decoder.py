"""SPADE decoder: warped feature (B, C, H, W) -> RGB in [0, 1] at 4x (and 2x more by pixel shuffle).

Every normalisation is conditioned on the decoder's own input feature.  The published residual
convolutions are spectrally normalised; in eval that is a fixed rescaling, folded into ``weight``
when the file is loaded (see ``loader``), so here they are plain convolutions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .sizes import DecoderSizes

SPADE_HIDDEN = 128
NUM_MIDDLE = 6


class SpadeNorm(nn.Module):
    """Instance norm (no affine) modulated per pixel by gamma/beta predicted from the condition."""

    def __init__(self, channels: int, cond_channels: int):
        super().__init__()
        self.shared = nn.Conv2d(cond_channels, SPADE_HIDDEN, 3, padding=1)
        self.gamma = nn.Conv2d(SPADE_HIDDEN, channels, 3, padding=1)
        self.beta = nn.Conv2d(SPADE_HIDDEN, channels, 3, padding=1)

    def forward(self, x, cond):
        normed = F.instance_norm(x, eps=1e-5)
        act = F.relu(self.shared(F.interpolate(cond, size=x.shape[2:], mode="nearest")))
        return normed * (1 + self.gamma(act)) + self.beta(act)


class SpadeResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_channels: int):
        super().__init__()
        mid = min(cin, cout)
        self.mod_in = SpadeNorm(cin, cond_channels)
        self.conv_in = nn.Conv2d(cin, mid, 3, padding=1)
        self.mod_out = SpadeNorm(mid, cond_channels)
        self.conv_out = nn.Conv2d(mid, cout, 3, padding=1)
        self.learned_skip = cin != cout
        if self.learned_skip:
            self.mod_skip = SpadeNorm(cin, cond_channels)
            self.conv_skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x, cond):
        skip = self.conv_skip(self.mod_skip(x, cond)) if self.learned_skip else x
        y = self.conv_in(F.leaky_relu(self.mod_in(x, cond), 0.2))
        y = self.conv_out(F.leaky_relu(self.mod_out(y, cond), 0.2))
        return skip + y


class SpadeDecoder(nn.Module):
    def __init__(self, sizes: DecoderSizes | None = None):
        super().__init__()
        sizes = self.sizes = sizes or DecoderSizes()
        c = sizes.in_channels
        self.entry = nn.Conv2d(c, 2 * c, 3, padding=1)
        self.middle = nn.ModuleList(SpadeResBlock(2 * c, 2 * c, c) for _ in range(NUM_MIDDLE))
        self.up_a = SpadeResBlock(2 * c, c, c)
        self.up_b = SpadeResBlock(c, sizes.out_channels, c)
        self.shuffle = 2 if sizes.upscale > 1 else 1
        self.to_rgb = nn.Conv2d(sizes.out_channels, 3 * self.shuffle ** 2, 3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 3, 4H*s, 4W*s) in [0, 1], s = 2 with pixel shuffle."""
        x = self.entry(feature)
        for block in self.middle:
            x = block(x, feature)
        x = self.up_a(F.interpolate(x, scale_factor=2), feature)
        x = self.up_b(F.interpolate(x, scale_factor=2), feature)
        x = self.to_rgb(F.leaky_relu(x, 0.2))
        if self.shuffle > 1:
            x = F.pixel_shuffle(x, self.shuffle)
        return torch.sigmoid(x)


def to_frames(rgb: torch.Tensor) -> torch.Tensor:
    """Decoder output (B, 3, H, W) -> (B, H, W, 3) float32 in [0, 255] (not rounded)."""
    return rgb.permute(0, 2, 3, 1).clamp(0, 1) * 255
