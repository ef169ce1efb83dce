"""FloatAvatarService (server/pipecat.py) with Pipecat's own test runner: real TTS audio frames in,
paced images and speech out."""
import asyncio
import time

import numpy as np
import pytest
from pipecat.frames.frames import (InterruptionFrame, OutputImageRawFrame, TextFrame, TranscriptionFrame,
                                   TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame)
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from speech import espeak
from server.pipecat import FloatAvatarService, FloatAvatarUpdateFrame
from server.stamp import read_stamp

RATE = 24000
SPO = RATE // 25


@pytest.fixture(scope="module")
def speech():
    return espeak("Hello there. I am a talking avatar.", RATE)


def tts_frames(pcm, rate=RATE, ms=20):
    n = rate * ms // 1000
    return [TTSAudioRawFrame(pcm[i:i + n].tobytes(), rate, 1) for i in range(0, len(pcm), n)]


class Timestamps(FrameProcessor):
    """Notes when each frame passes (the observer's view of the output side)."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[float, object]] = []

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        self.seen.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)


def until(condition, timeout: float = 300.0):
    """Frames for ``run_test`` that wait (in short sleeps) until ``condition()``: a test waits for an
    event, however long a busy machine takes, not for fixed seconds (``run_test`` reads its frames
    lazily, so this goes in a generator of them)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met (a hang guard, not a speed limit)"
        yield SleepFrame(0.05)


def run(service, frames):
    down, _ = asyncio.run(run_test(service, frames_to_send=frames,
                                   pipeline_params=PipelineParams(audio_out_sample_rate=RATE)))
    return down


