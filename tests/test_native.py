"""Compiled kernels (float_rt.native, float_rt.winograd_c): built once per machine, equal to the PyTorch
path, and never required: without a compiler, or when a build fails, the PyTorch path runs."""
from __future__ import annotations

import logging
import subprocess

import pytest
import torch
import torch.nn.functional as F

from float_rt import native, sample_c, upsample_c, winograd, winograd_c
from float_rt.liveportrait import fast


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty cache folder and no library loaded yet in this process."""
    monkeypatch.setenv("FLOAT_RT_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_wrapped", {})
    return tmp_path


def count_builds(monkeypatch) -> list:
    builds, run = [], subprocess.run

    def spy(cmd, *a, **kw):
        if "-shared" in cmd:
            builds.append(cmd)
        return run(cmd, *a, **kw)
    monkeypatch.setattr(subprocess, "run", spy)
    return builds


def test_built_once_then_loaded_from_the_cache(fresh, monkeypatch):
    builds = count_builds(monkeypatch)
    plan = winograd.Plan(4, 3)
    assert winograd_c.kernels(plan) is not None and winograd_c.kernels(plan) is winograd_c.kernels(plan)
    assert len(builds) == 1 and len(list((fresh / "native").glob("winograd_m4r3-*.so"))) == 1
    monkeypatch.setattr(native, "_loaded", {})          # another process: the cached library, no build
    monkeypatch.setattr(native, "_wrapped", {})
    assert winograd_c.kernels(plan) is not None and len(builds) == 1


def test_a_failed_build_is_one_warning_and_the_torch_path(fresh, caplog):
    with caplog.at_level(logging.WARNING, logger="float_rt.native"):
        assert native.load("broken", "this is not C;") is None
        assert native.load("broken", "this is not C;") is None
    assert len(caplog.records) == 1 and "PyTorch path" in caplog.records[0].getMessage()


def test_without_a_compiler_the_torch_path_runs(fresh, monkeypatch, caplog):
    monkeypatch.setattr(native, "compiler", lambda: None)
    x, w, b = torch.randn(1, 8, 12, 12), torch.randn(16, 8, 3, 3), torch.randn(16)
    with caplog.at_level(logging.WARNING, logger="float_rt.native"):
        assert not winograd.compiled(winograd.Plan(4, 3))
        out = winograd.conv2d(x, winograd.Prepared(w, b, winograd.Plan(4, 3)), 1)
    assert "install gcc" in caplog.text
    assert rel(out, F.conv2d(x, w, b, padding=1)) < 1e-5
    assert "transforms compiled" not in fast.chosen_paths()["decoder_conv3x3"]


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("FLOAT_RT_NATIVE", "0")
    assert winograd_c.kernels(winograd.Plan(4, 3)) is None and not winograd.compiled(winograd.Plan(4, 3))


def test_generated_source_leaves_out_zero_terms():
    """F(4x4, 3x3)'s B^T row (4, 0, -5, 0, 1, 0) becomes three terms with constant coefficients."""
    src = winograd_c.source(winograd.Plan(4, 3))
    assert "t[0][j][c] = 4.0f * d[0][j][c] - 5.0f * d[2][j][c] + d[4][j][c];" in src


@pytest.mark.parametrize("m, r", [(2, 3), (4, 3), (6, 3), (3, 2), (5, 2)])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_transforms_equal_the_torch_ones(m, r, threads):
    """Same products, the transforms' fp32 additions in another order: both as close to a float64
    convolution as the plan allows (tests/test_winograd.py's bounds), for odd sizes (partial tiles at the edges), a batch, several bands and a channel count that is
    not a multiple of the kernels' chunk."""
    assert winograd.compiled(winograd.Plan(m, r)), "the compiled transforms did not build (C compiler?)"
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(21)
        x = torch.randn(2, winograd_c.CHUNK + 13, 19, 14, generator=gen).contiguous(memory_format=torch.channels_last)
        w, b = torch.randn(70, x.shape[1], r, r, generator=gen), torch.randn(70, generator=gen)
        conv = winograd.Prepared(w, b, winograd.Plan(m, r))
        compiled = winograd.conv2d(x, conv, 1)
        with native.without_native():
            plain = winograd.conv2d(x, conv, 1)
    finally:
        torch.set_num_threads(before)
    assert compiled.shape == plain.shape == F.conv2d(x, w, b, padding=1).shape
    assert compiled.is_contiguous(memory_format=torch.channels_last)
    exact = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    bound = {(2, 3): 2e-6, (4, 3): 1e-5, (6, 3): 3e-5, (3, 2): 2e-6, (5, 2): 1e-5}[(m, r)]
    assert rel(compiled, exact) < bound and rel(plain, exact) < bound


