"""Stitching MLP: corrects the driving keypoints so the head stays attached to the shoulders."""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .sizes import StitchSizes


class StitchMLP(nn.Module):
    def __init__(self, sizes: StitchSizes | None = None):
        super().__init__()
        sizes = sizes or StitchSizes()
        widths = (sizes.input_size, *sizes.hidden_sizes, sizes.output_size)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            v = layer(v)
            if i < len(self.layers) - 1:
                v = F.relu(v)
        return v

    def stitch(self, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        """x_s (1 or B, K, 3), x_d (B, K, 3) -> corrected x_d: a per-keypoint offset plus a
        shared (x, y) shift."""
        b, k = x_d.shape[:2]
        x_s = x_s.expand(b, -1, -1)
        delta = self(torch.cat([x_s.reshape(b, -1), x_d.reshape(b, -1)], dim=1))
        out = x_d + delta[:, :3 * k].reshape(b, k, 3)
        shift = torch.cat([delta[:, 3 * k:3 * k + 2], torch.zeros_like(delta[:, :1])], dim=1)
        return out + shift[:, None, :]
