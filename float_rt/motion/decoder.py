"""Flow-warping StyleGAN2-style synthesis decoder, batched over frames.

Modulated convolutions are computed in the activation-scaled form
``conv(x * style, W) * demod`` instead of building a weight per sample: the
result is mathematically the same, the weights stay constant, and a batch of
frames is one ordinary convolution (fast on oneDNN/cuDNN, exportable to ONNX).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .layers import ScaledLinear, blur_kernel, leaky_act, upfirdn2d


class ModulatedConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.modulation = ScaledLinear(style_dim, cin, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(cin * k * k)
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = k // 2
        if upsample:
            self.register_buffer("blur", blur_kernel(gain=4.0), persistent=False)

    def demod_factors(self, style: torch.Tensor) -> torch.Tensor:
        w2 = (self.weight * self.scale).pow(2).sum((2, 3))          # (cout, cin)
        return torch.rsqrt(style.pow(2) @ w2.T + 1e-8)              # (B, cout)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        style = self.modulation(latent)                             # (B, cin)
        x = x * style[:, :, None, None]
        w = self.weight * self.scale
        if self.upsample:
            out = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
        else:
            out = F.conv2d(x, w, padding=self.padding)
        if self.demodulate:
            out = out * self.demod_factors(style)[:, :, None, None]
        if self.upsample:
            out = upfirdn2d(out, self.blur, pad=(1, 1))
        return out


class StyledConv(nn.Module):
    def __init__(self, cin: int, cout: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv(cin, cout, 3, style_dim, upsample=upsample)
        # Noise injection strength: present in the checkpoint, unused at inference (no noise).
        self.noise_weight = nn.Parameter(torch.zeros(1))
        self.act_bias = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return leaky_act(self.conv(x, latent), self.act_bias)


class Upsample2x(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", blur_kernel(gain=4.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=2, pad=(2, 1))


class ToRGB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, cin, 1, 1))
        self.scale = 1.0 / math.sqrt(cin)
        self.act_bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return leaky_act(F.conv2d(x, self.weight * self.scale), self.act_bias) + self.bias


def flow_base_grid(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """Identity sampling grid (h, w, 2) as (x, y) in [-1, 1]."""
    lin = torch.linspace(-1.0, 1.0, w, dtype=torch.float64, device=like.device).to(like.dtype)
    lin_y = torch.linspace(-1.0, 1.0, h, dtype=torch.float64, device=like.device).to(like.dtype)
    return torch.stack(torch.meshgrid(lin, lin_y, indexing="xy"), dim=-1)


def warp(out: torch.Tensor, feat: torch.Tensor, x: torch.Tensor,
         like: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp the reference features by the predicted flow ``out[:, :2]``; returns (masked warp, mask).
    ``like``: the masked warp is written in that tensor's memory layout (grid_sample's own output is
    plain NCHW whatever its input's)."""
    b, _, h, w = x.shape
    if out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous():
        # slices of a channels-last tensor are strided by its 3 channels: one dense pass each instead
        grid = torch.tanh(out).permute(0, 2, 3, 1)[..., :2] + flow_base_grid(h, w, x)
        mask = torch.sigmoid(out)[:, 2:3]
    else:
        grid = torch.tanh(out[:, :2]).permute(0, 2, 3, 1) + flow_base_grid(h, w, x)
        mask = torch.sigmoid(out[:, 2:3])
    if feat.shape[0] != b:
        feat = feat.expand(b, -1, -1, -1)
    sampled = F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if (like is None or like.shape != sampled.shape or torch.is_grad_enabled() or torch.jit.is_tracing()
            or torch.compiler.is_compiling()):      # graphs and autograd get the plain product
        return sampled * mask, mask
    return torch.mul(sampled, mask, out=torch.empty_like(like)), mask


class ToFlow(nn.Module):
    """Predicts a warp field and a mask; warps the reference features into the frame."""

    def __init__(self, cin: int, style_dim: int):
        super().__init__()
        self.conv = ModulatedConv(cin, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, latent, feat, flow_skip=None):
        out = self.conv(x, latent) + self.bias
        if flow_skip is not None:
            out = out + flow_skip
        warped, mask = warp(out, feat, x)
        return warped, warped + x * (1.0 - mask), out


class SynthesisDecoder(nn.Module):
    """Renders latent codes (B, dim_w) with the reference features into images in [-1, 1]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        log_size = int(math.log2(cfg.input_size))
        c4 = cfg.width(4)
        self.const = nn.Parameter(torch.randn(1, c4, 4, 4))
        self.first = StyledConv(c4, c4, cfg.dim_w)
        ups, convs, rgbs, flows = [], [], [], []
        cin = c4
        for res_log in range(3, log_size + 1):
            cout = cfg.width(2 ** res_log)
            ups.append(StyledConv(cin, cout, cfg.dim_w, upsample=True))
            convs.append(StyledConv(cout, cout, cfg.dim_w))
            rgbs.append(ToRGB(cout))
            flows.append(ToFlow(cout, cfg.dim_w))
            cin = cout
        self.up_convs = nn.ModuleList(ups)
        self.convs = nn.ModuleList(convs)
        self.to_rgbs = nn.ModuleList(rgbs)
        self.to_flows = nn.ModuleList(flows)
        self.upsample = Upsample2x()

    def forward(self, latent: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        b = latent.shape[0]
        x = self.first(self.const.expand(b, -1, -1, -1), latent)
        rgb = flow = None
        for up, conv, to_rgb, to_flow, feat in zip(self.up_convs, self.convs, self.to_rgbs,
                                                   self.to_flows, feats):
            x = conv(up(x, latent), latent)
            warped, x, flow = to_flow(x, latent, feat, None if flow is None else self.upsample(flow))
            rgb_here = to_rgb(warped)
            rgb = rgb_here if rgb is None else rgb_here + self.upsample(rgb)
        return rgb
