"""The LiveKit Agents integration (server/livekit): generator, runner, agent session, worker admission.

No LiveKit server can run here: the native rtc sources work offline, a stand-in room records
what is published, and the agent session runs without a room.  Joining a real room is not run.
"""
import asyncio
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions, AvatarRunner, QueueAudioOutput

from conftest import ROOT
from livekit_helpers import EspeakTTS, StandInRoom, frames_of, wait_until
from speech import espeak
from server.livekit import AvatarJob, AvatarSession, AvatarWorker, Capacity, FloatVideoGenerator


@pytest.fixture(scope="module")
def speech24():
    return espeak("Hello there. I am a talking avatar.", 24000)


async def run_generator(gen, until, script=None, timeout: float = 300.0):
    """Iterate ``gen`` until ``until(items)`` holds; ``script(gen, items)`` runs beside it.
    Items: (t, item, frame index).  The stop is an event, not a duration, so a busy machine only
    makes it take longer; ``timeout`` only guards against a hang."""
    loop = asyncio.get_running_loop()
    items = []
    task = asyncio.create_task(script(gen, items)) if script else None
    t0 = loop.time()
    async for it in gen:
        items.append((loop.time() - t0, it, gen.last_frame.index))
        if until(items):
            break
        assert loop.time() - t0 < timeout, f"generator did not get there within {timeout} s"
    if task:
        await task
    gen.close()
    return items


def after_segment_ends(n: int = 1, frames: int = 25):
    """Until ``n`` segment ends have come out, then ``frames`` more video frames."""
    def until(items):
        ends = [i for i, (_, it, _) in enumerate(items) if isinstance(it, AudioSegmentEnd)]
        return len(ends) >= n and sum(isinstance(it, rtc.VideoFrame) for _, it, _ in items[ends[n - 1]:]) >= frames
    return until


def audio_of(item) -> np.ndarray:
    return np.frombuffer(item.data, np.int16).reshape(-1, item.num_channels)[:, 0]


def test_generator_yields_frames_with_their_own_speech_and_segment_end(family_engine, speech24):
    engine, portrait = family_engine
    spo = 960
    pushed_at = {}

    async def script(gen, items):
        await asyncio.sleep(1.0)                                  # idle first: no speech yet
        pushed_at["t"] = asyncio.get_running_loop().time()
        for f in frames_of(speech24, 24000, ms=10):
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())

    async def main():
        gen = FloatVideoGenerator(engine, portrait, engine.default_options(emotion="neutral"),
                                  video_size=256, audio_sample_rate=24000)
        return await run_generator(gen, after_segment_ends(), script), gen

    items, gen = asyncio.run(main())
    video = [(t, it) for t, it, _ in items if isinstance(it, rtc.VideoFrame)]
    span = items[-1][0] - items[0][0]
    assert len(video) <= span * 25 + 3                                         # never ahead of the 25 fps clock
    assert {(v.width, v.height, v.type) for _, v in video} == {(256, 256, rtc.VideoBufferType.I420)}
    assert not [it for t, it, _ in items if t < 0.9 and not isinstance(it, rtc.VideoFrame)]   # idle: video only
    kinds = [type(it).__name__ for _, it, _ in items]
    audio = [(i, it, idx) for i, (_, it, idx) in enumerate(items) if isinstance(it, rtc.AudioFrame)]
    assert audio and all(kinds[i - 1] == "VideoFrame" for i, _, _ in audio)    # each after its own frame
    assert all(a.sample_rate == 24000 and a.num_channels == 1 and a.samples_per_channel == spo for _, a, _ in audio)
    idx = [k for _, _, k in audio]
    assert idx == list(range(idx[0], idx[0] + len(idx)))                       # consecutive, none twice
    out = np.concatenate([audio_of(a) for _, a, _ in audio])
    offsets = [o for o in range(spo) if np.array_equal(out[o:o + len(speech24)], speech24)]
    assert len(offsets) == 1, "the input samples come out unchanged, once"
    assert 0 <= len(out) - len(speech24) < spo                                 # in == out within one frame
    start = idx[0] * spo + offsets[0]
    timeline = np.zeros((idx[-1] + 1) * spo, np.int16)
    timeline[start:start + len(speech24)] = speech24
    for _, a, k in audio:                                                      # 0 frames offset
        assert np.array_equal(audio_of(a), timeline[k * spo:(k + 1) * spo])
    ends = [i for i, k in enumerate(kinds) if k == "AudioSegmentEnd"]
    assert ends == [audio[-1][0] + 1]                                          # right after the last frame
    assert audio[-1][2] == (start + len(speech24) - 1) // spo
    assert gen.stats.segments_ended == 1 and gen.stats.rejected_audio_frames == 0


