"""The agent side: ``avatar = AvatarSession(...)`` then ``await avatar.start(agent_session, room=ctx.room)``.

``mode="local"``: the avatar runs in the agent's own process (like bitHuman's local mode): the
agent's speech goes into a ``QueueAudioOutput`` that an ``AvatarRunner`` on the agent's room
reads, and the agent participant publishes the video.  One process, one engine.

``mode="worker"``: the avatar is an explicit dispatch to ``float-rt livekit-worker`` processes
(agent name ``float-rt-avatar``), which LiveKit places by their reported load; the chosen worker
joins the room as the avatar participant, publishing on the agent's behalf, and the agent's
speech reaches it through ``DataStreamAudioOutput`` (byte streams and RPCs over the room).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import (AvatarOptions, AvatarRunner, DataStreamAudioOutput,
                                         QueueAudioOutput)
from livekit.agents.voice.avatar import AvatarSession as _AvatarSession

from float_rt.errors import FloatRTError
from float_rt.media import crop_face, preset_images

from streaming.options import parse_options

from .job import SESSION_KEYS, AvatarJob, agent_state, encode_reference, read_portrait
from .worker import AGENT_NAME

log = logging.getLogger(__name__)

JOB_IMAGE_SIZE = 512     # the reference sent to a worker: the published model's input size


class AvatarSession(_AvatarSession):
    """A FLOAT-RT avatar for a LiveKit ``AgentSession``.

    ``image``: a portrait (path, encoded bytes or RGB array), cropped around the face unless
    ``crop=False``; or ``preset``, a portrait the worker (or the packaged page) has.
    ``options``: per-avatar session options (``streaming.options.SPECS``; the family's, e.g. emotion).
    Local mode takes an ``engine`` or builds one from ``checkpoints`` (default: the downloaded folder).
    """

    def __init__(self, image: str | Path | bytes | np.ndarray | None = None, *, preset: str | None = None,
                 mode: Literal["local", "worker"] = "local", engine=None, checkpoints: str | Path | None = None,
                 config: str = "float-512", device: str | None = None, options: dict | None = None,
                 crop: bool = True, video_size: int = 512, audio_sample_rate: int = 24000,
                 worker_agent_name: str = AGENT_NAME, avatar_identity: str = "float-rt-avatar",
                 avatar_name: str = "FLOAT-RT avatar"):
        super().__init__()
        if mode not in ("local", "worker"):
            raise FloatRTError(f"mode must be 'local' or 'worker', got {mode!r}")
        if (image is None) == (preset is None):
            raise FloatRTError("give an image or a preset")
        unknown = sorted(set(options or {}) - set(SESSION_KEYS))
        if unknown:
            raise FloatRTError(f"unknown avatar option(s) {', '.join(unknown)}; choose from {', '.join(SESSION_KEYS)}")
        self.mode = mode
        self._image, self._preset, self._crop = image, preset, crop
        self._engine, self._checkpoints, self._config, self._device = engine, checkpoints, config, device
        self._options = dict(options or {})
        parse_options(self._options)            # checked now; the engine checks the family's own
        self._video_size, self._rate = video_size, audio_sample_rate
        self._worker_agent_name = worker_agent_name
        self._identity, self._name = avatar_identity, avatar_name
        self.generator = None
        self.runner: AvatarRunner | None = None
        self.audio_output = None
        self._owns_engine = False

    @property
    def avatar_identity(self) -> str:
        # Local mode: the agent participant itself publishes the avatar.
        if self.mode == "local" and self._room is not None:
            return self._room.local_participant.identity
        return self._identity

    @property
    def provider(self) -> str:
        return "float-rt"

    def _portrait(self) -> np.ndarray:
        if self._preset is not None:
            from server.config import packaged_page
            path = preset_images([packaged_page() / "avatars"]).get(self._preset)
            if path is None:
                raise FloatRTError(f"unknown preset {self._preset!r}")
            return read_portrait(path)
        return read_portrait(self._image)

    async def start(self, agent_session, room: rtc.Room) -> None:
        await super().start(agent_session, room)
        if self.mode == "local":
            await self._start_local(agent_session, room)
        else:
            await self._start_worker(agent_session, room)

    # ------------------------------------------------------------------ in the agent's process
    def _local_engine(self):
        if self._engine is None:
            from streaming.engine import Engine
            self._engine = Engine.load(self._checkpoints, self._config, "stream", self._device)
            self._owns_engine = True
        return self._engine

    async def _start_local(self, agent_session, room: rtc.Room) -> None:
        import asyncio

        from .generator import FloatVideoGenerator
        engine = await asyncio.to_thread(self._local_engine)
        photo = self._portrait()
        image = await asyncio.to_thread(engine.prepare, photo, self._crop and self._preset is None)
        self.generator = FloatVideoGenerator(engine, image, engine.default_options(**self._options),
                                             video_size=self._video_size, audio_sample_rate=self._rate,
                                             photo=photo)
        # The agent's state (lk.agent.state) drives the avatar's: attentive while the user speaks.
        agent_session.on("agent_state_changed", lambda ev: self.generator.set_state(agent_state(ev.new_state)))
        # The agent resamples its TTS to our rate; playback starts when the avatar speaks, not when queued.
        self.audio_output = QueueAudioOutput(sample_rate=self._rate, wait_playback_start=True)
        self.runner = AvatarRunner(room, audio_recv=self.audio_output, video_gen=self.generator,
                                   options=AvatarOptions(*self.generator.video_size, self.generator.fps,
                                                         self._rate, 1))
        await self.runner.start()
        agent_session.output.replace_audio_tail(self.audio_output)

    # ------------------------------------------------------------------ dispatched to a worker
    def job(self, agent_identity: str) -> AvatarJob:
        """The dispatch metadata for a worker."""
        if self._preset is not None:
            return AvatarJob(agent_identity, self._identity, self._name, preset=self._preset,
                             options=self._options, video_size=self._video_size,
                             audio_sample_rate=self._rate).validate()
        rgb = self._portrait()
        if self._crop:
            rgb = crop_face(rgb, JOB_IMAGE_SIZE)
        return AvatarJob(agent_identity, self._identity, self._name, image=encode_reference(rgb),
                         options=self._options, video_size=self._video_size,
                         audio_sample_rate=self._rate).validate()

    async def _start_worker(self, agent_session, room: rtc.Room) -> None:
        from livekit import api
        from livekit.agents import get_job_context
        job = self.job(room.local_participant.identity)
        ctx = get_job_context(required=False)
        lkapi = ctx.api if ctx is not None else api.LiveKitAPI()
        try:
            await lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
                agent_name=self._worker_agent_name, room=room.name, metadata=job.to_json()))
        finally:
            if ctx is None:
                await lkapi.aclose()
        self.audio_output = DataStreamAudioOutput(room, destination_identity=self._identity,
                                                  sample_rate=self._rate, wait_remote_track=rtc.TrackKind.KIND_VIDEO)
        agent_session.output.replace_audio_tail(self.audio_output)

    async def aclose(self) -> None:
        if self.runner is not None:
            await self.runner.aclose()
            self.runner = None
        if self.generator is not None:
            self.generator.close()
            self.generator = None
        if self._owns_engine and self._engine is not None:
            self._engine.stop()
        await super().aclose()
