"""Speech segments on a live session's output timeline, for transports that hand the speech back
with the frames (LiveKit's AvatarRunner, Pipecat's output transport).

A voice agent sends its replies as segments (TTS started ... audio ... stopped).  ``SpeechTrack``
pushes their audio into the session, remembers where each segment lies on the output timeline,
and paces the session's frames, telling for each frame whether it shows speech, which segments
start with it and which end with it.  A barge-in drops every segment at once.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from float_rt.errors import FloatRTError

from .session import Frame, Session

log = logging.getLogger(__name__)


@dataclass
class Segment:
    start: int                  # output samples (at the session's audio_out_rate)
    last: int                   # end of the audio pushed so far
    closed: bool = False        # the agent said it is complete: ``last`` is its end
    announced: bool = False     # its first frame has been handed out
    begin: Any = None           # the transport's own markers (e.g. Pipecat's TTS started/stopped frames)
    end: Any = None


@dataclass
class PacedFrame:
    frame: Frame
    speech: bool                                            # the frame shows speech: hand its audio on
    started: list[Segment] = field(default_factory=list)    # segments whose first frame this is
    ended: list[Segment] = field(default_factory=list)      # segments whose last frame this was


class SpeechTrack:
    def __init__(self, session: Session):
        self.session = session
        self.spo = session.spo
        self.segments: list[Segment] = []
        self._open: Segment | None = None
        self._begin: Any = None
        self.rejected = 0            # audio frames the session refused (bad audio, too much queued)

    def begin(self, marker: Any = None) -> None:
        """A new segment starts (its audio follows); ``marker`` comes back with its first frame."""
        self._open = None
        self._begin = marker

    def push(self, samples, rate: int) -> None:
        """Speech of the current segment (raises FloatRTError if the session refuses it)."""
        start, end = self.session.push_audio(samples, rate)
        if self._open is None:
            self._open = Segment(start, end, begin=self._begin)
            self._begin = None
            self.segments.append(self._open)
        self._open.last = end

    def push_int16(self, data: bytes, channels: int, rate: int) -> bool:
        """Interleaved 16-bit PCM, as voice-agent frameworks carry it.  Audio the session refuses
        is dropped and counted (False): one bad frame must not end the avatar."""
        pcm = np.frombuffer(data, dtype=np.int16).reshape(-1, channels)
        try:
            self.push(pcm[:, 0] if channels == 1 else pcm, rate)
        except FloatRTError as exc:
            self.rejected += 1
            log.warning("avatar session %s: audio frame dropped: %s", self.session.id, exc)
            return False
        return True

    def end(self, marker: Any = None) -> Segment | None:
        """The current segment is complete; ``marker`` comes back after its last frame.
        Returns None when the segment had no audio (nothing to wait for)."""
        seg, self._open, self._begin = self._open, None, None
        if seg is not None:
            seg.closed, seg.end = True, marker
        return seg

    def clear(self) -> list[Segment]:
        """Barge-in: the session drops queued speech and frames; the segments are gone."""
        self.session.interrupt()
        dropped, self.segments = self.segments, []
        self._open, self._begin = None, None
        return dropped

    @property
    def speaking(self) -> bool:
        return bool(self.segments)

    def _pace(self, f: Frame) -> PacedFrame:
        a, b = f.index * self.spo, (f.index + 1) * self.spo
        live = [s for s in self.segments if s.start < b and s.last > a]
        p = PacedFrame(f, speech=bool(live) and not f.duplicate)
        if not f.duplicate:
            p.started = [s for s in live if not s.announced]
            for s in p.started:
                s.announced = True
        p.ended = [s for s in self.segments if s.closed and s.last <= b]
        for s in p.ended:
            self.segments.remove(s)
            if not s.announced:          # all its frames were skipped: it still starts before it ends
                s.announced = True
                p.started.append(s)
        return p

    async def frames(self) -> AsyncIterator[PacedFrame]:
        """The session's frames on its 25 fps clock, each with what it shows of the speech."""
        async for f in self.session.frames(realtime=True):
            yield self._pace(f)
