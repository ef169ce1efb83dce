"""Winograd convolution (float_rt.winograd) equals the direct convolution, with its transforms
compiled and as PyTorch ops.

The transforms are checked exactly (float64) and the fp32 kernel against ``F.conv2d`` over odd
sizes, paddings, batches, with and without bias, both input layouts, banded or whole, and with
the transformed products on oneDNN or not.  The measured fp32 error of F(4x4, 3x3) is
~1e-6 relative (unit-variance data and weights); the bound asserted leaves 10x room.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from float_rt import native, winograd

# relative error bounds (fp32) by plan: the error grows with the tile's interpolation points
TOLERANCE = {(2, 3): 2e-6, (4, 3): 1e-5, (6, 3): 3e-5, (3, 2): 2e-6, (5, 2): 1e-5}


@pytest.fixture(autouse=True, params=["compiled", "torch"])
def transforms(request):
    """Every test with the transforms compiled (``float_rt.winograd_c``; CI installs a C compiler, so
    they must build) and as PyTorch ops."""
    if request.param == "torch":
        with native.without_native():
            assert not winograd.compiled(winograd.Plan(4, 3))
            yield request.param
    else:
        assert winograd.compiled(winograd.Plan(4, 3)), "the compiled transforms did not build (C compiler?)"
        yield request.param


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("m, r", sorted(TOLERANCE))
def test_transforms_compute_the_correlation_exactly(m, r):
    """A^T [(G g) * (B^T d)] = the valid correlation of d with g, in float64 (1-D: the 2-D
    algorithm is the same matrices on both axes)."""
    at, g, bt = winograd.Plan(m, r).matrices()
    gen = torch.Generator().manual_seed(m * 10 + r)
    kernel, d = torch.randn(r, generator=gen, dtype=torch.float64), torch.randn(m + r - 1, generator=gen, dtype=torch.float64)
    direct = torch.stack([(d[i:i + r] * kernel).sum() for i in range(m)])
    assert torch.allclose(at @ ((g @ kernel) * (bt @ d)), direct, atol=1e-12, rtol=0)


@pytest.mark.parametrize("m, r", sorted(TOLERANCE))
@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv2d_equals_f_conv2d(m, r, padding, with_bias):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 9, 13, 10, generator=gen)
    w = torch.randn(6, 9, r, r, generator=gen)
    b = torch.randn(6, generator=gen) if with_bias else None
    ref = F.conv2d(x, w, b, padding=padding)
    conv = winograd.Prepared(w, b, winograd.Plan(m, r))
    for layout in (torch.contiguous_format, torch.channels_last):
        out = winograd.conv2d(x.contiguous(memory_format=layout), conv, padding)
        assert out.shape == ref.shape
        assert rel(out, ref) < TOLERANCE[(m, r)]


def test_channels_last_output_and_sizes_that_fill_the_tiles():
    x = torch.randn(1, 16, 16, 12).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(8, 16, 3, 3), torch.randn(8)
    out = winograd.conv2d(x, winograd.Prepared(w, b, winograd.Plan(4, 3)), 1)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert rel(out, F.conv2d(x, w, b, padding=1)) < TOLERANCE[(4, 3)]


def test_bands_of_tile_rows_give_the_same_result(monkeypatch):
    x = torch.randn(2, 8, 23, 17)
    w, b = torch.randn(5, 8, 3, 3), torch.randn(5)
    conv = winograd.Prepared(w, b, winograd.Plan(4, 3))
    whole = winograd.conv2d(x, conv, 1)
    monkeypatch.setattr(winograd, "BAND_BYTES", 1)      # one row of tiles per band
    banded = winograd.conv2d(x, conv, 1)
    assert torch.equal(whole, banded)


@pytest.mark.filterwarnings("ignore:TF32")        # torch's notice on entering mkldnn.flags()
def test_without_onednn():
    x = torch.randn(1, 8, 11, 9)
    w, b = torch.randn(4, 8, 3, 3), torch.randn(4)
    conv = winograd.Prepared(w, b, winograd.Plan(4, 3))
    with torch.backends.mkldnn.flags(enabled=False):
        assert rel(winograd.conv2d(x, conv, 1), F.conv2d(x, w, b, padding=1)) < TOLERANCE[(4, 3)]


def test_error_at_a_decoder_shape():
    """512 input channels (the decoder's middle blocks), scaled weights as a trained layer has."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 512, 16, 16, generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 512, 3, 3, generator=gen) / (512 * 9) ** 0.5
    b = 0.1 * torch.randn(64, generator=gen)
    out = winograd.conv2d(x, winograd.Prepared(w, b, winograd.Plan(4, 3)), 1)
    assert rel(out, F.conv2d(x, w, b, padding=1)) < TOLERANCE[(4, 3)]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv3d_equals_f_conv3d(batch, with_bias):
    """Winograd over (H, W), the 3 depth taps summed by the grouped product (same-size depth)."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(batch, 6, 5, 9, 7, generator=gen)
    w = torch.randn(5, 6, 3, 3, 3, generator=gen)
    b = torch.randn(5, generator=gen) if with_bias else None
    ref = F.conv3d(x, w, b, padding=1)
    conv = winograd.Prepared(w, b, winograd.Plan(4, 3))
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        out = winograd.conv3d(x.contiguous(memory_format=layout), conv, 1)
        assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last_3d)
        assert rel(out, ref) < TOLERANCE[(4, 3)]

