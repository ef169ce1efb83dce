"""The streaming session engine, on the small config with recipe weights (no timing assertions)."""
import asyncio

import numpy as np
import pytest
import torch
from clock import FakeClock
from conftest import ROOT

from float_rt.errors import FloatRTError
from float_rt.media import load_audio, load_image, prepare_reference
from float_rt.pipeline import FloatPipeline, sampling_with
from streaming.audio_input import AudioInput, AudioInputError
from streaming.config import StreamConfig, load_stream_config
from streaming.engine import Engine
from float_rt.float_live import FloatLive
from float_rt.stream_audio import RunningNorm, encode_windows


@pytest.fixture(scope="module")
def pipe(small_cfg, small_ckpt):
    return FloatPipeline.from_checkpoints(small_ckpt, small_cfg, "cpu")


@pytest.fixture(scope="module")
def image(portrait_png, small_cfg):
    return prepare_reference(load_image(portrait_png), small_cfg.model.input_size, crop=False)


@pytest.fixture(scope="module")
def speech(speech_wav):
    return load_audio(speech_wav)


def make_engine(pipe, clock=None, **cfg):
    kw = {"clock": clock} if clock else {}
    sc = StreamConfig(**cfg)
    return Engine(FloatLive(pipe.model, pipe.cfg, sc, True, "cpu", decode_batch=sc.decode_batch), sc, **kw)


def drain(engine, *sessions):
    frames = {s.id: [] for s in sessions}
    while engine.step():
        for s in sessions:
            frames[s.id] += s.take_frames()
    for s in sessions:
        frames[s.id] += s.take_frames()
    return [frames[s.id] for s in sessions]


def motion_of(frames):
    return torch.from_numpy(np.stack([f.motion for f in frames]))[None]


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


# ------------------------------------------------------------------ equality with offline
@pytest.mark.parametrize("emotion,a_cfg,e_cfg,nfe", [("happy", 2.0, 1.0, 10), ("sad", 1.5, 2.5, 5),
                                                     ("neutral", 1.0, 1.0, 3), (None, 2.0, 1.0, 4)])
def test_chunk50_with_offline_features_equals_offline(pipe, image, speech, emotion, a_cfg, e_cfg, nfe):
    ref = pipe.encode_reference(image)
    iv = pipe.input_values(speech)
    sampling = sampling_with(pipe.cfg.sampling, emotion=emotion, a_cfg_scale=a_cfg, e_cfg_scale=e_cfg, nfe=nfe)
    offline = pipe.sample(ref, iv, sampling)
    engine = make_engine(pipe)
    s = engine.open_session(image, engine.default_options(emotion=emotion, a_cfg_scale=a_cfg, e_cfg_scale=e_cfg,
                                                          nfe=nfe, chunk_frames=50, lookahead_frames=0))
    if emotion is None:  # predicted: give the session the offline whole-clip prediction
        s.set_emotion(None, probs=pipe.model.emotion(iv))
    s.push_features(pipe.model.encode_audio(iv)[0])
    (frames,) = drain(engine, s)
    assert len(frames) == offline.shape[1]
    assert rel(motion_of(frames), offline) <= 1e-4
    assert [f.pts for f in frames] == list(range(len(frames)))


def test_noise_is_aligned_to_the_frame_clock(pipe, image, speech):
    """Smaller chunks draw each frame's start noise from the same row as offline: close, not equal."""
    ref, iv = pipe.encode_reference(image), pipe.input_values(speech)
    offline = pipe.sample(ref, iv, sampling_with(pipe.cfg.sampling, emotion="happy"))
    engine = make_engine(pipe)
    errs = {}
    for noise in ("fixed", "fresh"):
        s = engine.open_session(image, engine.default_options(emotion="happy", nfe=10, chunk_frames=10,
                                                              lookahead_frames=2, noise=noise))
        s.push_features(pipe.model.encode_audio(iv)[0])
        (frames,) = drain(engine, s)
        errs[noise] = rel(motion_of(frames), offline)
    assert errs["fixed"] < 0.3 < errs["fresh"]


