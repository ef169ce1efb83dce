"""The FFT convolution (``float_rt.fftconv``) computes what ``F.conv3d`` computes, for the warp's
wide mask head; and the occlusion head's tap-fold path what its ``F.conv2d`` computes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from float_rt import fftconv
from float_rt.liveportrait import fast


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("batch, channels, size, kernel, tile", [
    (1, (6, 4), (4, 16, 16), (7, 7, 7), 16),     # one tile, the depth shorter than the kernel
    (2, (5, 3), (5, 19, 37), (7, 7, 7), 8),      # several tiles, sizes that do not fill them, two samples
    (1, (8, 2), (6, 40, 9), (3, 5, 5), 4),       # another depth and spatial kernel
    (1, (3, 5), (2, 7, 7), (1, 7, 7), 16),       # no depth taps
])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv3d_equals_f_conv3d(batch, channels, size, kernel, tile, with_bias):
    gen = torch.Generator().manual_seed(sum(size))
    cin, cout = channels
    x = torch.randn(batch, cin, *size, generator=gen)
    w = torch.randn(cout, cin, *kernel, generator=gen)
    b = torch.randn(cout, generator=gen) if with_bias else None
    ref = F.conv3d(x, w, b, padding=tuple(k // 2 for k in kernel))
    conv = fftconv.Prepared(w, b, tile=tile)
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        out = fftconv.conv3d(x.contiguous(memory_format=layout), conv)
        assert out.shape == ref.shape
        assert out.is_contiguous(memory_format=torch.channels_last_3d)
        assert rel(out, ref) < 5e-6


def test_error_at_the_mask_head_shape():
    """142 -> 22 channels, 7x7x7, on the published 16x64x64 volume: within the 1e-6 class of the
    other fast paths (fp32 spectra, the kernel's computed in float64)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 142, 16, 64, 64, generator=gen).contiguous(memory_format=torch.channels_last_3d)
    w = torch.randn(22, 142, 7, 7, 7, generator=gen) / (142 * 343) ** 0.5
    b = torch.randn(22, generator=gen)
    with torch.no_grad():
        assert rel(fftconv.conv3d(x, fftconv.Prepared(w, b)), F.conv3d(x, w, b, padding=3)) < 5e-6


def test_a_non_square_kernel_is_refused():
    with pytest.raises(ValueError, match="square kernel"):
        fftconv.Prepared(torch.randn(2, 2, 3, 5, 3), None)


@pytest.mark.filterwarnings("ignore:TF32")
def test_without_onednn():
    x, w = torch.randn(1, 3, 3, 10, 12), torch.randn(2, 3, 3, 7, 7)
    conv = fftconv.Prepared(w, None, tile=8)
    with torch.backends.mkldnn.flags(enabled=False):
        assert rel(fftconv.conv3d(x, conv), F.conv3d(x, w, padding=(1, 3, 3))) < 5e-6


def test_which_convolutions_take_the_fft_path():
    assert fast.fft_ok(nn.Conv3d(4, 2, 7, padding=3))
    assert fast.fft_ok(nn.Conv3d(4, 2, (3, 5, 5), padding=(1, 2, 2)))
    assert not fast.fft_ok(nn.Conv3d(4, 2, 3, padding=1))                 # Winograd's
    assert not fast.fft_ok(nn.Conv3d(4, 2, 7, padding=3, stride=2))
    assert not fast.fft_ok(nn.Conv3d(4, 2, 7, padding=0))
    with fast.without_fft():
        assert not fast.fft_ok(nn.Conv3d(4, 2, 7, padding=3))


@pytest.mark.parametrize("batch", [1, 2])
def test_one_output_head_read_from_the_volume(batch):
    """The occlusion head: a 7x7 conv of the (B, C*D, H, W) reshape of a (B, C, D, H, W) volume,
    computed from the channels-last-3d volume itself with its taps folded into place."""
    gen = torch.Generator().manual_seed(batch)
    c, d, h, w = 5, 3, 11, 9
    conv = nn.Conv2d(c * d, 1, 7, padding=3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        volume = torch.randn(batch, c, d, h, w, generator=gen)
        ref = conv(volume.reshape(batch, c * d, h, w))
        for layout in (torch.contiguous_format, torch.channels_last_3d):
            assert rel(fast.volume_conv2d_one_output(conv, volume.contiguous(memory_format=layout)), ref) < 1e-6
    assert fast.one_output_ok(conv) and not fast.one_output_ok(nn.Conv2d(4, 2, 7, padding=3))
