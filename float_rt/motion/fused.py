"""A faster inference form of the synthesis decoder: same weights, same function.

Rewrites (each exact up to float rounding):
- Weights are scaled once at build time, and the demodulation norms are precomputed.
- The activation's bias and sqrt(2) gain move into the demodulation (leaky ReLU is
  positively homogeneous): a styled conv is scale -> conv -> one fused multiply-add ->
  in-place leaky ReLU, instead of six passes over the activations.
- With one frame, a layer whose weights are smaller than its input activations gets its
  modulation folded into the weights instead (the high-resolution layers).
- The blurs are depthwise convolutions with built-in padding (no padded copies), and the
  2x upsampling of the skip images is one depthwise transposed convolution.
- Run it on channels-last tensors (`to_channels_last`): oneDNN's convolutions,
  transposed convolutions and grid_sample are several times faster that way on CPU.

Weights stay constant and batches stay dynamic, so the same module exports to ONNX.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .decoder import ModulatedConv, StyledConv, SynthesisDecoder, ToFlow, ToRGB, warp
from .. import winograd
from ..packed import cached, fast_cpu
from .layers import SQRT2

WINOGRAD_PLAN = winograd.Plan(4, 3)
# Narrowest convolution (channels in and out) that gains from Winograd: 128 with the transforms as
# PyTorch ops; 64 compiled (float_rt.winograd_c).  One 512-px frame on a 2-core AMD EPYC: 127.3 ms
# (PyTorch transforms), 115.4 (compiled), 111.0 (compiled, the 64-channel convs at 256 px too),
# 112.6-113.8 (also the 32-channel ones at 512 px).
WINOGRAD_MIN_CHANNELS = 128
WINOGRAD_MIN_CHANNELS_COMPILED = 64


class _FusedModConv(nn.Module):
    """Modulated conv + (optional) demodulation, bias and leaky ReLU."""

    def __init__(self, conv: ModulatedConv, act_bias: torch.Tensor | None):
        super().__init__()
        self.modulation = conv.modulation
        w = conv.weight.detach() * conv.scale
        self.upsample, self.demodulate = conv.upsample, conv.demodulate
        self.padding = conv.padding
        self.register_buffer("w2", w.pow(2).sum((2, 3)))
        self.gain = SQRT2 if act_bias is not None else 1.0
        # Transposed convolutions take (in, out, k, k).
        self.register_buffer("weight", w.transpose(0, 1).contiguous() if self.upsample else w)
        self.register_buffer("bias", None if act_bias is None else act_bias.detach().reshape(1, -1, 1, 1) * SQRT2)
        if self.upsample:
            c = w.shape[0]
            self.register_buffer("blur", conv.blur.flip((0, 1)).expand(c, 1, 4, 4).contiguous())
        self.weight_mod = True      # allowed to fold modulation into weights for single frames
        self.winograd = False       # allowed to run wide 3x3 convolutions by Winograd (channels-last CPU)

    def _winograd(self, x: torch.Tensor) -> winograd.Prepared | None:
        """The weights in Winograd's domain when this convolution takes that path: a plain 3x3 one, at
        least 128 channels in and out (64 where the transforms are compiled), on at least 32x32
        pixels (fewer tiles leave the products too short to gain; measured on a 2-core AMD EPYC with
        the transforms as PyTorch ops: 512 ch at 32 px 8.2 vs 9.6 ms, 256 at 64 px 6.1 vs 9.6, 128 at
        128 px 7.7 vs 9.6; 512 at 16 px and 64 at 256 px lose; compiled, see ``WINOGRAD_MIN_CHANNELS``)."""
        o, i, k, _ = self.weight.shape
        least = WINOGRAD_MIN_CHANNELS_COMPILED if winograd.compiled(WINOGRAD_PLAN) else WINOGRAD_MIN_CHANNELS
        if (not self.winograd or self.upsample or k != 3 or self.padding != 1 or min(i, o) < least
                or x.shape[2] * x.shape[3] < 1024 or not fast_cpu(x)):
            return None
        # kept across layout changes (``set_channels_last`` stores the same values anew); rebuilt
        # when the weights are changed in place
        key = self.weight._version
        hit = self.__dict__.get("_prepared")
        if hit is None or hit[0] != key:
            hit = (key, winograd.Prepared(self.weight, None, WINOGRAD_PLAN))
            self.__dict__["_prepared"] = hit
        return hit[1]

    def _conv(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The convolution (+ ``bias``, added by the convolution itself where it can)."""
        if self.upsample:
            out = F.conv_transpose2d(x, w, stride=2)
            out = F.conv2d(out, self.blur, padding=1, groups=self.blur.shape[0])
            return out if bias is None else out.add_(bias)
        return F.conv2d(x, w, None if bias is None else bias.flatten(), padding=self.padding)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        style = self.modulation(latent)                                   # (B, I)
        scale = None
        if self.demodulate:
            scale = torch.rsqrt(style.pow(2) @ self.w2.T + 1e-8) * self.gain   # (B, O)
        prepared = self._winograd(x)
        if prepared is not None:
            # constant weights in the transformed domain: the style scales the input instead
            out = winograd.conv2d(x * style[:, :, None, None], prepared, 1)
            if scale is not None:
                s = scale[:, :, None, None]
                out = torch.addcmul(self.bias, out, s) if self.bias is not None else out.mul_(s)
            elif self.bias is not None:
                out = out.add_(self.bias)
        elif self.weight_mod and x.shape[0] == 1 and self.weight.numel() < x.numel() and not torch.jit.is_tracing():
            # One frame: fold style and demodulation into the weights (cheaper than the activations here).
            w = self.weight
            if self.upsample:   # (I, O, k, k)
                w = w * style[0][:, None, None, None]
                if scale is not None:
                    w = w * scale[0][None, :, None, None]
            else:               # (O, I, k, k)
                w = w * style[0][None, :, None, None]
                if scale is not None:
                    w = w * scale[0][:, None, None, None]
            out = self._conv(x, w, self.bias)
        else:
            out = self._conv(x * style[:, :, None, None], self.weight)
            if scale is not None:
                s = scale[:, :, None, None]
                out = torch.addcmul(self.bias, out, s) if self.bias is not None else out * s
            elif self.bias is not None:
                out = out + self.bias
        return F.leaky_relu_(out, 0.2) if self.bias is not None and self.demodulate else out


