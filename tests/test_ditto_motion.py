"""Ditto audio-to-motion (float_rt/ditto) against the official outputs of shared/reference/ditto.

The case runs the official code on recipe weights; each key must be within tolerances.json
(relative error ||ours - ref|| / ||ref|| in float64).  Tiny sizes only; the full-size model is
built on the meta device.
"""
import json

import numpy as np
import pytest
import torch

from float_rt.ditto import (
    DDIMScheduler,
    LMDMSizes,
    MotionNoise,
    SamplerOptions,
    SourceCondition,
    WindowOptions,
    hubert,
    load_lmdm,
    offline_audio2motion,
    pack_motion,
)
from float_rt.ditto.keys import lmdm_keys
from float_rt.ditto.lmdm import MotionDecoder
from float_rt.ditto.pipeline import clip_windows
from float_rt.ditto.recipe import hubert_stub_weights, lmdm_recipe_state, write_lmdm_recipe
from float_rt.ditto.sampler import guided_prediction
from float_rt.ditto.windows import num_windows
from float_rt.errors import CheckpointError

from conftest import DITTO_REF


ROOT = DITTO_REF
CASE = ROOT / "cases" / "tiny"
LMDM_FILE = "lmdm_v0.4_hubert.pth"


def relative_error(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        return float("inf")
    if np.isnan(ours).any():
        return float("nan")
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny tensors gain nothing from intra-op threads, and on a busy shared machine two threads
    # thrash (about 70x slower per forward).  The tolerances cover 1 vs 2 threads by design.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def case():
    config = json.loads((CASE / "config.json").read_text())
    tol = json.loads((CASE / "tolerances.json").read_text())
    return config, dict(np.load(CASE / "inputs.npz")), dict(np.load(CASE / "expected.npz")), tol


def check(case, key, ours):
    *_, expected, tol = case
    err = relative_error(ours, expected[key])
    limit = tol.get(key, tol["default"])
    assert err <= limit, f"{key}: relative error {err:.3g} > {limit:g}"   # NaN fails too
    return err


@pytest.fixture(scope="module")
def sizes(case):
    s = case[0]["sizes"]["lmdm"]
    return LMDMSizes(motion_dim=s["motion_feat_dim"], cond_dim=s["audio_feat_dim"], seq_len=s["seq_frames"],
                     width=s["latent_dim"], ff_width=s["ff_size"], num_layers=s["num_layers"], num_heads=s["num_heads"])


@pytest.fixture(scope="module")
def model(sizes, tmp_path_factory):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    path = write_lmdm_recipe(tmp_path_factory.mktemp("ditto") / LMDM_FILE, sizes)
    m, report = load_lmdm(path, sizes)
    assert report.ignored == [] and report.other_entries == []
    return m


@pytest.fixture(scope="module")
def options(case):
    kw = case[0]["setup_kwargs"]
    window = WindowOptions(overlap=kw["overlap_v2"], smooth_k=kw["smo_k_d"], fix_cond_every=kw["fix_kp_cond"],
                           fix_cond_dims=tuple(kw["fix_kp_cond_dim"]) if kw["fix_kp_cond_dim"] else None,
                           online=kw["online_mode"])
    return window, SamplerOptions(steps=kw["sampling_timesteps"], guidance_weight=case[0]["run"]["guidance_weight"])


@pytest.fixture(scope="module")
def source(case):
    _, inputs, expected, _ = case
    emo = case[0]["setup_kwargs"]["emo"]
    cond = SourceCondition.build(inputs["eye_open"], inputs["eye_ball"], expected["kp_kp"], emotion=emo)
    motion = pack_motion(*(expected[f"kp_{k}"] for k in ("scale", "pitch", "yaw", "roll", "t", "exp")))
    return cond, motion


@pytest.fixture(scope="module")
def features(case):
    outputs = iter(case[1]["hubert_chunk_out"])   # the i-th HuBERT call returns the i-th recorded output
    return hubert.offline_features(case[1]["waveform"], lambda chunk: next(outputs))


@pytest.fixture(scope="module")
def offline(case, model, options, source, features):
    window, sampler = options
    noise = MotionNoise(torch.from_numpy(case[1]["noise_steps"]), torch.from_numpy(case[1]["noise_init"]))
    return offline_audio2motion(model, DDIMScheduler(sampler), torch.from_numpy(features), source[0], source[1],
                                window, noise)


# --- HuBERT -------------------------------------------------------------------------------------

def test_offline_hubert_chunks(case):
    chunks, n = hubert.offline_chunks(case[1]["waveform"])
    assert n == case[0]["run"]["num_f"] and len(chunks) == case[0]["run"]["n_hubert_chunks"]
    check(case, "hubert_chunks", chunks)


def test_aud_feat_from_injected_chunk_outputs(case, features):
    check(case, "aud_feat", features)
    assert np.allclose(features, case[1]["hubert_features"], rtol=0, atol=1e-6)


def test_online_chunk_geometry():
    wav = np.arange(1, 10001, dtype=np.float32)
    chunks = hubert.online_chunks(wav)
    padded = np.concatenate([np.zeros(1920, np.float32), wav])
    offsets = list(range(0, len(padded), 3200))
    assert len(chunks) == len(offsets) == 4 and offsets[:3] == [0, 3200, 6400]
    for off, c in zip(offsets, chunks):
        assert c.shape == (6480,) and c.dtype == np.float32
        part = padded[off:off + 6480]
        assert np.array_equal(c[:len(part)], part) and not c[len(part):].any()
    assert not chunks[0][:1920].any() and chunks[0][1920] == 1.0
    assert len(padded) - offsets[-1] < 6480   # the last one is zero-padded


def test_stub_onnx_runner_reproduces_chunk_outputs(case, tmp_path):
    path = hubert.write_stub_onnx(tmp_path / "hubert_stub.onnx", *hubert_stub_weights())
    runner = hubert.HubertRunner(path, threads=1)
    ref = case[1]["hubert_chunk_out"]
    ours = np.stack([runner(c) for c in case[2]["hubert_chunks"]])
    assert ours.shape == ref.shape == (13, 20, 1024)
    assert relative_error(ours, ref) <= 1e-5


def test_missing_onnx_is_one_line_error(tmp_path):
    with pytest.raises(CheckpointError) as err:
        hubert.HubertRunner(tmp_path / "hubert_streaming_fix_kv.onnx")
    assert "\n" not in str(err.value) and "hubert_streaming_fix_kv.onnx" in str(err.value)


# --- condition, motion layout, schedule ---------------------------------------------------------

def test_aud_cond_windows(case, source, features, sizes, options):
    windows = clip_windows(torch.from_numpy(features), source[0], sizes.seq_len, options[0])
    assert len(windows) == case[0]["run"]["n_windows"]
    assert num_windows(len(features), sizes.seq_len, options[0]) == len(windows)
    check(case, "aud_cond_windows", windows)


def test_source_motion_is_first_cond_frame(case, source):
    assert torch.equal(source[1], torch.from_numpy(case[2]["kp_cond_windows"][0]))


def test_time_pairs(case, options):
    assert DDIMScheduler(options[1]).time_pairs == [tuple(p) for p in case[0]["run"]["time_pairs"]]
    assert DDIMScheduler(SamplerOptions(steps=10)).time_pairs[:2] == [(999, 899), (899, 799)]
    assert DDIMScheduler(SamplerOptions(steps=10)).time_pairs[-1] == (99, -1)


# --- LMDM ---------------------------------------------------------------------------------------

def test_lmdm_first_step(case, model, options):
    _, inputs, expected, _ = case
    x = torch.from_numpy(inputs["noise_init"][:1])
    cond_frame = torch.from_numpy(expected["kp_cond_windows"][:1])
    audio = model.audio_context(torch.from_numpy(expected["aud_cond_windows"][:1]))
    scheduler = DDIMScheduler(options[1])
    t = scheduler.timestep(0)
    assert t.item() == 999
    with torch.no_grad():
        check(case, "lmdm_step_uncond", model(x, cond_frame, model.null_context(), t))
        check(case, "lmdm_step_cond", model(x, cond_frame, audio, t))
        x_start = guided_prediction(model, x, cond_frame, audio, t, options[1].guidance_weight)
    check(case, "lmdm_step_x_start", x_start)
    check(case, "lmdm_step_pred_noise", scheduler.noise_from_start(x, x_start, 0))


def test_offline_windows_motion_and_d0(case, offline):
    check(case, "kp_cond_windows", torch.stack(offline.trace.cond_frames))
    check(case, "lmdm_windows", torch.stack(offline.trace.windows))
    check(case, "motion", offline.motion)
    check(case, "d0", offline.d0)
    assert offline.motion.dtype == torch.float32


# --- loading the published file -------------------------------------------------------------------

def test_full_size_keys_match_published_manifest():
    manifest = json.loads((ROOT / "keys" / "lmdm_v0.4_hubert.json").read_text())
    with torch.device("meta"):
        model = MotionDecoder(LMDMSizes())
    assert {e.published: list(e.shape) for e in lmdm_keys(model)} == manifest


def test_recipe_file_matches_case_keys(case, sizes):
    keys = json.loads((CASE / "keys.json").read_text())[LMDM_FILE]
    assert {k: list(v.shape) for k, v in lmdm_recipe_state(sizes).items()} == keys


def _write(path, state, **extra):
    torch.save({"model_state_dict": state, **extra}, str(path))
    return path


def test_loader_reports_extra_keys_and_entries(tmp_path, sizes):
    state = lmdm_recipe_state(sizes)
    state["ema.extra"] = torch.zeros(3)
    _, report = load_lmdm(_write(tmp_path / LMDM_FILE, state, optimizer_step=7), sizes)
    assert report.ignored == ["ema.extra"] and report.other_entries == ["optimizer_step"]
    assert "ema.extra" in report.summary()


def test_loader_missing_key_names_file_key_and_shape(tmp_path, sizes):
    state = lmdm_recipe_state(sizes)
    del state["seqTransDecoder.stack.1.film2.block.1.weight"]
    path = _write(tmp_path / LMDM_FILE, state)
    with pytest.raises(CheckpointError, match=r"missing key seqTransDecoder\.stack\.1\.film2\.block\.1\.weight "
                                              r"\(expected shape \[128, 64\]\)") as err:
        load_lmdm(path, sizes)
    assert str(path) in str(err.value)


def test_loader_wrong_shape_names_file_key_and_both_shapes(tmp_path, sizes):
    state = lmdm_recipe_state(sizes)
    state["cond_projection.weight"] = torch.zeros(64, 1059)   # the stale 1024+35 condition width
    path = _write(tmp_path / LMDM_FILE, state)
    with pytest.raises(CheckpointError, match=r"key cond_projection\.weight: expected shape \[64, 1103\], "
                                              r"file has \[64, 1059\]") as err:
        load_lmdm(path, sizes)
    assert str(path) in str(err.value)


def test_loader_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="LMDM weights not found"):
        load_lmdm(tmp_path / LMDM_FILE)