def test_sessions_batched_together_do_not_mix(pipe, image, speech):
    engine = make_engine(pipe)
    other_img = torch.flip(image, dims=[3])
    opts = dict(nfe=4, chunk_frames=5, lookahead_frames=4)
    alone_a = engine.open_session(image, engine.default_options(emotion="happy", **opts))
    alone_a.push_audio(speech, 16000)
    alone_a.end_input()
    (ref_frames,) = drain(engine, alone_a)
    a = engine.open_session(image, engine.default_options(emotion="happy", **opts))
    b = engine.open_session(other_img, engine.default_options(emotion="angry", a_cfg_scale=3.0, **opts))
    a.push_audio(speech, 16000)
    b.push_audio(speech[::-1].copy() * 0.5, 16000)
    a.end_input()
    b.end_input()
    fa, fb = drain(engine, a, b)
    assert len(fa) == len(ref_frames) == len(fb)
    assert rel(motion_of(fa), motion_of(ref_frames)) < 1e-5
    # The same frames up to float rounding (oneDNN's GEMM blocking depends on the batch size).
    diff = np.abs(np.stack([f.image for f in fa]).astype(int) - np.stack([f.image for f in ref_frames]))
    assert diff.max() <= 2 and (diff > 1).mean() < 1e-4
    assert rel(motion_of(fb), motion_of(fa)) > 0.05


# ------------------------------------------------------------------ audio features
def test_streaming_frame_clock_matches_offline_mapping(pipe, speech):
    """With the whole clip in one window, streamed features are the offline ones."""
    spf = pipe.cfg.model.samples_per_frame
    n = len(speech) // spf * spf
    clip = speech[:n]
    offline = pipe.model.encode_audio(pipe.input_values(clip))[0]
    norm = RunningNorm(floor=0.0)
    norm.update(clip)
    (streamed,) = encode_windows(pipe.model.audio, [torch.from_numpy(norm.apply(clip))], spf)
    assert streamed.shape == offline.shape
    assert rel(streamed, offline) < 1e-4


def test_more_context_brings_streamed_features_closer(pipe, image, speech):
    from float_rt.reference import relative_error as rel_err
    offline = pipe.model.encode_audio(pipe.input_values(speech))[0].numpy()
    engine = make_engine(pipe)
    errs = []
    for left, look in [(5, 0), (50, 8), (200, 50)]:
        s = engine.open_session(image, engine.default_options(emotion="happy", left_frames=left,
                                                              lookahead_frames=look, render=False))
        s.push_audio(speech, 16000)
        s.end_input()
        (frames,) = drain(engine, s)
        errs.append(rel_err(np.stack([f.features for f in frames]), offline))
    assert errs[0] > errs[1] > errs[2]


# ------------------------------------------------------------------ audio input
def test_resampler_is_chunk_invariant():
    rng = np.random.default_rng(0)
    x = (np.sin(np.arange(48000) / 48000 * 2 * np.pi * 220) * 0.5).astype(np.float32)
    whole, pieces = AudioInput(), AudioInput()
    whole.push(x, 48000)
    whole.flush()
    i = 0
    while i < x.size:
        n = int(rng.integers(1, 2000))
        pieces.push(x[i:i + n], 48000)
        i += n
    pieces.flush()
    assert whole.end == pieces.end == 16000
    np.testing.assert_array_equal(whole.buffer, pieces.buffer)
    # A sine stays a clean sine through the chunk boundaries (no clicks): tiny residual.
    t = np.arange(16000) / 16000
    ideal = 0.5 * np.sin(2 * np.pi * 220 * t)
    assert np.abs(pieces.buffer[100:-100] - ideal[100:-100]).max() < 0.02