class _FusedStyledConv(nn.Module):
    def __init__(self, sc: StyledConv):
        super().__init__()
        self.conv = _FusedModConv(sc.conv, sc.act_bias)

    def forward(self, x, latent):
        return self.conv(x, latent)


class _FusedUpsample(nn.Module):
    """upfirdn2d(up=2, symmetric 4x4 FIR, pad (2, 1)) == depthwise transposed conv, stride 2, padding 1."""

    def __init__(self, kernel: torch.Tensor, channels: int = 3):
        super().__init__()
        self.register_buffer("weight", kernel.flip((0, 1)).expand(channels, 1, 4, 4).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.weight, stride=2, padding=1, groups=x.shape[1])


class _FusedToFlow(nn.Module):
    def __init__(self, tf: ToFlow):
        super().__init__()
        self.conv = _FusedModConv(tf.conv, None)
        self.register_buffer("bias", tf.bias.detach())

    def flow(self, x, latent, flow_skip=None):
        out = self.conv(x, latent) + self.bias
        return out if flow_skip is None else out + flow_skip

    def forward(self, x, latent, feat, flow_skip=None):
        out = self.flow(x, latent, flow_skip)
        warped, mask = warp(out, feat, x, like=x)
        return warped, torch.addcmul(warped, x, 1.0 - mask), out