def test_pool_and_upsample_keep_channels_last_3d():
    x = torch.randn(2, 6, 3, 8, 10).contiguous(memory_format=torch.channels_last_3d)
    pooled, up = fast.pool_hw(x), fast.upsample_hw(x)
    assert torch.allclose(pooled, F.avg_pool3d(x, (1, 2, 2)), atol=1e-6)
    assert torch.equal(up, F.interpolate(x, scale_factor=(1, 2, 2)))
    assert pooled.is_contiguous(memory_format=torch.channels_last_3d)
    assert up.is_contiguous(memory_format=torch.channels_last_3d)
    odd = torch.randn(1, 3, 2, 5, 4).contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(fast.pool_hw(odd), F.avg_pool3d(odd, (1, 2, 2)), atol=1e-6)


def test_conv3d_output_stays_channels_last_3d_through_cat():
    """Every stride of the output is set (a size-1 batch dim with stride C would make torch.cat, and the
    convolution after it, fall back to a contiguous tensor and reorder)."""
    x = torch.randn(1, 6, 4, 8, 8).contiguous(memory_format=torch.channels_last_3d)
    conv = winograd.Prepared(torch.randn(5, 6, 3, 3, 3), None, winograd.Plan(4, 3))
    out = winograd.conv3d(x, conv, 1)
    assert out.stride(0) == out.numel()
    assert torch.cat([out, x], dim=1).is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("relu", [True, False])
def test_upsampled_conv_from_coarse_taps(scale, relu):
    """conv2d(interpolate(x, s), w, b, padding=1): the nine taps on the coarse grid, summed per fine phase
    (edges read zeros), against the fine-grid convolution and the phase kernels of the PyTorch path."""
    gen = torch.Generator().manual_seed(scale)
    x = torch.randn(2, 5, 7, 6, generator=gen)
    w, b = torch.randn(upsample_c.CHUNK + 3, 5, 3, 3, generator=gen), torch.randn(upsample_c.CHUNK + 3, generator=gen)
    ref = F.conv2d(F.interpolate(x, scale_factor=scale), w, b, padding=1)
    ref = F.relu(ref) if relu else ref
    kern = upsample_c.kernel(scale)
    assert kern is not None, "the compiled tap sums did not build (C compiler?)"
    out = upsample_c.upsampled_conv3x3(x, upsample_c.tap_weight(w), b, kern, relu=relu)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert rel(out, ref) < 1e-6
    if relu:
        phases = fast.upsampled_conv3x3(x.contiguous(memory_format=torch.channels_last),
                                        fast.upsampled_conv_weight(w, b, scale), relu=True)
        assert rel(phases, ref) < 1e-6


def test_decoder_takes_the_compiled_paths_and_equals_them_off():
    """A small SPADE decoder: SPADE norms fused into their gamma/beta transforms and the upsampled condition
    by coarse taps where compiled; the same frames with the compiled kernels off, and plain."""
    from float_rt.liveportrait.decoder import SpadeDecoder
    from float_rt.liveportrait.sizes import DecoderSizes
    torch.manual_seed(0)
    d = SpadeDecoder(DecoderSizes(block_expansion=16, max_features=64, out_channels=16)).eval()
    with torch.no_grad():
        for name, t in d.named_parameters():
            t.copy_(torch.randn(t.shape) / (t[0].numel() ** 0.5 if t.dim() > 1 else 3))
    feature = torch.randn(1, d.sizes.in_channels, 16, 16)
    calls = []
    spade = fast.spade_fused

    def spy_spade(*a):
        out = spade(*a)
        calls.append(("fused", out is not None))
        return out
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast, "spade_fused", spy_spade)
        compiled = d(feature)
        with native.without_native():
            torch_path = d(feature)
        with fast.reference_paths():
            plain = d(feature)
    assert ("fused", True) in calls and ("fused", False) in calls      # compiled, then switched off
    assert "_fast_shared_taps" in d.up_a.__dict__ and "_fast_shared_up2" in d.up_a.__dict__
    assert rel(compiled, torch_path) < 1e-5 and rel(compiled, plain) < 1e-5


