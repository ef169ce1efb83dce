"""SPADE decoder: warped feature (B, C, H, W) -> RGB in [0, 1] at 4x (and 2x more by pixel shuffle).

Every normalisation is conditioned on the decoder's own input feature.  The published residual
convolutions are spectrally normalised; in eval that is a fixed rescaling, folded into ``weight``
when the file is loaded (see ``loader``), so here they are plain convolutions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import fast
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

    def modulate(self, src: fast.Normalised, act: torch.Tensor, slope: float | None) -> torch.Tensor:
        """Fast path: ``leaky_relu(self(x, cond), slope)`` for ``src`` = x under its instance norm and
        ``act`` = relu(shared(cond at x's size)), with gamma and beta as one convolution; where its
        transforms are compiled the norm is applied in its output transform, else the result is
        built in place."""
        w, b = fast.concat_convs(self, "_fast_gamma_beta", [self.gamma, self.beta], [1.0, 0.0])
        fused = fast.spade_fused(self, "_fast_gamma_beta_winograd", w, b, act, src, slope)
        if fused is not None:
            return fused
        gamma_beta = (fast.winograd_conv3x3(self, "_fast_gamma_beta_winograd", w, b, act) if fast.winograd_ok(w)
                      else F.conv2d(act, w, b, padding=1))
        normed = src.normed()
        one_plus_gamma, beta = gamma_beta.split(normed.shape[1], dim=1)
        out = torch.addcmul(beta, normed, one_plus_gamma)
        return F.leaky_relu_(out, slope) if slope is not None else out


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

    def _norms(self) -> list[SpadeNorm]:
        return [self.mod_in, self.mod_out] + ([self.mod_skip] if self.learned_skip else [])

    def forward(self, x, cond):
        if fast.active(x):
            return self._forward_fast(x, cond)
        skip = self.conv_skip(self.mod_skip(x, cond)) if self.learned_skip else x
        y = self.conv_in(F.leaky_relu(self.mod_in(x, cond), 0.2))
        y = self.conv_out(F.leaky_relu(self.mod_out(y, cond), 0.2))
        return skip + y

    def _forward_fast(self, x, cond):
        """Channels-last; the condition branch of all norms as one convolution (they read the same input)."""
        norms = self._norms()
        scale = x.shape[2] // cond.shape[2]
        w, b = fast.concat_convs(self, "_fast_shared", [m.shared for m in norms])
        if scale > 1 and tuple(x.shape[2:]) == (scale * cond.shape[2], scale * cond.shape[3]):
            # the condition is the decoder input upsampled by `scale`: convolve it on its own grid
            act = fast.upsampled_cond_conv(self, w, b, cond, scale)
        else:
            if cond.shape[2:] != x.shape[2:]:
                cond = F.interpolate(cond, size=x.shape[2:], mode="nearest")
            act = F.relu_(fast.winograd_conv3x3(self, "_fast_shared_winograd", w, b, cond)
                          if fast.winograd_ok(w) else F.conv2d(cond, w, b, padding=1))
        acts = act.split(SPADE_HIDDEN, dim=1)
        src = fast.Normalised(x)   # the input and skip norms normalise the same x
        if self.learned_skip:   # no activation before the skip convolution
            skip = fast.conv2d_cl(self.conv_skip, self.mod_skip.modulate(src, acts[2], None))
        y = fast.conv2d_cl(self.conv_in, self.mod_in.modulate(src, acts[0], 0.2))
        del src
        y = fast.conv2d_cl(self.conv_out, self.mod_out.modulate(fast.Normalised(y), acts[1], 0.2))
        if self.learned_skip:
            return y.add_(skip)
        return y.add_(x)


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
        conv = _call
        if fast.active(feature):
            # channels-last: every convolution below runs in oneDNN's native layout, no reorders
            feature = feature.contiguous(memory_format=torch.channels_last)
            conv = fast.conv2d_cl
        x = conv(self.entry, feature)
        for block in self.middle:
            x = block(x, feature)
        x = self.up_a(F.interpolate(x, scale_factor=2), feature)
        x = self.up_b(F.interpolate(x, scale_factor=2), feature)
        x = conv(self.to_rgb, F.leaky_relu(x, 0.2))
        if self.shuffle > 1:
            x = F.pixel_shuffle(x, self.shuffle)
        return torch.sigmoid(x)


def _call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


def to_frames(rgb: torch.Tensor) -> torch.Tensor:
    """Decoder output (B, 3, H, W) -> (B, H, W, 3) float32 in [0, 255] (not rounded)."""
    return rgb.permute(0, 2, 3, 1).clamp(0, 1) * 255
