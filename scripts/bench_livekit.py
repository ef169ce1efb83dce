#!/usr/bin/env python
"""The LiveKit avatar's targets, measured: barge-in, A/V offset, and the transport's CPU per session.

    python scripts/bench_livekit.py [--sessions 1,4,8] [--seconds 8] [--json out.json]

1. Barge-in: FloatVideoGenerator behind AvatarRunner, fed by QueueAudioOutput (small model):
   for cuts at several points of a reply, the time from clear_buffer to the last speech audio
   frame the generator yielded (<= 0: none after the call).
2. A/V: for every audio frame yielded after a video frame, how many frames it lies from the
   audio that frame was sampled from (found by matching samples against the input).
3. CPU per 512x512 25 fps session, model-free (scripts/frame_cache.py: frames from a cache):
   - LiveKit: N generators on CacheEngine behind AvatarRunner and the rtc sources, in this
     process.  No LiveKit server can run here, so tracks are published to a stand-in room and
     the native side never encodes; libwebrtc's VP8 and Opus encode is therefore reported from
     the same encoders run directly (aiortc's libvpx settings), in native threads outside the GIL.
   - aiortc: the real server with real WebRTC clients (scripts/bench_server.py --model-free),
     in the same run.
Runs in a private network namespace with only `lo` (for the aiortc part).
"""
from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_common import bench_engine, isolate  # noqa: E402


async def barge_in(engine, image, speech: np.ndarray, cuts=(8, 20, 33, 47, 61)) -> list[float]:
    from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner, QueueAudioOutput
    from livekit_helpers import StandInRoom, frames_of
    from server.livekit import FloatVideoGenerator
    out = []
    for k in cuts:
        gen = FloatVideoGenerator(engine, image, engine.default_options(emotion="neutral"), video_size=512,
                                  audio_sample_rate=24000)
        queue = QueueAudioOutput(sample_rate=24000, wait_playback_start=True)
        runner = AvatarRunner(StandInRoom(), audio_recv=queue, video_gen=gen,
                              options=AvatarOptions(512, 512, 25, 24000, 1))
        await runner.start()
        for f in frames_of(speech, 24000):
            await queue.capture_frame(f)
        queue.flush()
        while gen.stats.audio_frames < k:
            await asyncio.sleep(0.005)
        cleared = time.monotonic()
        queue.clear_buffer()
        await asyncio.sleep(0.6)
        out.append((gen.last_speech_yield - cleared) * 1e3)
        await runner.aclose()
        gen.close()
    return out


async def av_offsets(engine, image, speech: np.ndarray) -> dict:
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd
    from livekit_helpers import frames_of
    from server.livekit import FloatVideoGenerator
    gen = FloatVideoGenerator(engine, image, engine.default_options(emotion="neutral"), audio_sample_rate=24000)
    spo, seen, last_video = 960, [], None

    async def feed():
        await asyncio.sleep(0.5)
        for f in frames_of(speech, 24000, ms=10):
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())

    task = asyncio.create_task(feed())
    t0 = time.monotonic()
    async for item in gen:
        if isinstance(item, rtc.VideoFrame):
            last_video = gen.last_frame.index
        elif isinstance(item, rtc.AudioFrame):
            seen.append((last_video, np.frombuffer(item.data, np.int16).copy()))
        if time.monotonic() - t0 > len(speech) / 24000 + 2.0:
            break
    await task
    gen.close()
    out = np.concatenate([a for _, a in seen])
    start = next(o for o in range(spo) if np.array_equal(out[o:o + len(speech)], speech))  # where speech sits
    first = seen[0][0]
    timeline = np.zeros((first + len(seen) + 2) * spo, np.int16)
    timeline[first * spo + start:first * spo + start + len(speech)] = speech
    offsets = []
    for idx, a in seen:               # which frame's audio is this? 0 = the frame just shown
        hits = [d for d in range(-3, 4)
                if idx + d >= 0 and np.array_equal(a, timeline[(idx + d) * spo:(idx + d + 1) * spo])]
        offsets.append(0 if 0 in hits else (hits[0] if hits else None))   # silent frames match many
    counts = {str(d): offsets.count(d) for d in sorted(set(offsets), key=str)}
    return {"audio_frames": len(seen), "offset_frames": counts}


