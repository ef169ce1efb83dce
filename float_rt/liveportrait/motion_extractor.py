"""Motion extractor: a ConvNeXt-V2 backbone and linear heads for pose bins, shift, expression,
scale and canonical keypoints of the source crop."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kinematics import MotionInfo
from .sizes import MotionSizes

EPS = 1e-6  # every LayerNorm of this backbone


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor, computed explicitly (as the published
    backbone does) rather than through a permute and F.layer_norm."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        x = (x - mu) / torch.sqrt(var + EPS)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class NeXtBlock(nn.Module):
    """Depthwise 7x7, LayerNorm, 4x MLP with GELU and global response normalisation, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.spatial = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.expand = nn.Linear(dim, 4 * dim)
        self.grn_gamma = nn.Parameter(torch.zeros(1, 1, 1, 4 * dim))
        self.grn_beta = nn.Parameter(torch.zeros(1, 1, 1, 4 * dim))
        self.reduce = nn.Linear(4 * dim, dim)

    def forward(self, x):
        y = self.spatial(x).permute(0, 2, 3, 1)  # channels last for the MLP
        y = F.gelu(self.expand(self.norm(y)))
        energy = torch.linalg.vector_norm(y, ord=2, dim=(1, 2), keepdim=True)
        y = self.grn_gamma * (y * (energy / (energy.mean(dim=-1, keepdim=True) + EPS))) + self.grn_beta + y
        return x + self.reduce(y).permute(0, 3, 1, 2)


class Transition(nn.Module):
    """Between stages: channel norm then a 2x2 stride-2 convolution."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm = ChannelNorm(cin)
        self.conv = nn.Conv2d(cin, cout, 2, stride=2)

    def forward(self, x):
        return self.conv(self.norm(x))


class NeXtBackbone(nn.Module):
    def __init__(self, depths: tuple[int, ...], dims: tuple[int, ...], in_channels: int = 3):
        super().__init__()
        self.stem_conv = nn.Conv2d(in_channels, dims[0], 4, stride=4)
        self.stem_norm = ChannelNorm(dims[0])
        self.transitions = nn.ModuleList(Transition(dims[i], dims[i + 1]) for i in range(len(dims) - 1))
        self.stages = nn.ModuleList(nn.Sequential(*(NeXtBlock(d) for _ in range(n))) for n, d in zip(depths, dims))
        self.head_norm = nn.LayerNorm(dims[-1], eps=EPS)

    def forward(self, x):
        x = self.stages[0](self.stem_norm(self.stem_conv(x)))
        for transition, stage in zip(self.transitions, self.stages[1:]):
            x = stage(transition(x))
        return self.head_norm(x.mean((-2, -1)))


class MotionExtractor(nn.Module):
    def __init__(self, sizes: MotionSizes | None = None):
        super().__init__()
        sizes = self.sizes = sizes or MotionSizes()
        width, k, bins = sizes.dims[-1], sizes.num_kp, sizes.num_bins
        self.backbone = NeXtBackbone(sizes.depths, sizes.dims)
        self.canonical = nn.Linear(width, 3 * k)
        self.scale = nn.Linear(width, 1)
        self.pitch = nn.Linear(width, bins)
        self.yaw = nn.Linear(width, bins)
        self.roll = nn.Linear(width, bins)
        self.shift = nn.Linear(width, 3)
        self.expression = nn.Linear(width, 3 * k)

    def forward(self, image: torch.Tensor) -> MotionInfo:
        """``image`` (B, 3, H, W) RGB in [0, 1] -> raw head outputs (angles as bin logits)."""
        h = self.backbone(image)
        return MotionInfo(scale=self.scale(h), pitch=self.pitch(h), yaw=self.yaw(h), roll=self.roll(h),
                          t=self.shift(h), exp=self.expression(h), kp=self.canonical(h))