@pytest.mark.parametrize("shared", [True, False])
def test_compiled_trilinear_sampler_equals_grid_sample(shared):
    """Corners outside the volume read zeros (grid beyond [-1, 1]); a volume shared by the batch or one
    per sample; the result written through strides into a channels-last 2-D layout (channel c*D + d)."""
    sample = sample_c.sampler()
    assert sample is not None, "the compiled sampler did not build (C compiler?)"
    gen = torch.Generator().manual_seed(4)
    b, c, d, h, w = 2, 5, 3, 6, 7
    volume = torch.randn(1 if shared else b, c, d, h, w, generator=gen)
    grid = 1.2 * (2 * torch.rand(b, d, h, w, 3, generator=gen) - 1)
    ref = F.grid_sample(volume.expand(b, -1, -1, -1, -1), grid, align_corners=False)     # (B, C, D, H, W)
    out = torch.empty(b, h, w, c * d)
    sample(volume.permute(0, 2, 3, 4, 1).contiguous(), grid, out, (h * w * c * d, 1, w * c * d, c * d, d))
    assert torch.allclose(out.permute(0, 3, 1, 2), ref.reshape(b, c * d, h, w), atol=1e-5)


def test_warp_samples_compiled_equal_the_torch_ones():
    """The dense-motion candidates written beside their heatmaps, and the warped source as 2-D planes,
    against grid_sample + cat + reshape (the PyTorch path)."""
    from float_rt.liveportrait.warp import coordinate_grid
    gen = torch.Generator().manual_seed(9)
    b, c, d, h, w, k = 2, 3, 4, 8, 8, 5
    f = torch.randn(b, c, d, h, w, generator=gen)
    grid = coordinate_grid(d, h, w, f)
    shifts = 0.3 * torch.randn(b, k, 1, 1, 1, 3, generator=gen)
    motions = torch.cat([grid[None, None].expand(b, 1, d, h, w, 3), grid[None, None] + shifts], dim=1)
    heat = torch.randn(b, k, d, h, w, generator=gen)
    got = fast.candidate_volume(f, motions, heat)
    warped = F.grid_sample(f.unsqueeze(1).expand(b, k + 1, c, d, h, w).reshape(-1, c, d, h, w),
                           motions.reshape(-1, d, h, w, 3), align_corners=False).view(b, k + 1, c, d, h, w)
    heat0 = torch.cat([torch.zeros(b, 1, d, h, w), heat], dim=1)
    want = torch.cat([heat0.unsqueeze(2), warped], dim=2).view(b, -1, d, h, w)
    assert got.is_contiguous(memory_format=torch.channels_last_3d) and torch.allclose(got, want, atol=1e-5)
    owner = torch.nn.Module()
    deformation = motions[:, 2].contiguous()
    for source in (f[:1], f[:1].expand(b, -1, -1, -1, -1), f):
        planes = fast.warped_planes(owner, source, deformation)
        ref = F.grid_sample(source.expand(b, -1, -1, -1, -1), deformation, align_corners=False)
        assert planes.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(planes, ref.reshape(b, c * d, h, w), atol=1e-5)
    with native.without_native():
        assert fast.candidate_volume(f, motions, heat) is None and fast.warped_planes(owner, f, deformation) is None


def test_cached_rebuilds_for_another_tensor_at_a_reused_address():
    """A derived value (the warp's channels-last source) belongs to the tensor it was built from: another
    tensor with the same address, version, shape and strides (as when a freed block is reused for the
    next step's batch) holding other data is another tensor."""
    from float_rt.packed import cached
    storage = torch.zeros(32).untyped_storage()

    def tensor():
        return torch.empty(0).set_(storage, 0, (4, 8))
    owner = torch.nn.Module()
    first = tensor()
    assert cached(owner, "_x", (first,), lambda: float(first.sum())) == 0.0
    assert cached(owner, "_x", (first,), lambda: -1.0) == 0.0            # the same tensor: kept
    assert cached(owner, "_x", (first[:],), lambda: -1.0) == 0.0         # a new view of it: kept
    tensor().fill_(1.0)                                                  # the memory changes under another name
    del first
    second = tensor()
    assert (second.data_ptr(), second._version) == (storage.data_ptr(), 1)
    assert cached(owner, "_x", (second,), lambda: float(second.sum())) == 32.0
    second.add_(1)
    assert cached(owner, "_x", (second,), lambda: float(second.sum())) == 64.0
