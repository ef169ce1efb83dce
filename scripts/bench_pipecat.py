#!/usr/bin/env python
"""A Pipecat bot with the FLOAT-RT avatar over SmallWebRTC, and an aiortc client that measures it.

    python scripts/bench_pipecat.py [--checkpoints DIR --config small] [--json out.json]

Pipeline: SmallWebRTC input -> a stand-in TTS (text -> espeak-ng speech) -> FloatAvatarService ->
SmallWebRTC output.  The client stamps nothing; the avatar draws each image's frame index, so
the client knows which speech each image shows.  Two replies: the first is measured whole (A/V
offset at the client by arrival, RTP-timestamp drift, first TTS audio -> its first image), the
second is cut by an InterruptionFrame (barge-in: interruption -> last speech audio sent).

Runs in a private network namespace with only `lo` (it re-runs itself under `unshare --net`),
with every aiortc peer pinned to 127.0.0.1.  Also imported by tests/netns/test_pipecat_e2e.py.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RATE = 24000
SPO = RATE // 25
REPLY_1 = "Hello there. I am a talking avatar, and this is real speech for the measurement. One two three four five."
REPLY_2 = "This second reply is long, and it will be cut off by the user in the middle of a sentence, right about now."


async def measure(engine, image, seconds: float = 12.0, **avatar_options) -> dict:
    """Run the bot and the client in this process (which must be isolated); return the figures."""
    import av
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
    from pipecat.frames.frames import (InterruptionFrame, TextFrame, TTSAudioRawFrame,
                                       TTSStartedFrame, TTSStoppedFrame)
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.transports.base_transport import TransportParams
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
    from pipecat.workers.runner import WorkerRunner

    from server.ice import use_host_addresses
    from server.pipecat import FloatAvatarService
    from server.stamp import read_stamp
    from speech import espeak

    use_host_addresses(["127.0.0.1"])     # aioice skips loopback: pin every peer of this process

    class EspeakTTS(FrameProcessor):
        """Text frames -> espeak-ng speech, pushed faster than real time as TTS services do."""

        def __init__(self):
            super().__init__()
            self.first_audio: list[float] = []
            self.replies: list[np.ndarray] = []

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, TextFrame) and direction == FrameDirection.DOWNSTREAM:
                pcm = await asyncio.to_thread(espeak, frame.text, RATE)
                self.replies.append(pcm)
                await self.push_frame(TTSStartedFrame())
                self.first_audio.append(time.monotonic())
                for i in range(0, len(pcm), RATE // 50):
                    await self.push_frame(TTSAudioRawFrame(pcm[i:i + RATE // 50].tobytes(), RATE, 1))
                await self.push_frame(TTSStoppedFrame())
            else:
                await self.push_frame(frame, direction)

    class SentAudio(FrameProcessor):
        """Between the avatar and the output: when each speech audio frame was sent on."""

        def __init__(self):
            super().__init__()
            self.audio_times: list[float] = []

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, TTSAudioRawFrame):
                self.audio_times.append(time.monotonic())
            await self.push_frame(frame, direction)

    conn = SmallWebRTCConnection(ice_servers=[])
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTrack(AudioStreamTrack())                       # the user's (silent) microphone: transceiver 0
    client.addTransceiver("video", direction="recvonly")      # transceiver 1, as SmallWebRTC expects
    video, audio = [], []
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)

    async def receive(track):
        while True:
            try:
                f = await track.recv()
            except MediaStreamError:
                return
            t = time.monotonic()
            if track.kind == "video":
                video.append((t, f.pts, read_stamp(f.to_ndarray(format="rgb24"))))
            else:
                for o in resampler.resample(f):
                    audio.append((t, o.to_ndarray()[0].copy()))

    tasks = []
    client.on("track", lambda track: tasks.append(asyncio.ensure_future(receive(track))))
    await client.setLocalDescription(await client.createOffer())
    await conn.initialize(sdp=client.localDescription.sdp, type="offer")
    answer = conn.get_answer()
    await client.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    size = avatar_options.pop("video_size", 512)
    transport = SmallWebRTCTransport(conn, TransportParams(
        audio_in_enabled=True, audio_out_enabled=True, audio_out_sample_rate=RATE, video_out_enabled=True,
        video_out_is_live=True, video_out_width=size, video_out_height=size,
        video_out_framerate=int(avatar_options.get("output_fps") or 25)))
    tts, sent = EspeakTTS(), SentAudio()
    avatar = FloatAvatarService(engine, image, video_size=size, stamp=True, **avatar_options)
    worker = PipelineWorker(Pipeline([transport.input(), tts, avatar, sent, transport.output()]),
                            params=PipelineParams(audio_out_sample_rate=RATE), cancel_on_idle_timeout=False)
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.ensure_future(runner.run())
    await asyncio.sleep(2.0)
    await worker.queue_frame(TextFrame(REPLY_1))
    while not tts.replies:
        await asyncio.sleep(0.05)
    await asyncio.sleep(len(tts.replies[0]) / RATE + 1.5)
    # A busy machine plays the reply later, not never: wait (bounded) until all of it was sent on.
    n_first = -(-len(tts.replies[0]) // SPO)
    deadline = time.monotonic() + 120
    while avatar.stats.audio_frames < n_first and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    n_first = avatar.stats.audio_frames
    await worker.queue_frame(TextFrame(REPLY_2))
    while len(tts.first_audio) < 2:
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.0)
    deadline = time.monotonic() + 120                  # mid-reply: some of it has played
    while avatar.stats.audio_frames - n_first < 15 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    interrupted = time.monotonic()
    await worker.queue_frame(InterruptionFrame())
    await asyncio.sleep(max(0.0, seconds - 2.0 - (time.monotonic() - tts.first_audio[0])) + 1.5)
    stopped = time.monotonic()
    await worker.cancel()
    await run
    await client.close()
    for t in tasks:
        t.cancel()

    video = [v for v in video if v[0] < stopped]      # what arrived while the bot ran
    res: dict = {"video_frames": len(video), "audio_chunks": len(audio)}
    if len(video) < 2 or not audio:
        return res
    tv = np.array([v[0] for v in video])
    span = tv[-1] - tv[0]
    distinct = len({v[2] for v in video})
    res.update(span_s=span, fps=(len(video) - 1) / span, distinct_fps=(distinct - 1) / span,
               pts_rate=(video[-1][1] - video[0][1]) / 90000 / span)
    # The first reply: where its samples sit in what the client heard, and where its images are.
    rx = np.concatenate([a[1] for a in audio]).astype(np.float64)
    ends = np.cumsum([len(a[1]) for a in audio])
    times = np.array([a[0] for a in audio])
    reply = tts.replies[0].astype(np.float64)
    probe = reply[:2 * RATE]
    k0 = int(np.argmax(np.correlate(rx, probe, mode="valid")))
    j0 = avatar.stats.speech_starts[0]
    first: dict[int, tuple[float, int]] = {}
    for t, pts, j in video:
        first.setdefault(j, (t, pts))
    offsets, pts_v, sample_at = [], [], []
    for j in range(j0, j0 + n_first):
        i = int(np.searchsorted(ends, k0 + (j - j0) * SPO, side="right"))
        if j in first and i < len(times):
            offsets.append(first[j][0] - times[i])
            pts_v.append(first[j][1] / 90000)
            sample_at.append((j - j0) * SPO / RATE)
    off = np.array(offsets) * 1e3
    # A player that times video by its RTP timestamps: how far the reply's last image drifts from
    # its sound, relative to the first (the audio track is stamped by samples, so it is exact).
    drift = (np.array(pts_v) - pts_v[0]) - (np.array(sample_at) - sample_at[0])
    res.update(av_offset_ms_median=float(np.median(off)), av_offset_ms_p5=float(np.percentile(off, 5)),
               av_offset_ms_p95=float(np.percentile(off, 95)), av_offset_frames=len(off),
               reply_frames=n_first, reply_images_shown=sum(j in first for j in range(j0, j0 + n_first)),
               pts_drift_ms=float(drift[-1] * 1e3),
               first_audio_to_image_ms=float((first[j0][0] - tts.first_audio[0]) * 1e3) if j0 in first else None,
               speech_heard=bool(np.max(np.abs(rx[k0:k0 + len(reply)])) > 1000))
    # Barge-in: the interruption -> the last speech audio frame the avatar sent on.
    after = [t for t in sent.audio_times if t > interrupted]
    res["barge_in_ms"] = float((max(after) - interrupted) * 1e3) if after else 0.0
    res["speech_frames_after_interrupt"] = len(after)
    res["second_reply_frames_sent"] = avatar.stats.audio_frames - n_first
    st = avatar.session.stats
    res.update(session_duplicated=st.duplicated, session_dropped=st.dropped_late + st.dropped_backlog)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", default=None, help="default: recipe weights of --config in a temp folder")
    p.add_argument("--config", default="small")
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--raw", action="store_true", help="25 fps images, no hold-back (to see what SmallWebRTC does)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    from bench_common import bench_engine, isolate
    code = isolate()
    if code is not None:
        return code
    import logging
    logging.getLogger().setLevel(logging.WARNING)
    from loguru import logger
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    from server.pipecat import SMALL_WEBRTC
    engine, image = bench_engine(a.checkpoints, a.config)
    options = {} if a.raw else dict(SMALL_WEBRTC)
    res = asyncio.run(measure(engine, image, a.seconds, emotion="neutral", **options))
    engine.stop()
    res["options"] = options
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))      # tests/speech.py: espeak-ng speech
    sys.exit(main())