# --- the window step as a live session would drive it ---------------------------------------------

def test_window_carry_online_fuse_and_cond_reset():
    from float_rt.ditto.windows import WindowCarry, advance
    opts = WindowOptions(overlap=30, smooth_k=3, fix_cond_every=1, fix_cond_dims=(0, 202), online=True)
    L = 40
    assert (opts.valid(L), opts.fuse_length(L)) == (10, 10)
    gen = torch.Generator().manual_seed(0)
    source = torch.randn(265, generator=gen)
    w1, w2 = torch.randn(L, 265, generator=gen), torch.randn(L, 265, generator=gen)
    carry = advance(WindowCarry.start(source), w1, opts)
    assert carry.result.shape == (L, 265) and carry.windows_done == 1
    assert torch.equal(carry.result[:, 202:], w1[:, 202:])           # expression is never smoothed
    assert torch.allclose(carry.result[0, :202], w1[:2, :202].mean(0))  # edge rows average existing rows only
    assert torch.equal(carry.cond_frame[202:], source[202:])          # reset to the source...
    assert torch.equal(carry.cond_frame[:202], carry.result[L - 31, :202])  # ...keeping dims 0..201 of the row
    before = carry.result.clone()
    carry = advance(carry, w2, opts)
    assert carry.result.shape == (L + 10, 265) and carry.windows_done == 2
    alpha = (torch.arange(10, dtype=torch.float32) / 10)[:, None]
    fused = before[30:40, 202:] * (1 - alpha) + w2[20:30, 202:] * alpha   # r2 = rows 20..29 of the new window
    assert torch.allclose(carry.result[30:40, 202:], fused)
    assert torch.equal(carry.result[40:, 202:], w2[30:, 202:])
    assert torch.equal(carry.result[:29], before[:29])                   # rows before the seam are untouched


