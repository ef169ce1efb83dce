"""3-D convolutions with a wide kernel by FFT over (H, W) tiles, for the CPU.

The warp's mask head is a 7x7x7 convolution (142 -> 22 channels on a 16x64x64 volume): 140 GFLOP
computed directly, 343 products per input/output pair and voxel.  Over (H, W) a correlation is a
product of spectra: each T x T block of outputs comes from an N x N input tile (N = T + k - 1) as
``irfft2(rfft2(tile) * conj(rfft2(kernel padded to N x N)))``, the first T x T values being free of
wrap-around.  Summed over the input channels, the spectral products at one frequency are a
(tiles x 2C) @ (2C x 2O) real matrix product (real and imaginary parts as channels); the depth
taps stay a direct kd-tap convolution, so all frequencies run as one grouped convolution (group
= frequency, kernel kd x 1 along the depth: one oneDNN call, as ``float_rt.winograd`` does for
its transformed positions).  At T = 16 that is ~12 GFLOP instead of 140.

The kernel's spectra are computed once in float64 and rounded; the error is that of fp32 FFTs,
~1e-6 relative to the direct convolution (``tests/test_fftconv.py``).  The price is memory: one
(2O x 2C x kd) matrix per frequency, 264 frequencies at T = 16 (92 MB for the mask head).
Inputs and outputs are channels-last-3d, stride 1, 'same' padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

TILE = 16          # output block per tile: N = 22 for a 7x7 kernel (measured best of 16..58 here)


class Prepared:
    """One convolution's weight as per-frequency products: the weight of a grouped convolution
    with one group per frequency of an N x N tile's rfft2, each a (kd x 1) kernel along the depth
    from 2C channels (real, imaginary of each input channel) to 2O."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, tile: int = TILE):
        o, c, kd, kh, kw = weight.shape
        if kh != kw:
            raise ValueError(f"FFT convolution needs a square kernel over (H, W), got {kh}x{kw}")
        n = tile + kh - 1
        spectra = torch.fft.rfft2(F.pad(weight.detach().double(), (0, n - kw, 0, n - kh))).conj()
        re, im = spectra.real, spectra.imag                          # (O, C, kd, N, N//2+1)
        # y_re = x_re*re - x_im*im, y_im = x_re*im + x_im*re: rows (o, out part), columns (c, in part)
        blocks = torch.stack([torch.stack([re, -im], 2), torch.stack([im, re], 2)], 1)  # (O, 2, C, 2, kd, N, Nf)
        self.frequencies = n * (n // 2 + 1)
        self.weight = (blocks.permute(5, 6, 0, 1, 2, 3, 4).reshape(self.frequencies * o * 2, c * 2, kd, 1)
                       .float().contiguous(memory_format=torch.channels_last))
        self.bias = None if bias is None else bias.detach().contiguous()
        self.tile, self.n, self.kernel, self.depth = tile, n, kh, kd
        self.in_channels, self.out_channels = c, o

    def products(self, spectra: torch.Tensor) -> torch.Tensor:
        """(D, tiles, frequencies, C, 2) -> (D, tiles, frequencies, O, 2), the depth taps summed."""
        d, tiles = spectra.shape[:2]
        x = spectra.view(1, d, tiles, -1).permute(0, 3, 1, 2)     # channels-last (1, F*2C, D, tiles)
        pad = [self.depth // 2, 0]
        if torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled:
            y = torch.mkldnn_convolution(x, self.weight, None, pad, [1, 1], [1, 1], self.frequencies)
        else:
            y = F.conv2d(x, self.weight, padding=pad, groups=self.frequencies)
        return y.permute(0, 2, 3, 1).reshape(d, tiles, self.frequencies, self.out_channels, 2)


def conv3d(x: torch.Tensor, conv: Prepared) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, padding=k // 2)`` (stride 1, odd kernel) for ``conv = Prepared(weight,
    bias)``; x (B, C, D, H, W), one sample at a time.  Returns a channels-last-3d tensor."""
    if x.shape[0] == 1:
        return _one(x[0], conv)
    # (B, D, H, W, O) stacked: channels-last-3d, as one sample's output is
    return torch.stack([_one(sample, conv)[0].permute(1, 2, 3, 0) for sample in x]).permute(0, 4, 1, 2, 3)


def _one(x: torch.Tensor, conv: Prepared) -> torch.Tensor:
    c, d, h, w = x.shape
    t, n, p = conv.tile, conv.n, conv.kernel // 2
    th, tw = -(-h // t), -(-w // t)
    # channels innermost: the tiles are strided views of one padded copy, and the spectra come out
    # with the channels contiguous per frequency, as the grouped convolution reads them
    padded = F.pad(x.permute(1, 2, 3, 0), (0, 0, p, tw * t + n - t - w - p, p, th * t + n - t - h - p))
    s = padded.stride()
    tiles = padded.as_strided((d, th, tw, n, n, c), (s[0], t * s[1], t * s[2], s[1], s[2], s[3]))
    spectra = torch.view_as_real(torch.fft.rfft2(tiles, dim=(3, 4)).contiguous())   # (D, th, tw, N, Nf, C, 2)
    prods = conv.products(spectra.view(d, th * tw, conv.frequencies, c, 2))
    prods = torch.view_as_complex(prods.view(d, th, tw, n, n // 2 + 1, conv.out_channels, 2))
    blocks = torch.fft.irfft2(prods, s=(n, n), dim=(3, 4))[:, :, :, :t, :t]        # (D, th, tw, T, T, O)
    out = x.new_empty(d, th, t, tw, t, conv.out_channels)                          # (D, H, W, O) once cropped
    if conv.bias is not None:
        torch.add(blocks.permute(0, 1, 3, 2, 4, 5), conv.bias, out=out)
    else:
        out.copy_(blocks.permute(0, 1, 3, 2, 4, 5))
    out = out.view(d, th * t, tw * t, conv.out_channels)
    if th * t != h or tw * t != w:
        out = out[:, :h, :w].contiguous()
    return out.permute(3, 0, 1, 2).unsqueeze(0)                                     # (1, O, D, H, W)