class _FusedToRGB(nn.Module):
    def __init__(self, tr: ToRGB):
        super().__init__()
        self.register_buffer("weight", tr.weight.detach() * tr.scale * SQRT2)
        self.register_buffer("act_bias", tr.act_bias.detach().flatten() * SQRT2)
        self.register_buffer("bias", tr.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(F.conv2d(x, self.weight, self.act_bias), 0.2) + self.bias

    def of_warp(self, flow: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """``self(warp(flow, feat, ...)[0])`` with the 1x1 projection to RGB taken before the warp: both are
        linear per channel (and zero outside the image), so they commute, and the mask, one value per
        pixel, scales the projection.  Sampling 3 channels instead of C is where the time goes."""
        masked, _ = warp(flow, self._projected(feat), flow)
        return F.leaky_relu(masked + self.act_bias.reshape(1, -1, 1, 1), 0.2) + self.bias

    def _projected(self, feat: torch.Tensor) -> torch.Tensor:
        """The reference features projected to RGB (no bias), kept for the next frame of the same
        reference (one entry: the features are the same tensor from frame to frame)."""
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return F.conv2d(feat, self.weight)
        # contiguous: grid_sample is fastest on planes
        return cached(self, "_projection", (feat, self.weight), lambda: F.conv2d(feat, self.weight).contiguous())


class FusedDecoder(nn.Module):
    """Drop-in for `SynthesisDecoder.forward(latent, feats)` at inference; built from a loaded decoder."""

    def __init__(self, dec: SynthesisDecoder, weight_mod: bool = True):
        super().__init__()
        self.register_buffer("const", dec.const.detach())
        self.first = _FusedStyledConv(dec.first)
        self.up_convs = nn.ModuleList(_FusedStyledConv(m) for m in dec.up_convs)
        self.convs = nn.ModuleList(_FusedStyledConv(m) for m in dec.convs)
        self.to_rgbs = nn.ModuleList(_FusedToRGB(m) for m in dec.to_rgbs)
        self.to_flows = nn.ModuleList(_FusedToFlow(m) for m in dec.to_flows)
        self.upsample = _FusedUpsample(dec.upsample.kernel)
        for m in self.modules():
            if isinstance(m, _FusedModConv):
                m.weight_mod = weight_mod
        self.eval()

    def forward(self, latent: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        """``SynthesisDecoder.forward`` over the fused layers, except at the last (largest) scale: there
        the warped features only make the RGB image (nothing follows them), so it is warped from the
        reference features already projected to RGB (``_FusedToRGB.of_warp``)."""
        b = latent.shape[0]
        # one frame: the constant itself, not an expanded view (which no longer reads as channels-last)
        x = self.first(self.const if b == 1 else self.const.expand(b, -1, -1, -1), latent)
        rgb = flow = None
        last = len(self.up_convs) - 1
        for i, (up, conv, to_rgb, to_flow, feat) in enumerate(zip(self.up_convs, self.convs, self.to_rgbs,
                                                                   self.to_flows, feats)):
            x = conv(up(x, latent), latent)
            skip = None if flow is None else self.upsample(flow)
            if i == last:
                rgb_here = to_rgb.of_warp(to_flow.flow(x, latent, skip), feat)
            else:
                warped, x, flow = to_flow(x, latent, feat, skip)
                rgb_here = to_rgb(warped)
            rgb = rgb_here if rgb is None else rgb_here + self.upsample(rgb)
        return rgb

    def set_winograd(self, on: bool) -> None:
        """Let the wide 3x3 modulated convolutions run by Winograd (channels-last CPU tensors only)."""
        for m in self.modules():
            if isinstance(m, _FusedModConv):
                m.winograd = on

    def set_channels_last(self, on: bool) -> None:
        """Start from a channels-last constant (every activation after it follows), or a plain one; the
        convolution weights in the same layout (oneDNN would otherwise convert them on every call)."""
        layout = torch.channels_last if on else torch.contiguous_format
        self.const = self.const.contiguous(memory_format=layout)
        for m in self.modules():
            if isinstance(m, _FusedModConv):
                m.weight = m.weight.contiguous(memory_format=layout)


def to_channels_last(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    return [f.contiguous(memory_format=torch.channels_last) for f in feats]