@pytest.mark.parametrize("n_stream", [203, 180])   # 180: a full window ends exactly at the end
def test_live_session_emits_the_fused_rows(source, n_stream):
    """Live windows sit where the offline loop puts them over (silence features + stream), so the
    emitted rows are the fused sequence from L - fuse on, and d0 is frame 0 of window 1."""
    from float_rt.ditto.condition import build_condition
    from float_rt.ditto.live import LiveMotion
    from float_rt.ditto.windows import WindowCarry, advance, window_conditions
    L, opts = 40, WindowOptions(overlap=10, online=True)
    gen = torch.Generator().manual_seed(1)
    silence, stream = torch.randn(10, 1024, generator=gen), torch.randn(n_stream, 1024, generator=gen)

    def sample(cond_frame, cond):   # any deterministic function of both inputs
        return 0.5 * cond[:, :265] + 0.9 * cond_frame + 0.01 * cond[:, 265:530].cumsum(0)

    live = LiveMotion(source[1], source[0], silence, sample, opts, L)
    rows = [live.push(stream[i:i + 5]) for i in range(0, len(stream), 5)]
    assert sum(len(r) for r in rows[:5]) == 0 and live.state.d0 is not None   # window 1 is not emitted
    rows.append(live.finish())
    emitted = torch.cat(rows)
    assert live.state.carry.result.shape[0] <= 2 * L

    carry = WindowCarry.start(source[1])
    everything = torch.cat([silence, stream])
    for i, w in enumerate(window_conditions(build_condition(everything, source[0]), L, 30)):
        carry = advance(carry, sample(carry.cond_frame, w), opts)
        if i == 0:
            d0 = carry.result[0]
        if 30 * i + L > len(everything):   # live stops at the first window padded past the end
            break
    assert emitted.shape == (len(everything) - 30, 265)
    assert torch.equal(emitted, carry.result[30:30 + len(emitted)])
    assert torch.equal(live.state.d0, d0)


def test_full_size_forward_shapes_on_meta():
    with torch.device("meta"):
        model = MotionDecoder(LMDMSizes())
        x, cond_frame, cond = torch.empty(1, 80, 265), torch.empty(1, 265), torch.empty(1, 80, 1103)
        t = torch.full((1,), 999, dtype=torch.long)
        assert model(x, cond_frame, model.audio_context(cond), t).shape == (1, 80, 265)
        assert model(x, cond_frame, model.null_context(), t).shape == (1, 80, 265)