def test_audio_appends_cost_the_chunk_not_the_queue():
    """A client may push one sample at a time: appending must not copy what is queued each time
    (that made a flood of tiny PCM messages quadratic).  Storage grows by doubling."""
    from streaming.audio_input import Samples
    buf, ref, moves = Samples(), [], 0
    rng = np.random.default_rng(0)
    for k in range(100_000):
        x = rng.standard_normal(1).astype(np.float32)
        before = buf._data
        buf.append(x)
        moves += buf._data is not before
        ref.append(x)
        if k % 10_000 == 9_999:
            buf.drop_front(5_000)               # the engine forgets what it has consumed
            del ref[:5_000]
    np.testing.assert_array_equal(buf.view, np.concatenate(ref))
    assert moves <= 40                           # reallocations: logarithmic, not one per append
    buf.keep_front(10)
    np.testing.assert_array_equal(buf.view, np.concatenate(ref[:10]))


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_rates_layouts_and_dtypes(rate):
    a = AudioInput()
    mono = np.zeros(rate // 10, np.float32)
    a.push(mono, rate)
    a.push((np.ones((rate // 10, 2)) * 1000).astype(np.int16), rate)   # (samples, channels) int16
    a.flush()
    assert abs(a.end - 3200) <= 2
    assert abs(a.buffer[-800:-100].mean() - 1000 / 32768) < 1e-3


def test_bad_audio_is_sanitised_or_rejected():
    a = AudioInput()
    a.push(np.array([0.1, np.nan, np.inf, 1.5, -0.2], np.float32), 16000)
    assert a.sanitised == 3 and np.all(np.isfinite(a.buffer)) and np.abs(a.buffer).max() <= 1.0
    for bad, rate in [(np.ones(10) * 3000.0, 16000), (np.zeros((2, 3, 4)), 16000), (np.zeros((10, 20)), 16000),
                      (np.array(["a"]), 16000), (np.zeros(10), 1000), (np.zeros(10), 16000.5)]:
        with pytest.raises(AudioInputError):
            a.push(bad, rate)


def test_pts_gap_is_filled_and_overlap_dropped():
    a = AudioInput()
    a.push(np.ones(1000, np.float32) * 0.1, 16000, pts=0)
    a.push(np.ones(1000, np.float32) * 0.2, 16000, pts=1500)   # 500 lost samples
    a.push(np.ones(1000, np.float32) * 0.3, 16000, pts=2000)   # 500 overlap
    assert a.end == 3000
    assert np.all(a.buffer[1000:1500] == 0) and np.all(a.buffer[2500:] == np.float32(0.3))


def test_bad_audio_into_one_session_leaves_the_other_running(pipe, image, speech):
    engine = make_engine(pipe)
    a = engine.open_session(image, engine.default_options(emotion="happy"))
    b = engine.open_session(image, engine.default_options(emotion="happy"))
    with pytest.raises(AudioInputError):
        a.push_audio(np.ones(100) * 1e4, 16000)
    a.push_audio(np.full(8000, np.nan, np.float32), 16000)   # NaN: repaired to silence
    b.push_audio(speech[:16000], 16000)
    fa, fb = drain(engine, a, b)
    assert len(fb) > 0 and len(fa) > 0 and a.stats.sanitised_samples == 8000
    assert all(np.isfinite(f.motion).all() for f in fa + fb)


# ------------------------------------------------------------------ session behaviour
@pytest.mark.parametrize("chunk", [5, 17, 50])
def test_every_frame_comes_out_once_with_its_audio(pipe, image, speech, chunk):
    engine = make_engine(pipe)
    s = engine.open_session(image, engine.default_options(emotion="neutral", chunk_frames=chunk))
    rng = np.random.default_rng(chunk)
    x = np.round(speech * 32767).astype(np.int16)
    frames, i = [], 0
    while i < x.size:                       # odd chunk sizes, stepping in between
        n = int(rng.integers(50, 3000))
        s.push_audio(x[i:i + n], 16000)
        i += n
        frames += drain(engine, s)[0]
    s.end_input()
    frames += drain(engine, s)[0]
    spf = pipe.cfg.model.samples_per_frame
    total = -(-x.size // spf)
    assert [f.index for f in frames] == list(range(total))
    assert [f.pts for f in frames] == list(range(total))
    audio = np.concatenate([f.audio for f in frames])
    np.testing.assert_allclose(audio[:x.size], x / 32768.0, atol=1e-6)
    assert frames[0].image.shape == (pipe.cfg.model.input_size,) * 2 + (3,)
    assert s.done


def test_frames_async_generator_ends_after_input(pipe, image, speech):
    engine = make_engine(pipe)
    s = engine.open_session(image, engine.default_options(emotion="neutral"))

    async def main():
        engine.start()
        try:
            s.push_audio(speech[:16000], 16000)
            s.end_input()
            return [f async for f in s.frames()]
        finally:
            engine.stop()

    frames = asyncio.run(main())
    assert len(frames) == 25 and frames[-1].pts == 24


def test_a_session_is_not_done_while_its_last_frames_are_decoding(pipe, image, speech):
    """The last window's frames are committed before they are decoded; a consumer that asks in
    between must wait for them, not end the stream short (seen on a busy machine: 91 of 94)."""
    engine = make_engine(pipe)
    s = engine.open_session(image, engine.default_options(emotion="neutral", chunk_frames=50))
    s.push_audio(speech[:16000], 16000)
    s.end_input()
    seen = []
    decode = engine.live.render

    def watching(items):
        seen.append((s.finished, s.done))
        return decode(items)

    engine.live.render = watching
    frames = drain(engine, s)[0]
    assert seen and seen[-1] == (True, False)       # finished committing, not done: frames in flight
    assert len(frames) == 25 and s.done


def test_idle_session_keeps_producing_frames_from_silence(pipe, image):
    clock = FakeClock()
    engine = make_engine(pipe, clock=clock)
    s = engine.open_session(image, engine.default_options(emotion="neutral"), live=True)
    assert engine.step() == 0                      # no audio, not due yet: nothing
    frames = []
    for _ in range(10):
        clock.t += 0.2
        frames += drain(engine, s)[0]
    assert len(frames) >= 35                       # about 2 s of idle frames, minus the latency
    assert [f.index for f in frames] == list(range(len(frames))) and s.stats.dropped_backlog == 0
    assert all(np.all(f.audio == 0) for f in frames)
    m = np.stack([f.motion for f in frames])
    assert np.isfinite(m).all()


def test_late_audio_replaces_filled_silence(pipe, image, speech):
    clock = FakeClock()
    engine = make_engine(pipe, clock=clock)
    s = engine.open_session(image, engine.default_options(emotion="neutral"), live=True)
    clock.t += 0.5
    s.keep_up(clock())                             # starved: silence placeholder inserted
    filled = s.audio.end
    assert filled > 0
    s.push_audio(speech[:800], 16000)              # real audio arrives before anything is committed
    assert s.audio.end == 800


def test_tts_burst_is_queued_not_dropped(pipe, image, speech):
    clock = FakeClock()
    engine = make_engine(pipe, clock=clock, max_output_frames=20)
    s = engine.open_session(image, engine.default_options(emotion="neutral"), live=True)
    s.push_audio(np.tile(speech, 2), 16000)        # a whole reply at once
    for _ in range(5):
        engine.step()
    assert s.stats.dropped_backlog == 0
    assert len(s._out) <= 20 + s.options.chunk_frames   # output bounded; the rest waits as audio


def test_interrupt_drops_queued_speech_and_continues_from_the_last_frame_shown(pipe, image, speech):
    engine = make_engine(pipe)
    s = engine.open_session(image, engine.default_options(emotion="neutral"))
    s.push_audio(np.tile(speech, 3), 16000)
    for _ in range(6):
        engine.step()
    computed = s.carry.next_frame
    frames = s.take_frames()
    shown = frames[:12]
    s._out.extend(frames[12:])            # the viewer saw 12 frames; the rest were computed ahead
    assert computed == len(frames) > 20
    s.interrupt()
    assert s.carry.next_frame == 12 and not s._out
    assert s.audio.end == 12 * s.spf                              # the queued speech is gone
    assert s.stats.dropped_interrupt == computed - 12
    # The context is now the last 10 frames shown, so the motion goes on from there.
    assert torch.equal(s.carry.prev_x[0], torch.from_numpy(np.stack([f.motion for f in shown[2:12]])))
    s.push_audio(speech[:16000], 16000)
    s.end_input()
    again = drain(engine, s)[0]
    assert [f.index for f in again] == list(range(12, 12 + 25))


def test_interrupt_after_a_backlog_skip_does_not_rewind_across_the_gap(pipe, image, speech):
    clock = FakeClock()
    engine = make_engine(pipe, clock=clock, max_backlog_ms=1000)
    s = engine.open_session(image, engine.default_options(emotion="neutral"), live=True)
    s.push_audio(speech[:16000], 16000)
    for _ in range(3):
        engine.step()
    computed = s.carry.next_frame
    motion = [f.motion for f in s._out]              # computed, not shown yet
    assert computed == len(motion) > 0
    clock.t += 5.0                                   # compute falls far behind the wall clock
    s.push_audio(np.zeros(5 * 16000, np.float32), 16000)
    s.keep_up(clock())
    resumed = s.carry.next_frame
    assert s.stats.dropped_backlog == resumed - computed > 0
    s.interrupt()
    # The unshown frames are dropped, but the frames after the gap still follow the last ones computed.
    assert s.carry.next_frame == resumed and not s._out
    assert torch.equal(s.carry.prev_x[0], torch.from_numpy(np.stack(motion[-10:])))


def test_emotion_predicted_smoothed_and_changeable(pipe, image, speech):
    engine = make_engine(pipe, emotion_every_frames=10)
    s = engine.open_session(image, engine.default_options(emotion=None))
    s.push_audio(np.tile(speech, 2), 16000)
    seen = []
    for _ in range(8):
        engine.step()
        s.take_frames()
        seen.append(s.carry.emotion.clone())
    e = seen[-1].flatten()
    assert torch.isclose(e.sum(), torch.tensor(1.0), atol=1e-5) and not torch.equal(seen[0], seen[-1])
    s.set_emotion("angry", e_cfg_scale=2.0)
    engine.step()
    assert s.carry.emotion.flatten().tolist() == [1.0, 0, 0, 0, 0, 0, 0]
    assert s.options.e_cfg_scale == 2.0
    with pytest.raises(FloatRTError):
        s.set_emotion("bored")


def test_realtime_pacing_duplicates_and_skips_boundedly(pipe, image):
    from streaming.session import Frame
    engine = make_engine(pipe, max_late_ms=200)
    s = engine.open_session(image, engine.default_options(emotion="neutral"))
    img = np.zeros((4, 4, 3), np.uint8)

    def mk(j):
        return Frame(0, j, img, np.full(640, j, np.float32), None, None, 0.0, 0.0)
    period = 0.04
    s._out.extend([mk(0), mk(1)])
    assert s._pace(0.0, 0.0, period).index == 0
    assert s._pace(0.0, period, period).index == 1
    dup = s._pace(0.0, 2 * period, period)              # nothing ready: repeat, silent
    assert dup.duplicate and dup.index == 1 and not dup.audio.any() and s.stats.duplicated == 1
    s._out.extend([mk(j) for j in range(2, 20)])        # a burst that is late by 0.5 s
    f = s._pace(0.0, 20 * period, period)
    assert f.index >= 20 - 0.2 / period - 1 and s.stats.dropped_late > 0
    assert [x.pts for x in (dup, f)] == [2, 3]


def test_close_frees_the_session(pipe, image, speech):
    engine = make_engine(pipe)
    s = engine.open_session(image, engine.default_options(emotion="neutral"))
    s.push_audio(speech, 16000)
    engine.step()
    s.close()
    assert s not in engine.sessions and s.ref is None and s.audio.model.buffer.size == 0
    assert engine.step() == 0
    with pytest.raises(FloatRTError):
        s.push_audio(speech, 16000)

    async def collect():
        return [f async for f in s.frames()]
    assert asyncio.run(collect()) == []


def test_stream_config_file_and_validation(tmp_path):
    cfg = load_stream_config(ROOT / "configs" / "stream.yaml")
    assert cfg.algorithmic_latency_ms(25) <= 400
    with pytest.raises(ValueError):
        load_stream_config(None, chunk_frames=0)
    (tmp_path / "x.yaml").write_text("streaming:\n  chunkframes: 5\n")
    with pytest.raises(ValueError, match="chunkframes"):
        load_stream_config(tmp_path / "x.yaml")


def test_frames_carry_speech_at_the_output_rate(pipe, image, speech):
    """audio_out_rate: pushed at that rate, the frames hand back the very input samples."""
    import av
    res = av.AudioResampler(format="flt", layout="mono", rate=24000)
    frame = av.AudioFrame.from_ndarray(speech[None], format="flt", layout="mono")
    frame.sample_rate = 16000
    x24 = np.concatenate([f.to_ndarray()[0] for f in [*res.resample(frame), *res.resample(None)]])
    x24 = np.round(x24 * 32767).astype(np.int16)
    engine = make_engine(pipe)
    s = engine.open_session(image, engine.default_options(emotion="neutral", audio_out_rate=24000, render=False))
    rng = np.random.default_rng(1)
    i, spans = 0, []
    while i < len(x24):                                    # chunks of any size
        n = int(rng.integers(1, 3000))
        spans.append(s.push_audio(x24[i:i + n], 24000))
        i += n
    s.end_input()
    assert spans[0][0] == 0 and spans[-1][1] == len(x24)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))      # back to back on the output timeline
    frames = drain(engine, s)[0]
    out = np.concatenate([f.audio for f in frames])
    assert all(f.audio.size == 960 for f in frames) and len(frames) == s.total_frames
    assert np.array_equal(np.round(out[:len(x24)] * 32768).astype(np.int16), x24)
    assert not out[len(x24):].any()                        # the last frame's rest is silence
    # Another rate in: resampled to the output rate, same duration.
    s2 = engine.open_session(image, engine.default_options(emotion="neutral", audio_out_rate=24000, render=False))
    s2.push_audio(speech, 16000)
    s2.end_input()
    out2 = np.concatenate([f.audio for f in drain(engine, s2)[0]])
    assert abs(out2.size - len(speech) * 1.5) < 960
    with pytest.raises(FloatRTError, match="audio_out_rate"):
        engine.default_options(audio_out_rate=12345)


def test_engine_loads_from_config_names_and_says_what_is_missing(small_ckpt, small_cfg, tmp_path, monkeypatch):
    engine = Engine.load(small_ckpt, "small", "stream", "cpu")
    assert engine.cfg.model == small_cfg.model and engine.stream_cfg == load_stream_config(ROOT / "configs" / "stream.yaml")
    with pytest.raises(FloatRTError, match="config not found: no-such-config"):
        Engine.load(small_ckpt, "no-such-config")
    monkeypatch.setenv("FLOAT_RT_CACHE", str(tmp_path))          # no downloaded folder either
    with pytest.raises(FloatRTError, match="float-rt download"):
        Engine.load(None, "small")
