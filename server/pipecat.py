"""``FloatAvatarService``: FLOAT-RT as the video output of a Pipecat bot (extra ``float-rt[pipecat]``).

Put it after the TTS and before the output transport.  It takes the TTS audio (any rate) into a
live session and, paced by itself on the session's 25 fps clock, pushes each
``OutputImageRawFrame`` followed by the ``TTSAudioRawFrame`` of exactly the speech that image
shows, at the pipeline's output rate, so the transport plays picture and sound together.  With
no speech it keeps pushing idle frames.  A reply's ``TTSStartedFrame`` and ``TTSStoppedFrame`` are
passed on in step with its speech: right before its first image, right after its last.
``InterruptionFrame`` is barge-in: queued speech and images are dropped, the motion goes on.
Emotion and guidance scales change mid-session with ``set_emotion`` or a ``FloatAvatarUpdateFrame``.
Every other frame passes through untouched, in order.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import torch

try:
    from pipecat.frames.frames import (CancelFrame, ControlFrame, EndFrame, Frame, InterruptionFrame,
                                       OutputImageRawFrame, StartFrame, TTSAudioRawFrame, TTSStartedFrame,
                                       TTSStoppedFrame, UserStartedSpeakingFrame, UserStoppedSpeakingFrame)
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
    from pipecat.services.ai_service import AIService
    from pipecat.services.settings import ServiceSettings
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("the Pipecat integration needs the pipecat extra: pip install 'float-rt[pipecat]'") from exc

from float_rt.errors import FloatRTError
from streaming.audio_input import to_int16
from streaming.engine import Engine
from streaming.frames import FrameShaper
from streaming.options import CONTROL_NAMES, SPECS, parse_options
from streaming.speech import SpeechTrack

from .stamp import draw_stamp

log = logging.getLogger(__name__)

SESSION_OPTIONS = (*SPECS, *sorted(CONTROL_NAMES))   # streaming/options.py: the same names as every other door
# SmallWebRTC stamps video with aiortc's fixed 30 fps clock, so 25 fps images would carry RTP
# timestamps running at 5/6 of real time (a reply drifts a second behind its audio in 6 s):
# push images at 30 fps instead, and hold them back 40 ms to land with their sound (measured,
# tests/netns/test_pipecat_e2e.py).  FloatAvatarService(engine, image, **SMALL_WEBRTC).
DRAIN_STALL_S = 5.0      # a graceful end gives up on a reply that has shown no new frame for this long
SMALL_WEBRTC = {"output_fps": 30, "video_delay_ms": 40}


@dataclass
class FloatAvatarUpdateFrame(ControlFrame):
    """Change the avatar mid-session: ``emotion`` a label or ``"auto"`` (predicted from speech);
    None leaves a field as it is.  ``options``: any other changeable session option by name."""
    emotion: str | None = None
    a_cfg_scale: float | None = None
    e_cfg_scale: float | None = None
    options: dict = field(default_factory=dict)


@dataclass
class AvatarStats:
    images: int = 0
    audio_frames: int = 0
    audio_samples: int = 0
    interruptions: int = 0
    rejected_audio_frames: int = 0
    speech_starts: list = field(default_factory=list)   # frame index where each reply began


class FloatAvatarService(AIService):
    """One live avatar session on a shared ``streaming.Engine``.

    ``image``: a prepared reference (``engine.prepare(photo)``).  Options are the session options
    of ``streaming.options`` that the engine's family takes (FLOAT: emotion, a_cfg_scale, ...).
    ``video_size``: the images' side (default the model's; the transport scales to its own size), or with
    ``paste_back`` (and ``photo``, the whole picture) the (width, height) of the photo the face is pasted into.
    """

    def __init__(self, engine: Engine, image: torch.Tensor, *, video_size: int | tuple[int, int] | None = None,
                 output_fps: float | None = None, video_delay_ms: float = 0.0, sync_with_audio: bool = False,
                 stamp: bool = False, photo: np.ndarray | None = None, follow_user: bool = True, **options):
        unknown = sorted(set(options) - set(SESSION_OPTIONS) - {"settings"})
        if unknown:
            raise FloatRTError(f"unknown avatar option(s) {', '.join(unknown)}; "
                               f"choose from {', '.join(SESSION_OPTIONS)}")
        settings = options.pop("settings", None) or ServiceSettings(model="float-rt")
        if video_size is not None and not isinstance(video_size, int):
            options["video_size"], video_size = video_size, None    # (w, h) or "WxH": the paste-back control
        options = parse_options(options)
        super().__init__(settings=settings)
        self.engine, self.image = engine, image
        self.options = engine.default_options(**options)     # validated now, not at the first frame
        # The picture pushed: the crop at video_size, or (paste_back) pasted into ``photo``.
        self.shape = FrameShaper(engine, video_size, photo, self.options.controls)
        self.video_size = self.shape.size
        # The user speaking (UserStarted/StoppedSpeakingFrame) makes the avatar listen, then think.
        self.follow_user = follow_user
        # Images per second pushed (default the model's 25): a transport that stamps video with a
        # fixed clock of its own (SmallWebRTC: 30 fps) needs images at that rate, some shown twice.
        self.output_fps = float(output_fps or engine.fps)
        # Images ride the output transport's audio queue: each is shown once the speech before it has
        # been sent (for transports with video_out_is_live=False, which sample the latest image).
        self.sync_with_audio = sync_with_audio
        # Images held back behind their audio by this much: the transport's audio path (chunking,
        # 20 ms Opus packets, jitter buffer) is slower than its video path (measured at the client).
        self.video_delay = video_delay_ms / 1000.0
        self._delayed: asyncio.Queue | None = None
        self.stamp = stamp                          # draw each image's frame index (latency/lip-sync probes)
        self.stats = AvatarStats()
        self.speech: SpeechTrack | None = None
        self.last_speech_push: float | None = None     # wall time the last speech audio was pushed
        self._out_rate = 24000
        self._task: asyncio.Task | None = None
        self._image_task: asyncio.Task | None = None

    @property
    def session(self):
        return self.speech.session if self.speech else None

    # ------------------------------------------------------------------ lifecycle
    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        self._out_rate = setup.audio_out_sample_rate

    async def start(self, frame: StartFrame):
        await super().start(frame)
        rate = self._out_rate if self._out_rate % 25 == 0 else 16000
        options = dataclasses.replace(self.options, audio_out_rate=rate)
        session = await asyncio.to_thread(self.engine.open_session, self.image, options, True)
        self.speech = SpeechTrack(session)
        self.engine.start()
        self._task = self.create_task(self._emit(), name="float-rt-avatar")
        if self.video_delay > 0:
            self._delayed = asyncio.Queue()
            self._image_task = self.create_task(self._push_delayed(), name="float-rt-avatar-images")

    async def stop(self, frame: EndFrame):
        """Graceful end: the speech already queued is shown and heard first."""
        await super().stop(frame)
        if self.speech is not None:
            self.speech.end()
            s = self.session
            # Wait while the reply is still moving: a busy machine shows it late, not never; a
            # stalled session (no frame for DRAIN_STALL_S) is given up.
            def progress():     # new frames shown (repeats of the last one are not progress)
                return s.stats.frames_out - s.stats.duplicated
            last, shown = s.clock(), progress()
            while self.speech.speaking and not s.closed and s.clock() - last < DRAIN_STALL_S:
                await asyncio.sleep(0.04)
                if progress() != shown:
                    last, shown = s.clock(), progress()
        await self._close()

    async def cancel(self, frame: CancelFrame):
        await super().cancel(frame)
        await self._close()

    async def _close(self):
        if self.speech is not None:
            self.session.close()
        for name in ("_task", "_image_task"):
            task = getattr(self, name, None)
            if task is not None:
                await self.cancel_task(task)
                setattr(self, name, None)

    # ------------------------------------------------------------------ control
    def set_emotion(self, emotion: str | None = None, a_cfg_scale: float | None = None,
                    e_cfg_scale: float | None = None) -> None:
        """``emotion``: a label, ``"auto"`` for predicted from speech, None to keep it."""
        changes = {k: v for k, v in dict(a_cfg_scale=a_cfg_scale, e_cfg_scale=e_cfg_scale).items() if v is not None}
        if emotion is not None:
            changes["emotion"] = None if emotion == "auto" else emotion
        self.update(**changes)

    def update(self, **changes) -> None:
        """Change session options mid-session (the changeable ones the family takes)."""
        changes = parse_options(changes, flat_controls=True)
        self.options = self.options.updated(changes, self.engine.live)
        if self.session is not None and changes:
            self.session.update(**changes)

    def _follow(self, state: str) -> None:
        if self.follow_user and self.options.controls.state != state:
            self.update(state=state)

    # ------------------------------------------------------------------ frames in
    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction != FrameDirection.DOWNSTREAM or self.speech is None:
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSAudioRawFrame):
            self._push_speech(frame)
        elif isinstance(frame, TTSStartedFrame):
            self._follow("speaking")
            self.speech.begin(frame)
        elif isinstance(frame, TTSStoppedFrame):
            if self.speech.end(frame) is None:      # a reply without audio: nothing to wait for
                await self.push_frame(frame)
        elif isinstance(frame, FloatAvatarUpdateFrame):
            try:
                self.set_emotion(frame.emotion, frame.a_cfg_scale, frame.e_cfg_scale)
                if frame.options:
                    self.update(**frame.options)
            except FloatRTError as exc:
                await self.push_error(error_msg=f"avatar update refused: {exc}")
        elif isinstance(frame, (UserStartedSpeakingFrame, UserStoppedSpeakingFrame)):
            self._follow("listening" if isinstance(frame, UserStartedSpeakingFrame) else "thinking")
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            self.stats.interruptions += 1
            self.speech.clear()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    def _push_speech(self, frame: TTSAudioRawFrame) -> None:
        if not self.speech.push_int16(frame.audio, frame.num_channels, frame.sample_rate):
            self.stats.rejected_audio_frames += 1

    # ------------------------------------------------------------------ frames out
    def _image(self, rgb: np.ndarray, index: int) -> OutputImageRawFrame:
        rgb = self.shape(rgb)
        if self.stamp:
            rgb = draw_stamp(rgb, index)
        frame = OutputImageRawFrame(image=np.ascontiguousarray(rgb).tobytes(), size=self.video_size, format="RGB")
        frame.sync_with_audio = self.sync_with_audio
        return frame

    def _audio(self, audio: np.ndarray) -> TTSAudioRawFrame:
        return TTSAudioRawFrame(audio=to_int16(audio).tobytes(), sample_rate=self.session.audio.out_rate,
                                num_channels=1)

    async def _show(self, image: OutputImageRawFrame) -> None:
        self.stats.images += 1
        if self._delayed is None:
            await self.push_frame(image)
        else:
            self._delayed.put_nowait((self.session.clock() + self.video_delay, image))

    async def _push_delayed(self) -> None:
        while True:
            due, image = await self._delayed.get()
            wait = due - self.session.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.push_frame(image)

    async def _emit(self) -> None:
        fps, out = self.engine.fps, self.output_fps
        k = 0
        async for p in self.speech.frames():
            for seg in p.started:
                self.stats.speech_starts.append(seg.start // self.speech.spo)
                if seg.begin is not None:
                    await self.push_frame(seg.begin)
            # Output ticks that fall within this frame's 1/fps: 1 at the model's rate; 25 -> 30 fps
            # gives 1, 1, 1, 1, 2; the speech goes with the first image.
            shows = int((k + 1) * out // fps) - int(k * out // fps)
            k += 1
            image = self._image(p.frame.image, p.frame.index) if shows else None
            if image is not None:
                await self._show(image)
            if p.speech:
                await self.push_frame(self._audio(p.frame.audio))
                self.stats.audio_frames += 1
                self.stats.audio_samples += p.frame.audio.size
                self.last_speech_push = self.session.clock()
            for seg in p.ended:
                if seg.end is not None:
                    await self.push_frame(seg.end)
            for _ in range(shows - 1):
                await asyncio.sleep(1.0 / out)
                await self._show(dataclasses.replace(image))
