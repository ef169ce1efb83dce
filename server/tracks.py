"""aiortc media tracks around a streaming session.

One pump reads the session's paced frames (the session's 25 fps clock is the only
clock) and hands each frame's image to the video track and its audio to the audio
track in the same tick, so the two leave with the same timeline (lip sync).
"""
from __future__ import annotations

import asyncio
import fractions
import logging

import av
import cv2
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streaming.audio_input import to_int16
from streaming.session import Frame, Session

from streaming.frames import FrameShaper
from .stamp import draw_stamp

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
class _QueueTrack(MediaStreamTrack):
    """A track fed by the pump through a small bounded queue (oldest dropped if the sender stalls).

    Both queues hold the same ~120 ms, so a slow sender can never pull picture and sound apart
    by more than that: under overload media is dropped (counted), not delayed.
    """

    def __init__(self, maxsize: int):
        super().__init__()
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, item) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        item = await self.queue.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        return item


class AvatarVideoTrack(_QueueTrack):
    kind = "video"

    def __init__(self, shape: FrameShaper, fps: float, stamp: bool = False):
        super().__init__(maxsize=3)
        self.shape, self.stamp = shape, stamp
        self.step = int(round(VIDEO_CLOCK / fps))
        self.count = 0

    def push(self, f: Frame) -> None:
        img = self.shape(f.image)
        if self.stamp:
            img = draw_stamp(img, f.index)
        # Both encoders take I420; OpenCV converts (same BT.601 coefficients as swscale, off the
        # GIL) about 7x faster than the reformat the encoder would otherwise do under it.
        yuv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self.count * self.step
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.count += 1
        self.offer(frame)


class AvatarAudioTrack(_QueueTrack):
    """The speech the avatar is saying, in 20 ms frames (two per video frame).

    aiortc stamps every Opus packet of one encoded frame with the same RTP
    timestamp, so frames longer than one 20 ms packet would be half discarded.
    """
    kind = "audio"
    PTIME = 0.02

    def __init__(self, rate: int):
        super().__init__(maxsize=6)
        self.rate = rate
        self.samples = 0

    def push(self, f: Frame) -> None:
        pcm = to_int16(f.audio)
        n = int(self.rate * self.PTIME)
        for i in range(0, pcm.size, n):
            frame = av.AudioFrame.from_ndarray(pcm[None, i:i + n], format="s16", layout="mono")
            frame.sample_rate = self.rate
            frame.pts = self.samples
            frame.time_base = fractions.Fraction(1, self.rate)
            self.samples += frame.samples
            self.offer(frame)


async def pump(session: Session, video: AvatarVideoTrack, audio: AvatarAudioTrack,
               video_delay_ms: float = 0.0) -> None:
    """Session frames (paced at 25 fps) -> both tracks in the same tick.

    ``video_delay_ms`` holds each picture back so it lands with its sound: aiortc's
    Opus path regroups audio into 20 ms packets and so sends it about one packet late.
    """
    loop = asyncio.get_running_loop()
    try:
        async for f in session.frames(realtime=True):
            audio.push(f)
            if video_delay_ms > 0:
                loop.call_later(video_delay_ms / 1000, video.push, f)
            else:
                video.push(f)
    finally:
        for t in (video, audio):
            if t.readyState == "live":
                t.offer(None)


async def consume(track: MediaStreamTrack, session: Session) -> None:
    """Feed a received audio track into the session; always drained so nothing queues up."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if session.closed:
            return
        pcm = frame.to_ndarray()
        channels = len(frame.layout.channels)
        if frame.format.is_planar:
            pcm = pcm.T
        else:
            pcm = pcm.reshape(-1, channels)
        try:
            session.push_audio(pcm if channels > 1 else pcm[:, 0], frame.sample_rate)
        except Exception as exc:  # noqa: BLE001 - a bad packet must not end the call
            log.warning("session %s: dropped an audio frame: %s", session.id, exc)
