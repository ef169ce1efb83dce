"""One engine, either family: behaviour every family's live sessions share (parametrised over the
families), and Ditto's live mode against the official online computation (recipe weights)."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from clock import FakeClock

from float_rt.errors import FloatRTError
from float_rt.media import load_audio, load_image
from streaming.config import StreamConfig
from streaming.engine import Engine


@pytest.fixture(scope="module")
def speech(speech_wav):
    return load_audio(speech_wav)


@pytest.fixture(scope="module", params=("float", "ditto"))
def family(request, small_engine, ditto_engine, portrait_png):
    """(a fresh engine of the family on the shared model, its prepared portrait)."""
    shared = small_engine if request.param == "float" else ditto_engine
    return shared, shared.prepare(load_image(portrait_png))


def fresh(shared, clock=None, **stream):
    """An engine of its own (its own sessions and clock) on the shared engine's loaded model."""
    return Engine(shared.live, replace(StreamConfig(), **stream), **({"clock": clock} if clock else {}))


def feed(engine, s, samples, chunk=320):
    for i in range(0, len(samples), chunk):
        s.push_audio(samples[i:i + chunk], 16000)
        while engine.step():
            pass


def drain(engine, s):
    out = []
    while engine.step():
        out += s.take_frames()
    return out + s.take_frames()