def encode_cost(frames: np.ndarray, seconds: float = 4.0) -> dict:
    """Seconds of CPU per second of one 25 fps session for aiortc's VP8 (libvpx) and Opus encoders."""
    import av
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters
    vp8 = get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96))
    vp8.target_bitrate = 1_500_000
    opus = get_encoder(RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111))
    n = int(25 * seconds)
    t = time.process_time()
    for i in range(n):
        f = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")
        f.pts, f.time_base = i * 3600, fractions.Fraction(1, 90000)
        vp8.encode(f)
    video = (time.process_time() - t) / seconds
    tone = (np.sin(np.arange(480 * 50 * int(seconds)) * 0.05) * 8000).astype(np.int16)
    t = time.process_time()
    for i in range(50 * int(seconds)):
        f = av.AudioFrame.from_ndarray(tone[None, i * 480:(i + 1) * 480], format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = 24000, i * 480, fractions.Fraction(1, 24000)
        opus.encode(f)
    audio = (time.process_time() - t) / seconds
    return {"vp8_cores": video, "opus_cores": audio}


async def livekit_cpu(stream_cfg, frames, speech: np.ndarray, n: int, seconds: float) -> dict:
    import psutil
    from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner, QueueAudioOutput
    from frame_cache import cache_engine
    from livekit_helpers import StandInRoom, frames_of
    from server.livekit import FloatVideoGenerator
    engine = cache_engine(stream_cfg, frames)
    runners, gens, queues = [], [], []
    for _ in range(n):
        gen = FloatVideoGenerator(engine, None, engine.default_options(emotion="neutral"), video_size=512,
                                  audio_sample_rate=24000)
        queue = QueueAudioOutput(sample_rate=24000)
        runner = AvatarRunner(StandInRoom(), audio_recv=queue, video_gen=gen,
                              options=AvatarOptions(512, 512, 25, 24000, 1))
        await runner.start()
        runners.append(runner), gens.append(gen), queues.append(queue)
    for q in queues:
        for f in frames_of(speech, 24000, ms=20):
            await q.capture_frame(f)
    await asyncio.sleep(2.0)
    me = psutil.Process()
    v0 = [g.stats.video_frames for g in gens]
    c0, t0 = sum(me.cpu_times()[:2]), time.monotonic()
    m0 = next(t.user_time + t.system_time for t in me.threads() if t.id == me.pid)
    await asyncio.sleep(seconds)
    c1, t1 = sum(me.cpu_times()[:2]), time.monotonic()
    m1 = next(t.user_time + t.system_time for t in me.threads() if t.id == me.pid)
    fps = [(g.stats.video_frames - a) / (t1 - t0) for g, a in zip(gens, v0)]
    dup = sum(g.session.stats.duplicated for g in gens) / max(1, sum(g.stats.video_frames for g in gens))
    for r, g in zip(runners, gens):
        await r.aclose()
        g.close()
    engine.stop()
    cores = (c1 - c0) / (t1 - t0)
    return dict(sessions=n, cores=cores, cores_per_session=cores / n, event_loop_cores=(m1 - m0) / (t1 - t0),
                fps_min=min(fps), duplicated_pct=100 * dup)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", default="1,4,8")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--checkpoints", default=None, help="small-config weights (default: recipe weights)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    code = isolate()
    if code is not None:
        return code
    import logging
    logging.disable(logging.WARNING)
    from bench_server import bench_model_free
    from frame_cache import portrait_frames
    from speech import espeak
    res: dict = {}
    speech = espeak("Hello there. I am a talking avatar, and this is a reply that will be cut off by the user.")
    engine, image = bench_engine(a.checkpoints)
    engine.start()
    cuts = asyncio.run(barge_in(engine, image, speech))
    res["barge_in_ms"] = cuts
    print(f"barge-in, clear_buffer -> last speech audio yielded: {', '.join(f'{c:+.0f}' for c in cuts)} ms "
          f"(max {max(cuts):+.0f} ms; <= 0: nothing after the call)")
    av = asyncio.run(av_offsets(engine, image, espeak("Testing the offset of audio and video frames, one two three.")))
    res["av"] = av
    print(f"A/V: {av['audio_frames']} audio frames; frames from their video frame: {av['offset_frames']}")
    engine.stop()

    frames = portrait_frames(512)
    enc = encode_cost(frames)
    res["encode"] = enc
    print(f"encoders alone (aiortc's libvpx VP8 1.5 Mb/s and Opus, 512x512 25 fps): VP8 {enc['vp8_cores']:.3f} "
          f"+ Opus {enc['opus_cores']:.3f} cores per session")
    counts = [int(x) for x in a.sessions.split(",")]
    rows = []
    print("LiveKit rtc sources, model-free (no server: the native side does not encode here)")
    print("  N  process cores  per session  event loop  fps(min)  dup%  per session + encode")
    for n in counts:
        r = asyncio.run(livekit_cpu(engine.stream_cfg, frames, speech, n, a.seconds))
        r["with_encode"] = r["cores_per_session"] + enc["vp8_cores"] + enc["opus_cores"]
        rows.append(r)
        print(f"  {n}  {r['cores']:13.2f}  {r['cores_per_session']:11.3f}  {r['event_loop_cores']:10.2f}"
              f"  {r['fps_min']:8.1f}  {r['duplicated_pct']:4.1f}  {r['with_encode']:.3f}")
    res["livekit"] = rows
    print("aiortc server, model-free, real WebRTC clients:")
    res["aiortc"] = bench_model_free(argparse.Namespace(clients=a.sessions, seconds=a.seconds, video_codec="vp8",
                                                          workers=1))
    lk = min(r["with_encode"] for r in rows)
    ao = min(r["cores_per_session"] for r in res["aiortc"])
    print(f"sessions per core: LiveKit {1 / lk:.1f} (Python side {1 / min(r['cores_per_session'] for r in rows):.1f}, "
          f"with the encoders), aiortc {1 / ao:.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