@pytest.mark.parametrize("rate,channels,ms", [(16000, 1, 10), (22050, 2, 20), (44100, 1, 7), (48000, 2, 10)])
def test_generator_takes_any_tts_rate_layout_and_frame_size(family_engine, rate, channels, ms):
    engine, portrait = family_engine
    import av
    pcm = espeak("Testing one two three.", rate)
    ref = espeak("Testing one two three.", 24000).astype(np.float64)

    async def script(gen, items):
        for f in frames_of(pcm, rate, ms=ms, channels=channels):
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())

    async def main():
        gen = FloatVideoGenerator(engine, portrait, engine.default_options(emotion="neutral"),
                                  audio_sample_rate=24000)
        return await run_generator(gen, after_segment_ends(frames=5), script)

    items = asyncio.run(main())
    audio = [it for _, it, _ in items if isinstance(it, rtc.AudioFrame)]
    assert all(a.sample_rate == 24000 for a in audio)
    out = np.concatenate([audio_of(a) for a in audio]).astype(np.float64)
    assert abs(len(out) - len(pcm) * 24000 / rate) <= 2 * 960                 # same duration, within a frame
    assert sum(isinstance(it, AudioSegmentEnd) for _, it, _ in items) == 1
    # The same speech, resampled: the best alignment correlates almost perfectly.
    corr = np.correlate(out, ref, mode="valid") if len(out) >= len(ref) else np.correlate(ref, out, mode="valid")
    k = int(np.argmax(corr))
    a, b = (out[k:k + len(ref)], ref) if len(out) >= len(ref) else (out, ref[k:k + len(out)])
    assert np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)) > 0.98
    del av


