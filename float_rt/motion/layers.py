"""Building blocks of the LIA-style motion autoencoder (pure tensor code).

Weights are stored unscaled and multiplied by 1/sqrt(fan_in) at run time
("equalised learning rate"), as the published checkpoint expects.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


def blur_kernel(gain: float = 1.0) -> torch.Tensor:
    k = torch.tensor(BLUR_TAPS, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum() * gain


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Zero-stuff by ``up``, pad, apply the FIR ``kernel`` per channel, keep every ``down``-th pixel."""
    b, c, h, w = x.shape
    if up > 1:
        stuffed = x.new_zeros(b, c, h * up, w * up)
        stuffed[:, :, ::up, ::up] = x
        x = stuffed
    # Channels are static: a plain int keeps the kernel's shape known when exported.
    k = torch.flip(kernel, (0, 1)).to(x.dtype).expand(int(c), 1, *kernel.shape).contiguous()
    if pad[0] == pad[1]:
        x = F.conv2d(x, k, padding=pad[0], groups=c)    # no padded copy
    else:
        x = F.conv2d(F.pad(x, (pad[0], pad[1], pad[0], pad[1])), k, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def leaky_act(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Biased leaky ReLU with the StyleGAN gain of sqrt(2)."""
    return F.leaky_relu(x + bias, 0.2) * SQRT2


class ScaledLinear(nn.Module):
    """Linear layer with run-time weight scaling; ``bias_init`` as in StyleGAN modulation."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = 1.0 / math.sqrt(in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class ScaledConv2d(nn.Module):
    """Conv with run-time weight scaling; optional blur + stride-2 downsampling."""

    def __init__(self, cin: int, cout: int, k: int, downsample: bool = False, bias: bool = False,
                 padding: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = 1.0 / math.sqrt(cin * k * k)
        self.downsample = downsample
        if downsample:
            p = len(BLUR_TAPS) - 2 + (k - 1)
            self.blur_pad = ((p + 1) // 2, p // 2)
            self.register_buffer("blur", blur_kernel(), persistent=False)
            self.padding = 0
        else:
            self.padding = k // 2 if padding is None else padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample:
            x = upfirdn2d(x, self.blur, pad=self.blur_pad)
            return F.conv2d(x, self.weight * self.scale, self.bias, stride=2)
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class ConvAct(nn.Module):
    """ScaledConv2d followed by the biased leaky activation."""

    def __init__(self, cin: int, cout: int, k: int, downsample: bool = False):
        super().__init__()
        self.conv = ScaledConv2d(cin, cout, k, downsample=downsample)
        self.act_bias = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return leaky_act(self.conv(x), self.act_bias)
