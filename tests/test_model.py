"""Model math beyond the reference case: other sizes, guidance settings, emotions."""
import math

import pytest
import torch
import torch.nn.functional as F

from float_rt.config import ModelConfig, SamplingConfig


def _naive_modulated(conv, x, latent):
    """Per-sample weight modulation + grouped conv (the textbook StyleGAN2 form)."""
    b, cin, h, w = x.shape
    style = conv.modulation(latent)
    weight = conv.scale * conv.weight[None] * style[:, None, :, None, None]
    if conv.demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum((2, 3, 4)) + 1e-8)[:, :, None, None, None]
    cout, k = weight.shape[1], weight.shape[-1]
    if conv.upsample:
        wt = weight.transpose(1, 2).reshape(b * cin, cout, k, k)
        out = F.conv_transpose2d(x.reshape(1, b * cin, h, w), wt, stride=2, groups=b)
        out = out.view(b, cout, *out.shape[-2:])
        from float_rt.motion.layers import upfirdn2d
        return upfirdn2d(out, conv.blur, pad=(1, 1))
    out = F.conv2d(x.reshape(1, b * cin, h, w), weight.reshape(b * cout, cin, k, k), padding=k // 2, groups=b)
    return out.view(b, cout, h, w)


@pytest.mark.parametrize("upsample,demod,k", [(False, True, 3), (True, True, 3), (False, False, 1)])
def test_activation_scaled_modulated_conv_equals_weight_modulation(upsample, demod, k):
    from float_rt.motion.decoder import ModulatedConv
    torch.manual_seed(0)
    conv = ModulatedConv(16, 8, k, 32, demodulate=demod, upsample=upsample)
    x, latent = torch.randn(3, 16, 8, 8), torch.randn(3, 32)
    ours, ref = conv(x, latent), _naive_modulated(conv, x, latent)
    assert ours.shape == ref.shape
    assert (ours - ref).norm() / ref.norm() < 1e-5


@pytest.mark.parametrize("size", [32, 64])
def test_decoder_batches_frames_independently(size):
    from float_rt.motion import MotionAutoencoder
    torch.manual_seed(1)
    cfg = ModelConfig(input_size=size, dim_w=32, dim_m=4, channel_base=256, channel_max=16)
    ae = MotionAutoencoder(cfg).eval()
    s_r, coeffs, r_s, feats = ae.encode_reference(torch.rand(1, 3, size, size) * 2 - 1)
    assert s_r.shape == (1, 32) and coeffs.shape == (1, 4) and r_s.shape == (1, 32)
    assert [f.shape[-1] for f in feats] == [2 ** i for i in range(3, int(math.log2(size)) + 1)]
    motion = torch.randn(5, 32)
    batch = ae.decode(s_r, motion, feats)
    single = torch.cat([ae.decode(s_r, motion[i:i + 1], feats) for i in range(5)])
    assert batch.shape == (5, 3, size, size)
    assert (batch - single).norm() / single.norm() < 1e-4  # float32 GEMM blocking differs with batch
    assert not torch.allclose(batch[0], batch[1])  # different motion, different frame


def test_motion_directions_are_orthonormal_and_linear():
    from float_rt.motion.direction import MotionDirections
    d = MotionDirections(64, 6)
    q = d.basis()
    assert torch.allclose(q.T @ q, torch.eye(6), atol=1e-5)
    a, b = torch.randn(2, 6), torch.randn(2, 6)
    assert torch.allclose(d(a + b), d(a) + d(b), atol=1e-5)


def test_attention_is_local():
    from float_rt.fmt import local_attention_mask
    m = local_attention_mask(6, 2)
    assert m[0].tolist() == [True, True, True, False, False, False]
    assert m[3].tolist() == [False, True, True, True, True, True]


def _tiny_fmt(depth=1):
    from float_rt.fmt import FlowMatchingTransformer
    torch.manual_seed(2)
    cfg = ModelConfig(dim_w=16, dim_a=16, dim_h=32, fmt_depth=depth, num_heads=4, num_frames=8, num_prev_frames=2)
    return cfg, FlowMatchingTransformer(cfg).eval()


def _conds(cfg, b=1):
    from float_rt.sampler import Conditions
    return Conditions(torch.randn(b, cfg.num_frames, 16), torch.randn(b, 16),
                      F.one_hot(torch.tensor([3] * b), 7).float()[:, None],
                      torch.randn(b, cfg.num_prev_frames, 16), torch.randn(b, cfg.num_prev_frames, 16))


@pytest.mark.parametrize("a,e", [(2.0, 1.0), (1.0, 3.0), (0.5, 2.5)])
def test_guidance_combines_three_conditionings(a, e):
    from float_rt.sampler import Guidance, guided_velocity
    cfg, fmt = _tiny_fmt()
    c = _conds(cfg)
    x, t = torch.randn(1, cfg.num_frames, 16), torch.tensor([0.4])
    z_a, z_e = torch.zeros_like(c.wa), torch.zeros_like(c.we)
    u = fmt(t, x, z_a, c.wr, z_e, c.prev_x, c.prev_wa)
    full = fmt(t, x, c.wa, c.wr, c.we, c.prev_x, c.prev_wa)
    audio = fmt(t, x, c.wa, c.wr, z_e, c.prev_x, c.prev_wa)
    got = guided_velocity(fmt, t, x, c, Guidance(a, e, True))
    assert torch.allclose(got, u + a * (audio - u) + e * (full - audio), atol=1e-5)
    # Unguided path: exactly the conditional field.
    assert torch.allclose(guided_velocity(fmt, t, x, c, Guidance(1.0, 1.0, False)), full, atol=1e-6)


def test_guidance_of_a_batch_equals_each_stream_alone():
    from float_rt.sampler import Conditions, Guidance, guided_velocity
    cfg, fmt = _tiny_fmt()
    c = _conds(cfg, b=3)
    x, t = torch.randn(3, cfg.num_frames, 16), torch.tensor([0.7])
    g = Guidance(2.0, 1.5, True)
    both = guided_velocity(fmt, t, x, c, g)
    for i in range(3):
        ci = Conditions(*(getattr(c, f)[i:i + 1] for f in ("wa", "wr", "we", "prev_x", "prev_wa")))
        assert torch.allclose(both[i:i + 1], guided_velocity(fmt, t, x[i:i + 1], ci, g), atol=1e-5)


@pytest.mark.parametrize("nfe", [2, 5, 10])
def test_euler_uses_nfe_minus_one_evaluations(nfe):
    from float_rt.sampler import Guidance, sample_window, time_grid
    calls = []

    class Linear(torch.nn.Module):
        def forward(self, t, x, *rest):
            calls.append(float(t))
            return torch.cat([rest[-2], torch.ones_like(x)], dim=1)  # velocity 1 on current frames

    cfg = ModelConfig(dim_w=16, dim_a=16, num_frames=8, num_prev_frames=2)
    x0 = torch.zeros(1, 8, 16)
    out = sample_window(Linear(), x0, _conds(cfg), Guidance(enabled=False), time_grid(nfe))
    assert len(calls) == nfe - 1
    assert calls[0] == 0.0
    assert torch.allclose(out, torch.ones_like(out))  # integrates to t = 1


def test_windows_carry_context_and_pad_the_last(monkeypatch):
    import float_rt.sampler as S
    cfg = ModelConfig(dim_w=16, dim_a=16, num_frames=8, num_prev_frames=2)
    seen = []

    def fake_window(fmt, x0, c, g, grid):
        seen.append(c)
        return x0 + len(seen)

    monkeypatch.setattr(S, "sample_window", fake_window)
    wa = torch.arange(19, dtype=torch.float32)[None, :, None].expand(1, 19, 16)
    out = S.sample_motion(None, wa, torch.zeros(1, 16), torch.zeros(1, 1, 7), cfg,
                          SamplingConfig(nfe=3, fix_noise_seed=True, seed=4))
    assert out.shape == (1, 19, 16) and len(seen) == 3
    assert torch.equal(seen[0].prev_x, torch.zeros(1, 2, 16))
    assert torch.equal(seen[1].prev_wa[0, :, 0], torch.tensor([6.0, 7.0]))
    assert torch.equal(seen[2].wa[0, :, 0], torch.tensor([16.0, 17, 18, 18, 18, 18, 18, 18]))
    # official noise policy: every window starts from the same seeded draw
    assert torch.allclose(out[:, :8] - 1, out[:, 8:16] - 2, atol=1e-6)


def test_fresh_noise_policy_differs_per_window():
    from float_rt.sampler import WindowNoise
    n = WindowNoise((1, 4, 3), seed=7, fixed=False)
    a, b = n.next(), n.next()
    assert not torch.equal(a, b)
    assert torch.equal(WindowNoise((1, 4, 3), seed=7, fixed=False).next(), a)  # still reproducible


def test_emotion_condition():
    from float_rt.config import EMOTIONS
    from float_rt.sampler import emotion_condition
    onehot = emotion_condition("Happy", None, 7, EMOTIONS)
    assert onehot.shape == (1, 1, 7) and onehot[0, 0, 3] == 1 and onehot.sum() == 1
    probs = torch.softmax(torch.randn(1, 7), -1)
    assert torch.equal(emotion_condition(None, probs, 7, EMOTIONS), probs[:, None])


def test_audio_features_follow_the_frame_clock(small_model):
    """T = ceil(n * fps / sr) frames, and audio is padded to T frames of samples first."""
    for n in (16000, 16001, 8000, 640 * 7):
        iv = torch.randn(1, n)
        wa = small_model.encode_audio(iv)
        assert wa.shape == (1, math.ceil(n * 25 / 16000), 128)
        assert torch.isfinite(wa).all()


def test_packed_linear_is_the_same_linear():
    from float_rt.packed import PackedLinear, available, pack_linears, unpacked
    if not available():
        pytest.fail("this torch build has no oneDNN linear")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 8, bias=False))
    keys = set(net.state_dict())
    x = torch.randn(3, 7, 64)
    with torch.no_grad():
        ref = net(x)
        pack_linears(net)
        assert all(isinstance(net[i], PackedLinear) for i in (0, 2)) and set(net.state_dict()) == keys
        out = net(x)
        assert (out - ref).abs().max() < 1e-5
        with unpacked():
            assert torch.equal(net(x), ref)                      # F.linear, bit for bit
        net.load_state_dict({k: v * 2 for k, v in net.state_dict().items()})   # repacked after a new weight
        with unpacked():
            ref2 = net(x)
        assert (net(x) - ref2).abs().max() < 1e-4
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert net(x).dtype == torch.bfloat16                # autocast: the F.linear path
    y = net(x.requires_grad_())                                  # training: F.linear, with gradients
    y.sum().backward()
    assert x.grad is not None


def test_cpu_tuning_and_info():
    from float_rt.cpu import cpu_info, tune
    info = cpu_info()
    assert {"cpu", "threads", "avx512f", "avx512_bf16", "amx_tile", "onednn"} <= set(info)
    try:
        done = tune()
        assert done["flush_denormal"] is True and torch.tensor([1e-39]).mul(1.0).item() == 0.0
        assert done["keep_heap"] is True              # Linux with glibc (this machine and CI)
    finally:
        torch.set_flush_denormal(False)
