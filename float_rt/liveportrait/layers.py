"""Small building blocks shared by the LivePortrait networks."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from . import fast


class ConvBN(nn.Module):
    """Convolution then batch norm (running statistics in eval), 2-D or 3-D; no activation.

    In eval on the CPU the batch norm runs folded into the convolution (``fast.fold_bn``)."""

    def __init__(self, rank: int, cin: int, cout: int, kernel: int, padding: int):
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if rank == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.conv = conv(cin, cout, kernel, padding=padding)
        self.bn = norm(cout)

    def forward(self, x):
        if not self.training and fast.active(x):
            w, b = fast.fold_bn(self.conv, self.bn, fast.layout_of(x))
            if w.dim() == 5 and fast.winograd3d_ok(self.conv, x):
                return fast.winograd_conv3d(self.conv, w, b, x)
            if w.dim() == 4 and fast.winograd_ok(w, self.conv.stride, self.conv.padding, self.conv.dilation,
                                                 self.conv.groups):
                return fast.winograd_conv3x3(self.conv, "_fast_winograd_bn", w, b, x)
            op = F.conv2d if w.dim() == 4 else F.conv3d
            return op(x, w, b, self.conv.stride, self.conv.padding, self.conv.dilation, self.conv.groups)
        return self.bn(self.conv(x))
