"""The CPU fast paths of the Ditto family compute what the plain paths compute.

Each test runs one module both ways (``float_rt.liveportrait.fast.reference_paths`` /
``float_rt.packed.unpacked`` / ``batched=False`` force the plain path) on random weights with
non-trivial statistics and compares; the published-size speed itself is ``float_rt.ditto.bench``.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from float_rt.liveportrait import fast
from float_rt.liveportrait.decoder import SpadeDecoder
from float_rt.liveportrait.layers import ConvBN
from float_rt.liveportrait.sizes import DecoderSizes, DenseMotionSizes, WarpSizes
from float_rt.liveportrait.warp import Warper


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights, biases and batch-norm statistics (the defaults would make BN an identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if t.dtype != torch.float32:
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif t.dim() >= 2:
                t.copy_(torch.randn(t.shape, generator=gen) / t[0].numel() ** 0.5)
            else:
                t.copy_(0.3 * torch.randn(t.shape, generator=gen) + (1.0 if name.endswith("bn.weight") else 0.0))
    return module.eval()


def both_paths(fn):
    with torch.no_grad():
        out = fn()
        with fast.reference_paths():
            ref = fn()
    return out, ref


@pytest.mark.parametrize("rank", [2, 3])
def test_conv_bn_folded_equals_conv_then_bn(rank):
    m = randomise(ConvBN(rank, 6, 10, 3, 1))
    x = torch.randn(2, 6, *([5] * rank))
    out, ref = both_paths(lambda: m(x))
    assert rel(out, ref) < 1e-6
    assert not fast.active(x)   # outside no_grad the plain path runs (training, autograd)
    # a changed batch norm is picked up (the folded weights are rebuilt)
    with torch.no_grad():
        m.bn.running_mean += 1.0
    out2, ref2 = both_paths(lambda: m(x))
    assert rel(out2, ref2) < 1e-6 and rel(out2, out) > 1e-3


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_conv_of_upsampled_input_on_the_coarse_grid(scale):
    x = torch.randn(2, 5, 7, 6)
    w, b = torch.randn(4, 5, 3, 3), torch.randn(4)
    ref = F.conv2d(F.interpolate(x, scale_factor=scale, mode="nearest"), w, b, padding=1)
    up = fast.upsampled_conv_weight(w, b, scale)
    # 2x2 kernels only at s = 2; at s = 4 the inner phases read one coarse row or column
    assert sorted(tuple(g[0].shape[2:]) for g in up.groups) == ([(2, 2)] if scale == 2 else
                                                               [(1, 1), (1, 2), (2, 1), (2, 2)])
    for layout in (torch.contiguous_format, torch.channels_last):
        out = fast.upsampled_conv3x3(x.contiguous(memory_format=layout), up)
        assert out.shape == ref.shape
        assert rel(out, ref) < 1e-6
    relu = fast.upsampled_conv3x3(x, up, relu=True)
    assert rel(relu, F.relu(ref)) < 1e-6


def test_instance_norm_both_layouts_and_batches():
    for b in (1, 3):
        x = 2 + 3 * torch.randn(b, 8, 9, 7)
        ref = F.instance_norm(x, eps=1e-5)
        for layout in (torch.contiguous_format, torch.channels_last):
            assert rel(fast.instance_norm(x.contiguous(memory_format=layout)), ref) < 1e-6


@pytest.mark.parametrize("batch", [1, 2])
def test_decoder_fast_path_equals_plain(batch):
    """Channels-last, merged SPADE convolutions, 1+gamma in the bias, the condition convolved on
    its own grid at 2x and 4x, and the skip without activation."""
    d = randomise(SpadeDecoder(DecoderSizes(block_expansion=8, max_features=32, out_channels=8)), seed=1)
    feature = torch.randn(batch, d.sizes.in_channels, 16, 16)
    out, ref = both_paths(lambda: d(feature))
    assert out.shape == ref.shape == (batch, 3, 128, 128)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert rel(out, ref) < 1e-5


def test_decoder_winograd_path_equals_direct_and_plain(monkeypatch):
    """Winograd F(4x4, 3x3) forced onto every 3x3 convolution of a small decoder (at the published
    sizes it runs on the wide ones): equal to the fast path with direct convolutions, and to plain."""
    monkeypatch.setattr(fast, "WINOGRAD_MIN_WIDTH", 1)
    monkeypatch.setattr(fast, "WINOGRAD_MIN_WIDTH_COMPILED", 1)
    d = randomise(SpadeDecoder(DecoderSizes(block_expansion=8, max_features=32, out_channels=8)), seed=5)
    feature = torch.randn(1, d.sizes.in_channels, 16, 12)
    with torch.no_grad():
        wino = d(feature)
        with fast.without_winograd():
            direct = d(feature)
        with fast.reference_paths():
            ref = d(feature)
    block = d.middle[0]
    assert {"_fast_winograd" in block.conv_in.__dict__, "_fast_shared_winograd" in block.__dict__,
            "_fast_gamma_beta_winograd" in block.mod_in.__dict__} == {True}
    assert rel(wino, direct) < 1e-5 and rel(wino, ref) < 1e-5
    assert fast.chosen_paths()["decoder_conv3x3"].startswith("Winograd")
    with fast.without_winograd():
        assert fast.chosen_paths()["decoder_conv3x3"] == "direct"


def small_warp(seed: int):
    """A warping network of the tiny case's shape, on random weights."""
    sizes = WarpSizes(block_expansion=8, max_features=32, reshape_channel=4,
                      dense_motion=DenseMotionSizes(block_expansion=8, max_features=32, num_blocks=2,
                                                    reshape_depth=8, compress=2))
    return randomise(Warper(sizes), seed=seed)


