"""Stand-ins for what needs a LiveKit server: a room that records what is published, and a TTS
that speaks with espeak-ng (real speech, no network)."""
from __future__ import annotations

import asyncio

import numpy as np
from livekit import rtc
from livekit.agents import utils
from livekit.agents.tts import TTS, ChunkedStream, TTSCapabilities
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS
from speech import espeak


class Publication:
    def __init__(self, track, options):
        self.track, self.options = track, options

    async def wait_for_subscription(self) -> None:
        return None


class LocalParticipant:
    identity = "agent-AJ_test"

    def __init__(self):
        self.published: list[Publication] = []

    async def publish_track(self, track, options) -> Publication:
        pub = Publication(track, options)
        self.published.append(pub)
        return pub


class StandInRoom(rtc.EventEmitter):
    """Enough of ``rtc.Room`` for ``AvatarRunner`` and ``AvatarSession``: connected, records publications."""
    name = "test-room"

    def __init__(self):
        super().__init__()
        self.local_participant = LocalParticipant()

    def isconnected(self) -> bool:
        return True


class EspeakTTS(TTS):
    """A TTS plug-in that speaks with espeak-ng, in 100 ms chunks, at 24 kHz mono."""

    def __init__(self, rate: int = 24000):
        super().__init__(capabilities=TTSCapabilities(streaming=False), sample_rate=rate, num_channels=1)
        self.spoken: list[np.ndarray] = []

    def synthesize(self, text: str, *, conn_options=DEFAULT_API_CONNECT_OPTIONS) -> ChunkedStream:
        return _EspeakStream(tts=self, input_text=text, conn_options=conn_options)


class _EspeakStream(ChunkedStream):
    async def _run(self, emitter) -> None:
        tts: EspeakTTS = self._tts  # type: ignore[assignment]
        pcm = await asyncio.to_thread(espeak, self._input_text, tts.sample_rate)
        tts.spoken.append(pcm)
        emitter.initialize(request_id=utils.shortuuid("espeak_"), sample_rate=tts.sample_rate, num_channels=1,
                           mime_type="audio/pcm")
        step = tts.sample_rate // 10
        for i in range(0, len(pcm), step):
            emitter.push(pcm[i:i + step].tobytes())
        emitter.flush()


def frames_of(pcm: np.ndarray, rate: int, ms: int = 10, channels: int = 1) -> list[rtc.AudioFrame]:
    """int16 mono -> ``rtc.AudioFrame``s of ``ms`` (stereo: the same signal twice)."""
    n = rate * ms // 1000
    out = []
    for i in range(0, len(pcm), n):
        c = pcm[i:i + n]
        data = np.repeat(c[:, None], channels, axis=1) if channels > 1 else c
        out.append(rtc.AudioFrame(np.ascontiguousarray(data).tobytes(), rate, channels, len(c)))
    return out


async def wait_until(condition, timeout: float, poll: float = 0.02) -> None:
    """Polls ``condition`` until it holds; fails the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(poll)