def test_clear_buffer_mid_speech_stops_the_speech_at_once(family_engine, speech24):
    engine, portrait = family_engine
    long = np.concatenate([speech24] * 3)
    short = espeak("Yes.", 24000)
    marks = {}

    async def script(gen, items):
        for f in frames_of(long, 24000):
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())
        while sum(isinstance(it, rtc.AudioFrame) for _, it, _ in items) < 10:
            await asyncio.sleep(0.01)
        marks["n"] = len(items)
        gen.clear_buffer()                                     # barge-in
        while len({k for _, _, k in items[marks["n"]:]}) < 20:  # the avatar goes on moving
            await asyncio.sleep(0.01)
        marks["m"] = len(items)
        for f in frames_of(short, 24000):                      # the next reply plays normally
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())

    async def main():
        gen = FloatVideoGenerator(engine, portrait, engine.default_options(emotion="neutral"),
                                  audio_sample_rate=24000)
        items = await run_generator(gen, lambda items: "m" in marks and after_segment_ends(1, 5)(items), script)
        return items, gen

    items, gen = asyncio.run(main())
    cut = [it for _, it, _ in items[marks["n"]:marks["m"]]]
    assert not [it for it in cut if not isinstance(it, rtc.VideoFrame)]      # no speech, no segment end after
    after = [it for _, it, _ in items[marks["m"]:]]
    n = sum(isinstance(it, rtc.AudioFrame) for it in after)
    assert n == -(-len(short) // 960) or n == -(-len(short) // 960) + 1
    assert [type(it).__name__ for it in after if not isinstance(it, rtc.VideoFrame)][-1] == "AudioSegmentEnd"
    assert gen.stats.segments_interrupted == 1 and gen.stats.segments_ended == 1
    assert gen.session.stats.dropped_interrupt >= 0


def test_avatar_runner_publishes_and_reports_playback(family_engine, speech24):
    engine, portrait = family_engine
    events = []

    async def main():
        room = StandInRoom()
        gen = FloatVideoGenerator(engine, portrait, engine.default_options(emotion="neutral"),
                                  video_size=256, audio_sample_rate=24000)
        queue = QueueAudioOutput(sample_rate=24000, wait_playback_start=True)
        queue.on("playback_started", lambda ev: events.append(("started", time.monotonic())))
        queue.on("playback_finished",
                 lambda ev: events.append(("finished", time.monotonic(), ev.playback_position, ev.interrupted)))
        runner = AvatarRunner(room, audio_recv=queue, video_gen=gen, options=AvatarOptions(256, 256, 25, 24000, 1))
        await runner.start()
        for f in frames_of(speech24, 24000):
            await queue.capture_frame(f)
        queue.flush()
        # Wait on the events, not the clock: a loaded CI machine may run late.
        await wait_until(lambda: [e[0] for e in events] == ["started", "finished"], 300)
        first_samples = gen.stats.audio_samples
        for f in frames_of(np.concatenate([speech24] * 2), 24000):
            await queue.capture_frame(f)
        queue.flush()
        await wait_until(lambda: len(events) == 3, 300)
        await asyncio.sleep(1.0)
        cleared = time.monotonic()
        queue.clear_buffer()
        await asyncio.sleep(1.0)
        await runner.aclose()
        gen.close()
        return room, gen, first_samples, cleared

    room, gen, first, cleared = asyncio.run(main())
    assert [type(p.track).__name__ for p in room.local_participant.published] == ["LocalAudioTrack", "LocalVideoTrack"]
    # AvatarRunner (1.8.9) may report one more 'started' right after the barge-in: a frame yielded
    # just before clear_buffer is still in av_sync.push when the clear resets the position to 0.
    assert [e[0] for e in events[:4]] == ["started", "finished", "started", "finished"]
    assert all(e[0] == "started" and e[1] >= cleared for e in events[4:]) and len(events) <= 5
    assert events[1][3] is False and abs(events[1][2] - first / 24000) < 1e-6     # position = audio yielded
    assert abs(events[1][2] - len(speech24) / 24000) < 0.04
    assert events[3][3] is True                                                # the barge-in
    # played at the barge-in: what was yielded, less at most the one frame that the same race can
    # leave in av_sync.push, unplayed, when the clear comes (960 samples at 24 kHz)
    short = (gen.stats.audio_samples - first) - round(events[3][2] * 24000)
    assert short in (0, 960), short
    assert gen.last_speech_yield <= cleared                                    # no speech after clear_buffer


def test_agent_session_say_plays_out_through_the_avatar(family_engine):
    engine, _ = family_engine
    tts = EspeakTTS()

    async def main():
        from livekit.agents import Agent, AgentSession
        session = AgentSession(tts=tts)
        avatar = AvatarSession(preset="astronaut", engine=engine, video_size=128)
        await avatar.start(session, room=StandInRoom())
        await session.start(Agent(instructions="You are an avatar test."))
        handle = session.say("Hello there. I am a talking avatar.")
        await asyncio.wait_for(handle.wait_for_playout(), 300)    # a hang guard, not a speed limit
        stats = avatar.generator.stats
        await session.aclose()
        await avatar.aclose()
        return handle, stats

    handle, stats = asyncio.run(main())
    assert handle.done() and not handle.interrupted
    spoken = sum(len(p) for p in tts.spoken)
    assert spoken > 24000 and 0 <= stats.audio_samples - spoken < 2 * 960
    assert stats.segments_ended == 1


# ---------------------------------------------------------------------- the worker
class FakeRequest:
    """What ``AgentServer`` hands ``on_request``: the job, and accept/reject."""

    def __init__(self, metadata: str, job_id: str = "AJ_1"):
        self.id = job_id
        self.job = type("Job", (), {"metadata": metadata, "id": job_id})()
        self.answer = None

    async def accept(self, **kw):
        self.answer = ("accept", kw)

    async def reject(self, *, terminate=True):
        self.answer = ("reject", terminate)


def test_capacity_reports_load_and_refuses_beyond_max():
    now = [0.0]
    cap = Capacity(2, clock=lambda: now[0])
    assert cap.load() == 0.0
    assert cap.reserve() and cap.load() == 0.5
    assert cap.reserve() and cap.load() == 1.0
    assert not cap.reserve()                        # at capacity
    cap.start()
    cap.start()
    assert cap.running == 2 and cap.load() == 1.0
    cap.finish()
    assert cap.load() == 0.5 and cap.reserve()
    now[0] += 31.0                                  # an accepted job that never started gives its slot back
    assert cap.load() == 0.5
    cap.finish()
    assert cap.load() == 0.0


def test_worker_accepts_valid_jobs_as_the_avatar_on_behalf_of_the_agent(family_engine):
    engine, _ = family_engine
    from livekit.agents.voice.room_io import ATTRIBUTE_PUBLISH_ON_BEHALF
    from float_rt.media import preset_images
    from server.config import packaged_page
    worker = AvatarWorker(engine, max_sessions=1, presets=preset_images([packaged_page() / "avatars"]))
    job = AvatarJob("agent-AJ_x", "avatar-1", "Ava", preset="astronaut", options={"emotion": "happy"})

    async def ask(metadata):
        req = FakeRequest(metadata)
        await worker.on_request(req)
        return req.answer

    answer = asyncio.run(ask(job.to_json()))
    assert answer == ("accept", {"identity": "avatar-1", "name": "Ava",
                                 "attributes": {ATTRIBUTE_PUBLISH_ON_BEHALF: "agent-AJ_x"}})
    assert worker.load() == 1.0
    assert asyncio.run(ask(job.to_json())) == ("reject", False)              # full: another worker may take it
    bad = [json.dumps({"v": 1}), "not json", json.dumps({**json.loads(job.to_json()), "preset": "nobody"}),
           json.dumps({**json.loads(job.to_json()), "options": {"rm -rf": 1}}), "x" * 300_000]
    for metadata in bad:
        assert asyncio.run(ask(metadata)) == ("reject", True)
    assert worker.jobs_refused == 1 + len(bad)


def test_agent_side_job_carries_a_cropped_portrait(portrait_png):
    avatar = AvatarSession(portrait_png, mode="worker", options={"emotion": "sad", "nfe": 4})
    job = AvatarJob.from_json(avatar.job("agent-AJ_y").to_json())
    assert job.agent_identity == "agent-AJ_y" and job.avatar_identity == "float-rt-avatar"
    assert job.image_array().shape == (512, 512, 3) and job.options == {"emotion": "sad", "nfe": 4}
    assert len(job.to_json()) < 200_000
    with pytest.raises(Exception, match="unknown avatar option"):
        AvatarSession(portrait_png, options={"volume": 11})


def test_worker_command_says_what_it_needs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    r = subprocess.run([sys.executable, "-m", "server.cli", "livekit-worker", "--checkpoints", str(tmp_path)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "LIVEKIT_URL" in r.stderr and "LIVEKIT_API_KEY" in r.stderr and "livekit-server --dev" in r.stderr