def test_every_frame_once_in_order_with_its_speech(family, speech):
    shared, image = family
    engine = fresh(shared)
    s = engine.open_session(image)
    clip = speech[:24000]
    feed(engine, s, clip)
    s.end_input()
    frames = s.take_frames() + drain(engine, s)
    n = -(-len(clip) // 640)
    assert [f.index for f in frames] == list(range(n)) and s.done
    assert frames[0].image.shape == (engine.frame_size, engine.frame_size, 3)
    heard = np.concatenate([f.audio for f in frames])[:len(clip)]
    np.testing.assert_array_equal(heard, clip)        # each frame carries the speech it shows


def test_options_of_another_family_are_refused(family):
    shared, _ = family
    foreign = {"float": {"steps": 5}, "ditto": {"nfe": 5}}[shared.family]
    with pytest.raises(FloatRTError, match="not an option of the"):
        shared.default_options(**foreign)
    with pytest.raises(FloatRTError, match="unknown emotion"):
        shared.default_options(emotion="bored")


def test_barge_in_continues_from_the_last_frame_shown(family, speech):
    shared, image = family
    engine = fresh(shared)
    s = engine.open_session(image)
    feed(engine, s, np.tile(speech, 2))
    ahead = s.take_frames()
    assert len(ahead) > 20
    shown = 13                                  # the viewer saw 13 frames; the rest were computed ahead
    s._out.extend(ahead[shown:])
    s.interrupt()
    assert not s._out and s.stats.dropped_interrupt == len(ahead) - shown
    feed(engine, s, speech[:16000])
    s.end_input()
    again = drain(engine, s)
    # No gap and no repeat on the clock: the next frame is the first one not shown.
    assert [f.index for f in again][:5] == list(range(shown, shown + 5))
    assert [f.index for f in again] == list(range(shown, again[-1].index + 1))


def test_backlog_is_skipped_and_bounded_when_compute_falls_behind(family, speech):
    shared, image = family
    clock = FakeClock()
    engine = fresh(shared, clock=clock, max_backlog_ms=1000)
    s = engine.open_session(image, live=True)
    for _ in range(20):                        # 10 s of live audio, compute never ran
        clock.t += 0.5
        s.push_audio(speech[:8000], 16000)
        s.keep_up(clock())
    assert s.stats.dropped_backlog > 0
    lag = (clock() - s.started) * 16000 - s.carry.next_frame * s.spf
    need = s.needed_frames() - s.carry.next_frame      # what one window waits for
    assert lag <= 16000 + need * s.spf + 8000          # max_backlog + one window's audio + one push
    assert s.audio.model.buffer.size < 5 * 16000        # memory bounded too
    clock.t += 0.5
    s.push_audio(speech[:8000], 16000)
    before = s.carry.next_frame
    while engine.step():
        pass
    frames = s.take_frames()
    assert frames and frames[0].index >= before        # frames go on after the skipped input


# ---------------------------------------------------------------- Ditto's online mode
def _ditto_reference(engine, image, emotion, waveform, noise):
    """The official online computation of the same audio (float_rt/ditto/reference.py)."""
    from float_rt.ditto.generate import encode_source
    from float_rt.ditto.reference import online_run
    live = engine.live
    cfg = replace(live.cfg, windows=live.windows, sampler=replace(live.cfg.sampler, steps=live.cfg.live.steps))
    ref = encode_source(live.model, image.face, emotion, eye_image=image.eyes)
    return online_run(live.model, cfg, ref, waveform, noise)


def test_live_ditto_sessions_compute_the_official_online_mode(ditto_engine, portrait_png, speech):
    """Two sessions batched in one engine, fed in 20 ms pieces, each with the noise of its own
    official run: every frame's motion is the official online sequence's row."""
    from float_rt.ditto.config import EMOTION_LABELS
    from float_rt.ditto.pipeline import MotionNoise
    engine = fresh(ditto_engine)
    image = engine.prepare(load_image(portrait_png))
    live, L = engine.live, engine.live.seq_len
    clips = [speech[:30000], speech[8000:29000]]
    sessions, expected = [], []
    for k, clip in enumerate(clips):
        gen = torch.Generator().manual_seed(100 + k)
        steps = live.scheduler(live.cfg.live.steps).num_noises
        noise = MotionNoise(torch.randn((steps, L, 265), generator=gen), torch.randn((40, L, 265), generator=gen))
        label = ("Happy", "Sad")[k]
        s = engine.open_session(image, engine.default_options(emotion=label))
        s.carry.step_noises, s.carry.starts = noise.steps, noise.starts
        sessions.append(s)
        expected.append(_ditto_reference(engine, image, EMOTION_LABELS.index(label), clip, noise))
    for i in range(0, max(map(len, clips)), 320):       # both sessions advance in the same steps
        for s, clip in zip(sessions, clips):
            if i < len(clip):
                s.push_audio(clip[i:i + 320], 16000)
        while engine.step():
            pass
    for s in sessions:
        s.end_input()
    got = [s.take_frames() for s in sessions]
    while engine.step():
        for g, s in zip(got, sessions):
            g += s.take_frames()
    for g, s, exp, clip in zip(got, sessions, expected, clips):
        g += s.take_frames()
        n = -(-len(clip) // 640)
        assert [f.index for f in g] == list(range(n))
        motion = np.stack([f.motion for f in g])
        np.testing.assert_allclose(motion, exp.motion[:n].numpy(), rtol=0, atol=2e-5)


def test_a_reply_after_an_idle_spell_drives_the_frames_it_lands_on(ditto_engine, portrait_png, speech):
    """Ditto reads audio ahead of the frames it has handed out (its features run a window ahead).
    Silence filled in while idle and already read must not drive the frames a reply lands on: the
    session forgets what it read of the filler, so the reply's features start where its audio does."""
    clock = FakeClock()
    engine = fresh(ditto_engine, clock=clock)
    s = engine.open_session(engine.prepare(load_image(portrait_png)), live=True)
    for _ in range(12):                                  # 6 s idle: silence filled in, frames computed
        clock.t += 0.5
        s.keep_up(clock())
        while engine.step():
            pass
        s.take_frames()
    assert s.carry.next_frame > 0 and s.carry.audio_row > s.carry.next_frame   # read ahead of the frames
    start, _ = s.push_audio(speech[:16000], 16000)
    landed = start // s.spo
    assert landed == s.carry.next_frame == s.carry.audio_row   # nothing read past where the reply lands
    while engine.step():
        pass
    frames = s.take_frames()
    assert frames and frames[0].index == landed
    heard = np.concatenate([f.audio for f in frames])[:16000]
    np.testing.assert_array_equal(heard, speech[:len(heard)])


def _session_frames(engine, image, samples, **options):
    s = engine.open_session(image, engine.default_options(**options))
    feed(engine, s, samples)
    s.end_input()
    return s.take_frames() + drain(engine, s)


def test_intensity_zero_holds_the_face_still_and_one_changes_nothing(family, speech):
    """motion_scale 0 (and expression_scale 0 where the family has it): every frame equals the first
    within 1 grey level while speech plays; scale 1 is the default output exactly."""
    shared, image = family
    engine = fresh(shared)
    clip = speech[:16000]
    still = {"motion_scale": 0.0, **({"expression_scale": 0.0} if "expression_scale" in engine.control_names else {})}
    frames = _session_frames(engine, image, clip, seed=3, **still)
    first = frames[0].image.astype(np.int16)
    assert all(np.abs(f.image.astype(np.int16) - first).max() <= 1 for f in frames)
    default = _session_frames(engine, image, clip, seed=3)
    ones = _session_frames(engine, image, clip, seed=3, motion_scale=1.0)
    assert max(np.abs(f.image.astype(np.int16) - first).max() for f in default) > 1      # it does move
    assert all(np.array_equal(a.image, b.image) for a, b in zip(default, ones))


def test_listening_changes_the_idle_motion(family):
    """On the same silence, a listening avatar moves otherwise than one speaking to silence."""
    shared, image = family
    engine = fresh(shared)
    silence = np.zeros(16000, np.float32)
    speaking = _session_frames(engine, image, silence, seed=3)
    listening = _session_frames(engine, image, silence, seed=3, state="listening")
    again = _session_frames(engine, image, silence, seed=3, state="listening")
    assert len(speaking) == len(listening) == 25
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(speaking, listening))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(listening, again))       # deterministic