def test_warp_fast_path_equals_plain():
    w = small_warp(2)
    gen = torch.Generator().manual_seed(3)
    f_s = torch.randn(1, 4, 8, 16, 16, generator=gen)
    x_s = 0.5 * torch.randn(1, 21, 3, generator=gen)
    x_d = x_s + 0.05 * torch.randn(2, 21, 3, generator=gen)
    out, ref = both_paths(lambda: w(f_s, x_s, x_d))
    assert rel(out, ref) < 1e-5


WARP_PATHS = {
    # the hourglass's 3x3x3 convolutions as Winograd over (H, W) with 3-tap depth products, and the 3x3
    # mix convolution (forced onto a small warp), against direct convolutions
    "winograd": (fast.without_winograd, lambda w: ("_fast_winograd3d" in w.dense.hourglass.fuse.conv.__dict__
                                                   and "_fast_winograd_bn" in w.mix.conv.__dict__)),
    # the 7x7x7 mask head by FFT (the published path) against its stacked 2-D form; the occlusion head
    # folded from its taps either way
    "fft": (fast.without_fft, lambda w: ("_fast_fft" in w.dense.mask_head.__dict__
                                         and "_fast_one_output" in w.dense.occlusion_head.__dict__)),
}


@pytest.mark.parametrize("path, frames", [("winograd", 1), ("fft", 2)])
def test_warp_path_equals_its_fallback_and_plain(monkeypatch, path, frames):
    """The fast path with one algorithm on, the same with it switched off, and plain: all equal."""
    monkeypatch.setattr(fast, "WINOGRAD_MIN_WIDTH", 1)
    monkeypatch.setattr(fast, "WINOGRAD_MIN_WIDTH_COMPILED", 1)
    switch_off, took_it = WARP_PATHS[path]
    w = small_warp(6)
    gen = torch.Generator().manual_seed(7)
    f_s = torch.randn(1, 4, 8, 16, 16, generator=gen)
    x_s = 0.5 * torch.randn(1, 21, 3, generator=gen)
    x_d = x_s + 0.05 * torch.randn(frames, 21, 3, generator=gen)
    with torch.no_grad():
        out = w(f_s, x_s, x_d)
        with switch_off():
            fallback = w(f_s, x_s, x_d)
        with fast.reference_paths():
            ref = w(f_s, x_s, x_d)
    assert took_it(w)
    assert rel(out, fallback) < 1e-5 and rel(out, ref) < 1e-5


