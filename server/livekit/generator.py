"""``FloatVideoGenerator``: a LiveKit Agents ``VideoGenerator`` over one live streaming session.

The agent pushes its TTS audio (any rate, mono or stereo, any frame size) and ends each
speech segment with ``AudioSegmentEnd``.  Iterating yields, on the session's 25 fps clock,
each ``rtc.VideoFrame`` followed by the ``rtc.AudioFrame`` of exactly the 40 ms of speech
that frame was sampled from (at ``audio_sample_rate``), and ``AudioSegmentEnd`` right
after the last frame of a segment.  With no speech the avatar idles on motion generated
from silence and no audio is yielded, so the runner's playback position only counts speech.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Literal

import cv2
import numpy as np
import torch
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator

from float_rt.errors import FloatRTError
from streaming.audio_input import to_int16
from streaming.engine import Engine
from streaming.options import SessionOptions

from streaming.frames import FrameShaper
from streaming.session import Frame
from streaming.speech import SpeechTrack

log = logging.getLogger(__name__)

VIDEO_FORMATS = {"rgba": rtc.VideoBufferType.RGBA, "i420": rtc.VideoBufferType.I420}


@dataclass
class GeneratorStats:
    video_frames: int = 0
    audio_frames: int = 0
    audio_samples: int = 0          # speech samples yielded (per channel)
    segments_ended: int = 0
    segments_interrupted: int = 0
    rejected_audio_frames: int = 0  # frames the session refused (bad audio, too much queued)


class FloatVideoGenerator(VideoGenerator):
    """A FLOAT-RT avatar for ``AvatarRunner``: one live session on a shared ``streaming.Engine``.

    ``image`` is a prepared reference (``engine.prepare(photo)``);
    ``options`` are the session's (``engine.default_options()`` when None).  The engine's worker
    thread is started if it is not running; closing the generator closes only its session.
    """

    def __init__(self, engine: Engine, image: torch.Tensor, options: SessionOptions | None = None, *,
                 video_size: int | None = None, video_format: Literal["rgba", "i420"] = "i420",
                 audio_sample_rate: int = 24000, audio_channels: int = 1, photo: np.ndarray | None = None):
        if video_format not in VIDEO_FORMATS:
            raise FloatRTError(f"video_format must be one of {', '.join(VIDEO_FORMATS)}, got {video_format!r}")
        if audio_channels not in (1, 2):
            raise FloatRTError(f"audio_channels must be 1 or 2, got {audio_channels!r}")
        opts = dataclasses.replace(options or engine.default_options(), audio_out_rate=audio_sample_rate)
        self.engine = engine
        self.session = engine.open_session(image, opts.validate(), live=True)
        # The picture sent: the crop at video_size, or (controls.paste_back) pasted into ``photo``.
        self.shape = FrameShaper(engine, video_size, photo, opts.controls)
        self.video_size = self.shape.size
        self.video_format = video_format
        self.audio_sample_rate, self.audio_channels = audio_sample_rate, audio_channels
        self.fps = engine.fps
        self.stats = GeneratorStats()
        self.speech = SpeechTrack(self.session)
        self.last_speech_yield: float | None = None   # wall time of the last speech audio yielded
        self.last_frame: Frame | None = None          # the session frame behind the last video frame
        engine.start()

    @classmethod
    def from_checkpoints(cls, image: str | Path | np.ndarray, checkpoints: str | Path | None = None, *,
                         config: str = "float-512", stream_config: str = "stream", device: str | None = None,
                         crop: bool = True, **kwargs) -> FloatVideoGenerator:
        """Load an engine of its own (``checkpoints``: default the downloaded folder) for one avatar."""
        from float_rt.media import load_image
        engine = Engine.load(checkpoints, config, stream_config, device)
        img = load_image(image) if isinstance(image, (str, Path)) else image
        return cls(engine, engine.prepare(img, crop=crop), **kwargs)

    # ------------------------------------------------------------------ audio in
    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            self.speech.end()
            return
        if not self.speech.push_int16(bytes(frame.data), frame.num_channels, frame.sample_rate):
            self.stats.rejected_audio_frames += 1

    def clear_buffer(self) -> None:
        """Barge-in: queued speech and frames are dropped; no audio of the cut segments follows."""
        self.stats.segments_interrupted += len(self.speech.clear())

    # ------------------------------------------------------------------ media out
    def _video_frame(self, img: np.ndarray) -> rtc.VideoFrame:
        img = self.shape(img)
        if self.video_format == "i420":
            data = cv2.cvtColor(img, cv2.COLOR_RGB2YUV_I420)
        else:
            data = cv2.cvtColor(img, cv2.COLOR_RGB2RGBA)
        w, h = self.video_size
        return rtc.VideoFrame(w, h, VIDEO_FORMATS[self.video_format], data.tobytes())

    def set_state(self, state: str) -> None:
        """The agent's state (speaking, listening, thinking, idle): attentive motion while listening."""
        self.session.update(state=state)

    def _audio_frame(self, audio: np.ndarray) -> rtc.AudioFrame:
        pcm = to_int16(audio)
        if self.audio_channels == 2:
            pcm = np.repeat(pcm[:, None], 2, axis=1)
        return rtc.AudioFrame(pcm.tobytes(), self.audio_sample_rate, self.audio_channels, len(audio))

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        async for p in self.speech.frames():
            f = self.last_frame = p.frame
            yield self._video_frame(f.image)
            self.stats.video_frames += 1
            if p.speech:
                yield self._audio_frame(f.audio)
                self.stats.audio_frames += 1
                self.stats.audio_samples += len(f.audio)
                self.last_speech_yield = self.session.clock()
            for _ in p.ended:
                self.stats.segments_ended += 1
                yield AudioSegmentEnd()

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """End the session: iteration stops and the engine forgets it."""
        self.session.close()

    async def aclose(self) -> None:
        self.close()
