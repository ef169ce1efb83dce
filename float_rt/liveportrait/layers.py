"""Small building blocks shared by the LivePortrait networks."""
from __future__ import annotations

from torch import nn


class ConvBN(nn.Module):
    """Convolution then batch norm (running statistics in eval), 2-D or 3-D; no activation."""

    def __init__(self, rank: int, cin: int, cout: int, kernel: int, padding: int):
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if rank == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.conv = conv(cin, cout, kernel, padding=padding)
        self.bn = norm(cout)

    def forward(self, x):
        return self.bn(self.conv(x))