def test_speech_frames_counts_order_and_audio(family_engine, speech):
    engine, portrait = family_engine
    svc = FloatAvatarService(engine, portrait, emotion="neutral", stamp=True)
    text, transcript = TextFrame("hello"), TranscriptionFrame("user said", "u", "now")
    t0 = time.monotonic()
    down = run(svc, [SleepFrame(0.6), text, TTSStartedFrame(), *tts_frames(speech), TTSStoppedFrame(), transcript,
                     SleepFrame(len(speech) / RATE + 1.2)])
    span = time.monotonic() - t0
    kinds = [type(f).__name__ for f in down]
    images = [f for f in down if isinstance(f, OutputImageRawFrame)]
    audio = [(i, f) for i, f in enumerate(down) if isinstance(f, TTSAudioRawFrame)]
    # Frame counts: images all along (idle too), never ahead of the 25 fps clock; one 40 ms audio
    # frame per speech frame.  (The rate itself is a benchmark figure: scripts/bench_pipecat.py.)
    assert len(images) <= span * 25 + 2
    assert len(audio) in (-(-len(speech) // SPO), -(-len(speech) // SPO) + 1)
    assert all(f.sample_rate == RATE and f.num_channels == 1 and f.num_frames == SPO for _, f in audio)
    # Order: TTS started right before the first speech image; each image then its audio; stopped
    # right after the last audio; other frames passed through untouched, in order.
    first, last = audio[0][0], audio[-1][0]
    assert kinds[first - 2:first] == ["TTSStartedFrame", "OutputImageRawFrame"]
    assert all(kinds[i - 1] == "OutputImageRawFrame" for i, _ in audio)
    assert kinds[last + 1] == "TTSStoppedFrame" and kinds.count("TTSStoppedFrame") == 1
    passed = [f for f in down if isinstance(f, (TextFrame, TranscriptionFrame))]
    assert passed == [text, transcript] and passed[0] is text and passed[1] is transcript
    # Audio out equals audio in, each after the image it was sampled with.
    out = np.concatenate([np.frombuffer(f.audio, np.int16) for _, f in audio])
    assert np.array_equal(out[:len(speech)], speech) and not out[len(speech):].any()
    j0 = svc.stats.speech_starts[0]
    for k, (i, f) in enumerate(audio):
        img = np.frombuffer(down[i - 1].image, np.uint8).reshape(engine.frame_size, engine.frame_size, 3)
        assert read_stamp(img) == j0 + k


def test_idle_frames_without_speech(family_engine):
    engine, portrait = family_engine
    probe = Timestamps()

    def enough():
        return sum(isinstance(f, OutputImageRawFrame) for _, f in probe.seen) > 8

    async def main():
        from pipecat.pipeline.pipeline import Pipeline
        svc = FloatAvatarService(engine, portrait, emotion="neutral", video_size=64)
        down, _ = await run_test(Pipeline([svc, probe]), frames_to_send=until(enough),
                                 pipeline_params=PipelineParams(audio_out_sample_rate=RATE))
        return down

    down = asyncio.run(main())
    images = [f for f in down if isinstance(f, OutputImageRawFrame)]
    times = [t for t, f in probe.seen if isinstance(f, OutputImageRawFrame)]
    assert len(images) > 5 and len(images) - 1 <= 25 * (times[-1] - times[0]) + 1   # images with no speech at all
    assert not [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert {f.size for f in images} == {(64, 64)} and len(images[0].image) == 64 * 64 * 3
    assert np.std(np.frombuffer(images[-1].image, np.uint8)) > 5


def test_interruption_mid_speech_drops_queued_speech(family_engine, speech):
    engine, portrait = family_engine
    long = np.concatenate([speech] * 3)
    probe = Timestamps()

    def images_after(kind):
        seen = [f for _, f in probe.seen]
        cut = max((i for i, f in enumerate(seen) if isinstance(f, kind)), default=None)
        return [] if cut is None else [f for f in seen[cut + 1:] if isinstance(f, OutputImageRawFrame)]

    def stamps(images):
        return {read_stamp(np.frombuffer(f.image, np.uint8).reshape(engine.frame_size, engine.frame_size, 3))
                for f in images}

    async def main():
        from pipecat.pipeline.pipeline import Pipeline
        svc = FloatAvatarService(engine, portrait, emotion="neutral", stamp=True)
        speaking = lambda: sum(isinstance(f, TTSAudioRawFrame) for _, f in probe.seen) >= 10   # noqa: E731
        moving = lambda: len(stamps(images_after(InterruptionFrame))) >= 3                      # noqa: E731
        def frames():
            yield from [TTSStartedFrame(), *tts_frames(long), TTSStoppedFrame()]
            yield from until(speaking)
            yield InterruptionFrame()
            yield from until(moving)
            yield from [TTSStartedFrame(), *tts_frames(speech[:RATE // 2]), TTSStoppedFrame(), SleepFrame(1.5)]

        down, _ = await run_test(Pipeline([svc, probe]), frames_to_send=frames(),
                                 pipeline_params=PipelineParams(audio_out_sample_rate=RATE))
        return svc, down

    svc, down = asyncio.run(main())
    seen = probe.seen
    cut = next(i for i, (_, f) in enumerate(seen) if isinstance(f, InterruptionFrame))
    after = [f for _, f in seen[cut + 1:]]
    second = next(i for i, f in enumerate(after) if isinstance(f, TTSStartedFrame))
    assert not [f for f in after[:second] if isinstance(f, (TTSAudioRawFrame, TTSStoppedFrame))]
    moving = {read_stamp(np.frombuffer(f.image, np.uint8).reshape(engine.frame_size, engine.frame_size, 3))
              for f in after[:second] if isinstance(f, OutputImageRawFrame)}
    assert len(moving) >= 3                                                         # motion goes on
    assert sum(isinstance(f, TTSAudioRawFrame) for f in after[second:]) in (13, 14)   # the next reply plays
    assert [type(f).__name__ for f in after if isinstance(f, (TTSStartedFrame, TTSStoppedFrame))] == \
        ["TTSStartedFrame", "TTSStoppedFrame"]
    before = [f for _, f in seen[:cut] if isinstance(f, TTSAudioRawFrame)]
    assert 0 < len(before) < len(long) // SPO                                       # it was mid-speech
    assert svc.stats.interruptions == 1


def test_emotion_and_scales_change_mid_session(family_engine):
    engine, portrait = family_engine
    changed = {}

    class Recording(FloatAvatarService):
        """Notes the session's choices at the moment each text frame passes through."""

        async def push_frame(self, frame, direction=FrameDirection.DOWNSTREAM):
            if isinstance(frame, TextFrame):
                o = self.session.options
                changed[frame.text] = (o.emotion, o.e_cfg_scale, engine.live.emotion_of(self.session.carry))
            await super().push_frame(frame, direction)

    scales = {"e_cfg_scale": 2.0} if engine.family == "float" else {}   # Ditto has no guidance scales to set
    svc = Recording(engine, portrait, emotion="neutral")
    down = run(svc, [TextFrame("before"), FloatAvatarUpdateFrame(emotion="sad", **scales), TextFrame("after"),
                     SleepFrame(0.3)])
    assert not [f for f in down if isinstance(f, FloatAvatarUpdateFrame)]          # ours: consumed
    before, after = changed["before"], changed["after"]
    assert before[0].lower() == "neutral" and after[0].lower() == "sad"
    assert max(after[2], key=after[2].get).lower() == "sad"                        # the motion follows it
    if scales:
        assert (before[1], after[1]) == (1.0, 2.0)
    else:
        with pytest.raises(Exception, match="not an option of the ditto family"):
            svc.set_emotion("sad", e_cfg_scale=2.0)
    svc.set_emotion("auto")
    assert svc.options.emotion is None
    with pytest.raises(Exception, match="unknown emotion"):
        svc.set_emotion("bored")
    with pytest.raises(Exception, match="unknown avatar option"):
        FloatAvatarService(engine, portrait, volume=3)


def test_upstream_frames_pass_untouched(family_engine):
    engine, portrait = family_engine
    svc = FloatAvatarService(engine, portrait, emotion="neutral")
    msg = TextFrame("upstream")

    async def main():
        return await run_test(svc, frames_to_send=[msg], frames_to_send_direction=FrameDirection.UPSTREAM,
                              pipeline_params=PipelineParams(audio_out_sample_rate=RATE))

    _, up = asyncio.run(main())
    assert up == [msg]