@pytest.fixture(scope="module")
def lmdm(tmp_path_factory):
    from float_rt.ditto.config import LMDMSizes
    from float_rt.ditto.loader import load_lmdm
    from float_rt.ditto.recipe import write_lmdm_recipe
    path = write_lmdm_recipe(tmp_path_factory.mktemp("lmdm") / "lmdm.pth", LMDMSizes.tiny())
    return load_lmdm(path, LMDMSizes.tiny())[0]


def _lmdm_inputs(model, batch=1):
    gen = torch.Generator().manual_seed(4)
    s = model.sizes
    return (torch.randn(batch, s.seq_len, s.motion_dim, generator=gen), torch.randn(batch, s.motion_dim, generator=gen),
            torch.randn(batch, s.seq_len, s.cond_dim, generator=gen), torch.full((batch,), 979, dtype=torch.long))


def test_lmdm_loaded_with_packed_linears_equals_f_linear(lmdm):
    from float_rt import packed
    if not packed.available():
        pytest.skip("no oneDNN")
    assert any(isinstance(m, packed.PackedLinear) for m in lmdm.modules())
    x, cond_frame, cond, t = _lmdm_inputs(lmdm)
    with torch.no_grad():
        out = lmdm(x, cond_frame, lmdm.audio_context(cond), t)
        with packed.unpacked():
            ref = lmdm(x, cond_frame, lmdm.audio_context(cond), t)
    assert rel(out, ref) < 1e-5


@pytest.mark.parametrize("batch", [1, 2])
def test_guidance_in_one_batch_equals_two_forwards(lmdm, batch):
    from float_rt.ditto.sampler import guided_prediction
    x, cond_frame, cond, t = _lmdm_inputs(lmdm, batch)
    with torch.no_grad():
        audio = lmdm.audio_context(cond)
        one = guided_prediction(lmdm, x, cond_frame, audio, t, 2.0)
        two = guided_prediction(lmdm, x, cond_frame, audio, t, 2.0, batched=False)
    assert one.shape == two.shape == x.shape
    assert rel(one, two) < 1e-5


def test_bench_reports_the_official_keys():
    from float_rt.ditto.bench import KEYS, run_ditto_bench
    from float_rt.ditto.config import LMDMSizes
    from float_rt.liveportrait.sizes import AppearanceSizes, MotionSizes, RendererSizes
    tiny = RendererSizes(appearance=AppearanceSizes(block_expansion=8, max_features=32, reshape_channel=4,
                                                    reshape_depth=8, num_resblocks=1),
                         motion=MotionSizes(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)),
                         warp=WarpSizes(block_expansion=8, max_features=32, reshape_channel=4,
                                        dense_motion=DenseMotionSizes(block_expansion=8, max_features=32, num_blocks=2,
                                                                      reshape_depth=8, compress=2)),
                         decoder=DecoderSizes(block_expansion=8, max_features=32, out_channels=8))
    before = torch.get_num_threads()
    res = run_ditto_bench(threads=1, repeat=1, log=lambda s: None, renderer_sizes=tiny, lmdm_sizes=LMDMSizes.tiny(),
                          official={"render_s_per_frame": 1.0})
    torch.set_num_threads(before)
    for key in (*KEYS, "lmdm_step_cached_s", "lmdm_window_s_10steps"):
        assert res[key] > 0
    assert res["ratios"]["render_s_per_frame"] == pytest.approx(1.0 / res["render_s_per_frame"])
    assert res["chosen_paths"]["renderer"]["batchnorm_folded"]
