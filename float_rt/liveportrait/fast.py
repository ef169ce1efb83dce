"""Faster CPU paths of the renderer, each computing what the plain path computes (fp32 products
in another order, within ~1e-6 relative), selected per call.

- BatchNorm (eval) folded into the convolution before it: ``w * g/sqrt(v+eps)``, ``(b-m) * g/sqrt(v+eps) + beta``.
- The warp's dense-motion hourglass runs channels-last-3d, and its 7x7x7 mask convolution (142 -> 22
  channels) by FFT over 16x16 output tiles (``float_rt.fftconv``: ~12 GFLOP instead of 140, ~1e-6
  relative); ``without_fft()`` turns just that path off, and the convolution then runs as one 2-D
  convolution of the 16 depth slices with the 7 depth taps stacked as 154 outputs (oneDNN computes
  output channels in blocks of 16: 22 would cost 32), summed after.
- Its 7x7 occlusion head (2272 -> 1 channel: a convolution oneDNN runs at a tenth of its speed) as a
  product with its 49 taps as outputs, read straight from the channels-last-3d volume, the taps
  then summed into place by ``F.fold``.
- The decoder runs channels-last (oneDNN's native layout: no reorder of each activation), with its
  instance norms computed in place of ``F.instance_norm`` (which would copy a channels-last input),
  gamma and beta of each SPADE norm as one convolution (``1 +`` folded into gamma's bias), and the
  condition branch of every SPADE norm of a block in one convolution (they all read the same input).
- The decoder's 3x3 convolutions with enough channels in and out (all but the last block's
  64-channel ones and the RGB head), SPADE gamma/beta and condition convolutions included, by
  Winograd F(4x4, 3x3) (``float_rt.winograd``: 4x fewer multiplications, ~3e-6 relative);
  ``without_winograd()`` turns just that path off.  The warp's wide 3x3 (BN-folded) convolution and
  its hourglass's wide 3x3x3 ones likewise, over (H, W), each transformed position's product a
  3-tap convolution along the depth.
- That condition is the decoder's 64x64 input upsampled (nearest) to 128 or 256: a 3x3 convolution
  of it is computed on the 64x64 grid, each output phase (s*i+p, s*j+q) by a 2x2 kernel whose taps
  are sums of the 3x3 taps that land on the same coarse pixel, or 2x1, 1x2, 1x1 where all three
  taps of a row or column land on one coarse pixel (the inner phases at s = 4): 2.25x fewer
  products at s = 2, 3.2x at s = 4.

- Where a C compiler is at hand (``float_rt.native``): the Winograd transforms compiled
  (``float_rt.winograd_c``), so narrower convolutions take Winograd too; each SPADE norm applied in
  the compiled output transform of its gamma/beta convolution (``spade_fused``); the upsampled
  condition's convolution as its nine taps on the coarse grid with compiled sums
  (``float_rt.upsample_c``); the warp's trilinear samples compiled and written in their reader's
  layout (``float_rt.sample_c``).  Each falls back to the PyTorch form above without one.

Derived weights are cached on the module and rebuilt when a parameter changes (``_version``), as
``float_rt.packed`` does.  ``reference_paths()`` turns every fast path off in this thread (tests
compare both); they are off anyway off the CPU, under autocast, with gradients, or for non-fp32.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import fftconv, sample_c, upsample_c, winograd, winograd_c
from ..packed import cached, fast_cpu, plain, switched_off, unpacked

# One switch for every fast path of the model layer: float_rt.packed's.
reference_paths = unpacked


active = fast_cpu


# ---- the warp's trilinear samples, compiled, written in their reader's layout ----------------------------------

def candidate_volume(f: torch.Tensor, motions: torch.Tensor, heat: torch.Tensor) -> torch.Tensor | None:
    """The dense-motion net's input ``cat([heat(0 for the background), grid_sample(f, motion_k)], per k)``
    as (B, K1*(C+1), D, H, W) channels-last-3d, each candidate sampled (``float_rt.sample_c``) straight
    into its channels; None without the compiled sampler.  f (B, C, D, H, W); motions (B, K1, D, H, W, 3);
    heat (B, K1-1, D, H, W)."""
    sample = sample_c.sampler()
    if sample is None:
        return None
    b, c, d, h, w = f.shape
    n = motions.shape[1]
    buf = f.new_empty(b, d, h, w, n, c + 1)
    buf[..., 0, 0] = 0.0
    buf[..., 1:, 0] = heat.permute(0, 2, 3, 4, 1)
    grids = motions.contiguous()
    for i in range(b):
        volume = f[i:i + 1].permute(0, 2, 3, 4, 1).contiguous()                # (1, D, H, W, C)
        step = n * (c + 1)
        sample(volume, grids[i], buf[i, :, :, :, :, 1:], (c + 1, h * w * step, w * step, step, 1))
    return buf.view(b, d, h, w, n * (c + 1)).permute(0, 4, 1, 2, 3)


def warped_planes(owner: nn.Module, f_s: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor | None:
    """``grid_sample(f_s, deformation).reshape(B, C*D, H, W)`` as a channels-last 2-D tensor (the mix
    convolution's layout, channel c*D + d), sampled by ``float_rt.sample_c`` from a channels-last copy of
    f_s kept while the same f_s comes back; None without the compiled sampler."""
    sample = sample_c.sampler()
    if sample is None:
        return None
    b = deformation.shape[0]
    shared = f_s.shape[0] == 1 or f_s.stride(0) == 0
    source = f_s[:1] if shared else f_s
    volume = cached(owner, "_fast_source_volume", (source,), lambda: source.permute(0, 2, 3, 4, 1).contiguous())
    _, c, d, h, w = source.shape
    _, do, ho, wo, _ = deformation.shape
    out = f_s.new_empty(b, ho, wo, c * do)
    sample(volume, deformation.contiguous(), out, (ho * wo * c * do, 1, wo * c * do, c * do, do))
    return out.permute(0, 3, 1, 2)


# ---- the hourglass's pooling and upsampling, keeping channels-last-3d ------------------------------------------

def channels_last_3d(x: torch.Tensor) -> bool:
    return x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d)


def pool_hw(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool3d(x, (1, 2, 2))`` of a channels-last-3d x, channels-last-3d out (PyTorch's returns
    a contiguous tensor, which each following convolution would reorder)."""
    b, c, d, h, w = x.shape
    if h % 2 or w % 2:
        return F.avg_pool3d(x, (1, 2, 2)).contiguous(memory_format=torch.channels_last_3d)
    v = x.permute(0, 2, 3, 4, 1)                                             # (B, D, H, W, C), a view
    out = v[:, :, 0::2, 0::2] + v[:, :, 1::2, 0::2]     # four strided reads of C-long runs (a sum over
    out += v[:, :, 0::2, 1::2]                          # the cells' own dims is 40x slower)
    out += v[:, :, 1::2, 1::2]
    return out.mul_(0.25).permute(0, 4, 1, 2, 3)


def upsample_hw(x: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=(1, 2, 2))`` (nearest) of a channels-last-3d x, channels-last-3d out."""
    b, c, d, h, w = x.shape
    pixels = x.permute(0, 2, 3, 4, 1)[:, :, :, None, :, None]                 # (B, D, H, 1, W, 1, C)
    out = pixels.expand(b, d, h, 2, w, 2, c).reshape(b, d, 2 * h, 2 * w, c)
    return out.permute(0, 4, 1, 2, 3)


# ---- batch norm folded into the convolution -----------------------------------------------------------------

def layout_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last(_3d) for a tensor stored channels-last (and not also plain contiguous), else contiguous."""
    if x.is_contiguous():
        return torch.contiguous_format
    for fmt in ((torch.channels_last,) if x.dim() == 4 else (torch.channels_last_3d,) if x.dim() == 5 else ()):
        if x.is_contiguous(memory_format=fmt):
            return fmt
    return torch.contiguous_format


def fold_bn(conv: nn.Module, bn: nn.Module, layout: torch.memory_format = torch.contiguous_format
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The conv's weight and bias with the eval batch norm after it folded in, the weight stored in
    ``layout`` (that of the input: a conv would otherwise convert it on every call)."""
    def build():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        w = conv.weight * scale.reshape(-1, *[1] * (conv.weight.dim() - 1))
        b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        return w.contiguous(memory_format=layout), ((b - bn.running_mean) * scale + bn.bias).contiguous()
    return cached(conv, f"_fast_folded_{layout}", (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean,
                                                   bn.running_var), build)


# ---- decoder helpers ----------------------------------------------------------------------------------------

def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``F.instance_norm(x, eps=eps)`` (no affine, biased variance), keeping x's memory layout: for one
    sample the instance statistics are the batch statistics, and the CPU batch norm computes them
    and normalises in one vectorised kernel (a channels-last ``var_mean`` over (H, W) is ~4x slower)."""
    if x.shape[0] > 1:
        return torch.cat([instance_norm(x[i:i + 1], eps) for i in range(x.shape[0])])
    return F.batch_norm(x, None, None, None, None, True, 0.0, eps)


class Normalised:
    """x (channels-last) under an instance norm, computed once for every SPADE norm that reads it: its
    statistics where the compiled fused kernel applies the norm, the normalised tensor otherwise."""

    def __init__(self, x: torch.Tensor, eps: float = 1e-5):
        self.x, self.eps = x, eps
        self._stats = self._normed = None

    def stats(self, kernels) -> tuple[torch.Tensor, torch.Tensor]:
        if self._stats is None:
            self._stats = kernels.instance_stats(self.x, self.eps)
        return self._stats

    def normed(self) -> torch.Tensor:
        if self._normed is None:
            self._normed = instance_norm(self.x, self.eps)
        return self._normed


def spade_fused(owner: nn.Module, name: str, weight: torch.Tensor, bias: torch.Tensor, act: torch.Tensor,
                src: Normalised, slope: float | None) -> torch.Tensor | None:
    """``leaky(instance_norm(x) * (1 + gamma) + beta)`` from the (1 + gamma, beta) convolution of ``act``,
    the norm applied in its compiled output transform (no gamma/beta tensors); None where that path
    does not run (narrow convolution, no compiled transforms, Winograd off)."""
    kernels = winograd_c.kernels(WINOGRAD_PLAN)
    if kernels is None or not winograd_ok(weight) or act.shape[2:] != src.x.shape[2:]:
        return None
    prepared = cached(owner, name, (weight, bias), lambda: winograd.Prepared(weight, bias, WINOGRAD_PLAN))
    mean, invstd = src.stats(kernels)
    pixels = src.x.permute(0, 2, 3, 1).contiguous()
    return winograd.conv2d(act, prepared, 1, modulation=winograd_c.Modulation(pixels, mean, invstd, slope))


def cl_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The weight in channels-last layout (a channels-last input would otherwise convert it per call)."""
    return cached(conv, "_fast_cl", (conv.weight,), lambda: conv.weight.contiguous(memory_format=torch.channels_last))


def conv2d_cl(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if winograd_ok(conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups):
        return winograd_conv3x3(conv, "_fast_winograd", conv.weight, conv.bias, x)
    return F.conv2d(x, cl_weight(conv), conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


# ---- wide 3x3 (and 3x3x3) convolutions: Winograd F(4x4, 3x3) ------------------------------------------------

_winograd = threading.local()

# The transforms cost ~(C_in + C_out) per pixel, the multiplications saved ~C_in*C_out: below this
# ratio the transforms eat the saving.  Measured on the decoder's shapes with the transforms as
# PyTorch ops: 256 -> 64 breaks even, 128 -> 256 is 1.6x faster, 512 -> 512 2.1x, 64 -> 64 at
# 256x256 1.5x slower; compiled (float_rt.winograd_c): 256 -> 64 at 256x256 2.1x faster, 64 -> 64
# 1.5x, 32 -> 32 1.2x, 64 -> 12 1.3x slower.
WINOGRAD_MIN_WIDTH = 64
WINOGRAD_MIN_WIDTH_COMPILED = 16
WINOGRAD_PLAN = winograd.Plan(4, 3)


def without_winograd():
    """Direct convolutions where the Winograd path would run (in this thread; other fast paths stay on)."""
    return switched_off(_winograd)


def _wide(cin: int, cout: int, taps: int = 1) -> bool:
    """Winograd on and worth it: the products (``taps`` kernels deep) outweigh the transforms."""
    return not getattr(_winograd, "off", False) and taps * cin * cout >= _min_width() * (cin + cout)


def _min_width() -> int:
    return WINOGRAD_MIN_WIDTH_COMPILED if winograd.compiled(WINOGRAD_PLAN) else WINOGRAD_MIN_WIDTH


def winograd_ok(weight: torch.Tensor, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups: int = 1) -> bool:
    return (_wide(weight.shape[1], weight.shape[0]) and tuple(weight.shape[2:]) == (3, 3) and tuple(stride) == (1, 1)
            and tuple(padding) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1)


def winograd3d_ok(conv: nn.Conv3d, x: torch.Tensor) -> bool:
    """A 3x3x3 convolution by Winograd over (H, W), on slices of at least 8x8 (smaller ones are a
    few tiles, most of them padding; F(2x2, 3x3) on the hourglass's 4x4 slices gained 1 % of a frame
    for 1.8x their weights' memory, 200 MB)."""
    return (conv.kernel_size == (3, 3, 3) and conv.padding == (1, 1, 1) and conv.stride == (1, 1, 1)
            and conv.dilation == (1, 1, 1) and conv.groups == 1
            and _wide(conv.in_channels, conv.out_channels, taps=3) and min(x.shape[-2:]) >= 8)


def winograd_conv3d(conv: nn.Conv3d, weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, padding=1)``: Winograd F(4x4, 3x3) over each depth slice, the 3 depth
    taps summed by the product step (``float_rt.winograd.Prepared``); channels-last-3d out."""
    prepared = cached(conv, "_fast_winograd3d", (weight, bias), lambda: winograd.Prepared(weight, bias, WINOGRAD_PLAN))
    return winograd.conv3d(x, prepared, 1)


def winograd_conv3x3(owner: nn.Module, name: str, weight: torch.Tensor, bias: torch.Tensor | None,
                     x: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` by Winograd F(4x4, 3x3), the transformed weights cached
    on ``owner``; channels-last out."""
    prepared = cached(owner, name, (weight, bias), lambda: winograd.Prepared(weight, bias, WINOGRAD_PLAN))
    return winograd.conv2d(x, prepared, 1)


def concat_convs(owner: nn.Module, name: str, convs: list[nn.Conv2d],
                 bias_offsets: list[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights (out-channel concatenated, channels-last) and biases of ``convs`` as one
    convolution; ``bias_offsets`` adds a constant to each conv's bias (``1 + gamma`` from the conv)."""
    offsets = bias_offsets or [0.0] * len(convs)
    tensors = tuple(t for c in convs for t in (c.weight, c.bias))
    return cached(owner, name, tensors, lambda: (
        torch.cat([c.weight for c in convs]).contiguous(memory_format=torch.channels_last),
        torch.cat([c.bias + o for c, o in zip(convs, offsets)])))


# ---- the warp's wide-kernel heads ----------------------------------------------------------------------------

_fft = threading.local()


def without_fft():
    """The mask head's direct (stacked) convolution where the FFT path would run (in this thread)."""
    return switched_off(_fft)


def fft_ok(conv: nn.Conv3d) -> bool:
    """A stride-1 'same' 3-D convolution with a kernel of 5 or more over (H, W): its FFT costs less."""
    k = conv.kernel_size
    return (not getattr(_fft, "off", False) and k[1] == k[2] and k[1] >= 5 and all(v % 2 for v in k)
            and conv.padding == tuple(v // 2 for v in k) and conv.stride == (1, 1, 1)
            and conv.dilation == (1, 1, 1) and conv.groups == 1)


def fft_conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` by ``float_rt.fftconv`` (the kernel's spectra cached on the module); channels-last-3d out."""
    prepared = cached(conv, "_fast_fft", (conv.weight, conv.bias), lambda: fftconv.Prepared(conv.weight, conv.bias))
    return fftconv.conv3d(x, prepared)


def one_output_ok(conv: nn.Conv2d) -> bool:
    k = conv.kernel_size
    return (conv.out_channels == 1 and k[0] == k[1] and k[0] % 2 == 1 and conv.padding == (k[0] // 2,) * 2
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1)


def volume_conv2d_one_output(conv: nn.Conv2d, volume: torch.Tensor) -> torch.Tensor:
    """``conv(volume.reshape(B, C*D, H, W))`` for a 1-output, k x k, 'same' ``conv`` (the occlusion head),
    without reordering the channels-last-3d ``volume`` (B, C, D, H, W): per depth slice a product of
    its (H*W, C) pixels with the (C, k*k) taps, summed over the slices, then each tap moved to the
    output pixel it lands on (``F.fold`` with the taps flipped: input pixel a feeds output a - u + k//2)."""
    _, c, d, h, w = volume.shape
    k = conv.kernel_size[0]

    def build():   # (D, C, k*k), the 2-D conv's channel index being c*D + z; taps flipped for fold
        wt = conv.weight[0].reshape(c, d, k, k).flip(-1, -2)
        return wt.permute(1, 0, 2, 3).reshape(d, c, k * k).contiguous()
    taps = cached(conv, "_fast_one_output", (conv.weight,), build)
    outs = []
    for sample in volume:
        pixels = sample.permute(1, 2, 3, 0).reshape(d, h * w, c)             # a view when channels-last-3d
        cols = torch.bmm(pixels, taps).sum(0)                                # (H*W, k*k)
        outs.append(F.fold(cols.t().unsqueeze(0), (h, w), k, padding=k // 2))
    out = torch.cat(outs)
    return out + conv.bias.view(1, -1, 1, 1) if conv.bias is not None else out


# ---- a 3x3 convolution of a nearest-upsampled input, on the coarse grid --------------------------------------

def _phase_windows(s: int) -> list[tuple[int, torch.Tensor]]:
    """For upsampling by s, per output phase p (fine row s*c + p): the first coarse row its 3 taps
    read (offset from c) and a (rows, 3) map from those taps to the coarse rows they land on, rows
    being 2 where the taps straddle two coarse rows, 1 where all three fall in row c (s >= 3)."""
    out = []
    for p in range(s):
        coarse = [(p + t - 1) // s for t in range(3)]        # fine row s*c + p + t - 1 lies in coarse row c + coarse[t]
        first = min(coarse)
        taps = torch.zeros(max(coarse) - first + 1, 3)
        for t, row in enumerate(coarse):
            taps[row - first, t] = 1.0
        out.append((first, taps))
    return out


@dataclass
class UpsampledConv:
    """A 3x3 convolution of an input upsampled by ``scale`` as kernels on the coarse grid, phases with
    the same number of coarse rows and columns (2 or 1 each) sharing one convolution.

    ``groups``: (weight (len(phases)*O, I, rows, cols), bias, phases [(p, q, first row, first col)])."""
    scale: int
    out_channels: int
    groups: list


def upsampled_conv_weight(weight: torch.Tensor, bias: torch.Tensor, s: int) -> UpsampledConv:
    """3x3 ``weight`` (O, I, 3, 3) -> per-phase kernels: ``conv(upsample_s(x))`` at pixels (s*i + p,
    s*j + q) is a 2x2, 2x1, 1x2 or 1x1 convolution of x (2.25x fewer products at s = 2, 3.2x at s = 4
    than on the fine grid)."""
    windows = _phase_windows(s)
    by_shape: dict[tuple[int, int], list] = {}
    for p, (fp, tp) in enumerate(windows):
        for q, (fq, tq) in enumerate(windows):
            k = torch.einsum("ut,vr,oitr->oiuv", tp.to(weight), tq.to(weight), weight)
            by_shape.setdefault(k.shape[2:], []).append((k, (p, q, fp, fq)))
    groups = [(torch.cat([k for k, _ in items]).contiguous(memory_format=torch.channels_last),
               bias.repeat(len(items)), [ph for _, ph in items]) for items in by_shape.values()]
    return UpsampledConv(s, weight.shape[0], groups)


def upsampled_conv3x3(x: torch.Tensor, conv: UpsampledConv, relu: bool = False) -> torch.Tensor:
    """``conv2d(interpolate(x, scale_factor=s, mode='nearest'), w3x3, b, padding=1)`` from the phase
    kernels of ``upsampled_conv_weight``, no upsampled input.  Returns a channels-last (B, O, s*H, s*W) tensor."""
    b, _, h, w = x.shape
    s, o = conv.scale, conv.out_channels
    out = x.new_empty(b, h, s, w, s, o)
    for weight, bias, phases in conv.groups:
        rows, cols = weight.shape[2:]
        # padding rows - 1: output index i reads coarse rows i - (rows - 1) .. i
        y = F.conv2d(x, weight, bias, padding=(rows - 1, cols - 1))
        if relu:
            y = F.relu_(y)
        yv = y.permute(0, 2, 3, 1).unflatten(-1, (len(phases), o))
        for k, (p, q, fp, fq) in enumerate(phases):
            i0, j0 = fp + rows - 1, fq + cols - 1
            out[:, :, p, :, q] = yv[:, i0:i0 + h, j0:j0 + w, k]
    return out.view(b, s * h, s * w, o).permute(0, 3, 1, 2)


def upsampled_cond_conv(owner: nn.Module, weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor,
                        scale: int) -> torch.Tensor:
    """``relu(conv2d(interpolate(x, scale_factor=scale), weight, bias, padding=1))`` on x's own grid: the
    nine taps' products once and their sums compiled (``float_rt.upsample_c``: 9 products a coarse
    pixel), else the phase kernels above (16 at s = 2, 36 at s = 4).  Channels-last out."""
    kern = upsample_c.kernel(scale)
    if kern is not None:
        taps = cached(owner, "_fast_shared_taps", (weight,), lambda: upsample_c.tap_weight(weight))
        return upsample_c.upsampled_conv3x3(x, taps, bias, kern, relu=True)
    up = cached(owner, f"_fast_shared_up{scale}", (weight, bias), lambda: upsampled_conv_weight(weight, bias, scale))
    return upsampled_conv3x3(x, up, relu=True)


# ---- a 3-D convolution as a 2-D one over depth slices -------------------------------------------------------

def stacked_ok(conv: nn.Conv3d) -> bool:
    kd = conv.kernel_size[0]
    return (kd % 2 == 1 and conv.padding[0] == kd // 2 and conv.stride == (1, 1, 1)
            and conv.dilation == (1, 1, 1) and conv.groups == 1)


def conv3d_stacked(x: torch.Tensor, conv: nn.Conv3d, weight: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, padding=conv.padding)`` (default: the conv's own weight and bias) as
    one 2-D convolution of every depth slice with all kd depth taps' kernels stacked as outputs
    (kd*O channels: oneDNN pads output channels to blocks of 16, and the 21+1 of the mask head
    become 154 instead of 22), then the taps summed with their depth shifts.  Channels-last in and out."""
    weight = conv.weight if weight is None else weight
    bias = conv.bias if bias is None else bias
    if x.shape[0] > 1:   # one sample at a time: the stacked output is kd times the final one
        return torch.cat([conv3d_stacked(x[i:i + 1], conv, weight, bias) for i in range(x.shape[0])])
    b, c, d, h, w = x.shape
    o, _, kd, kh, kw = weight.shape
    pd = kd // 2
    stacked = cached(conv, "_fast_stacked", (weight,), lambda: weight.permute(2, 0, 1, 3, 4).reshape(
        kd * o, c, kh, kw).contiguous(memory_format=torch.channels_last))
    x2 = x.contiguous(memory_format=torch.channels_last_3d).permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)
    u = F.conv2d(x2, stacked, None, padding=conv.padding[1:]).permute(0, 2, 3, 1).view(b, d, h, w, kd, o)
    out = u[:, :, :, :, pd].contiguous()                                   # (B, D, H, W, O)
    for j in range(kd):
        shift = j - pd                                                     # tap j reads slice z + shift
        if shift > 0:
            out[:, :d - shift] += u[:, shift:, :, :, j]
        elif shift < 0:
            out[:, -shift:] += u[:, :d + shift, :, :, j]
    if bias is not None:
        out += bias
    return out.permute(0, 4, 1, 2, 3)                                      # (B, O, D, H, W), channels-last-3d


# ---- what ran ----------------------------------------------------------------------------------------------

def chosen_paths(renderer: nn.Module | None = None) -> dict:
    """The paths the renderer takes on this CPU in fp32 (for benchmarks and logs)."""
    on = not plain()
    compiled = winograd.compiled(WINOGRAD_PLAN)
    return {"batchnorm_folded": on, "decoder_channels_last": on, "spade_convs_merged": on,
            "warp_hourglass_channels_last_3d": on,
            "mask_conv": ("3-D" if not on else "FFT over 16x16 tiles" if not getattr(_fft, "off", False)
                          else "depth taps stacked, 2-D"),
            "occlusion_conv": "taps as outputs, folded" if on else "2-D",
            "spade_upsampled_cond_conv": (("9 tap products on the coarse grid, sums compiled" if upsample_c.kernel(2)
                                           else "2x2 phase kernels on the coarse grid") if on
                                          else "3x3 on the upsampled grid"),
            "decoder_conv3x3": (f"Winograd F(4x4, 3x3) where C_in*C_out/(C_in+C_out) >= {_min_width()}"
                                f"{', transforms compiled' if compiled else ''}"
                                if on and not getattr(_winograd, "off", False) else "direct"),
            "warp_conv3x3x3": ("Winograd F(4x4, 3x3) over (H, W), 3-tap depth products, where wide"
                               if on and not getattr(_winograd, "off", False) else "direct 3-D"),
            "warp_samples": ("compiled trilinear, channels-last source, written in the reader's layout"
                             if on and sample_c.sampler() is not None else "F.grid_sample"),
            "onednn": torch.backends.mkldnn.is_available()}
