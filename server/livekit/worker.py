"""``float-rt livekit-worker``: a LiveKit Agents worker that owns one engine on one device.

LiveKit's dispatcher places each avatar job on a worker by the load the worker reports, so
scaling out is one worker per GPU, on as many machines as needed, all registered under the
same agent name.  Jobs run as threads of this one process (``JobExecutorType.THREAD``), so
every avatar of the worker shares the engine and its batched steps.

A job joins the room as the avatar participant with ``lk.publish_on_behalf`` set to the agent
(the attribute is given when the job is accepted, so the server puts it in the token), reads
the agent's speech with ``DataStreamAudioReceiver`` and publishes through ``AvatarRunner``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from float_rt.errors import FloatRTError
from streaming.engine import Engine

from .job import AvatarJob, agent_state

log = logging.getLogger(__name__)

AGENT_NAME = "float-rt-avatar"
ENV = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
RESERVATION_S = 30.0      # an accepted job whose assignment never comes gives its slot back after this
JOIN_TIMEOUT_S = 30.0     # how long a started job waits for its agent to be in the room


@dataclass
class Capacity:
    """Admission for one engine: load = (running + accepted-but-not-started) / max_sessions."""
    max_sessions: int
    clock: Callable[[], float] = time.monotonic
    running: int = 0
    _reserved: list[float] = field(default_factory=list)   # accept times of jobs not started yet

    def _expire(self) -> None:
        now = self.clock()
        self._reserved = [t for t in self._reserved if now - t < RESERVATION_S]

    def load(self) -> float:
        self._expire()
        return min(1.0, (self.running + len(self._reserved)) / self.max_sessions)

    def reserve(self) -> bool:
        """A job asks to be taken: True (and a slot is held) if there is room."""
        self._expire()
        if self.running + len(self._reserved) >= self.max_sessions:
            return False
        self._reserved.append(self.clock())
        return True

    def start(self) -> None:
        """An accepted job begins: its reservation becomes a running session."""
        self._expire()
        if self._reserved:
            self._reserved.pop(0)
        self.running += 1

    def finish(self) -> None:
        self.running = max(0, self.running - 1)


class AvatarWorker:
    """Job handling of one worker: admission, then one avatar per job on the shared engine."""

    def __init__(self, engine: Engine, max_sessions: int, presets: dict[str, Path] | None = None,
                 agent_name: str = AGENT_NAME):
        self.engine, self.agent_name = engine, agent_name
        self.capacity = Capacity(max_sessions)
        self.presets = presets or {}
        self.jobs_refused = 0

    async def on_request(self, req) -> None:
        """Accept a job if its metadata is valid and there is room; the avatar joins under the
        identity the agent chose, publishing on the agent's behalf."""
        from livekit.agents.voice.room_io import ATTRIBUTE_PUBLISH_ON_BEHALF
        try:
            job = AvatarJob.from_json(req.job.metadata)
            if job.preset is not None and job.preset not in self.presets:
                have = ", ".join(self.presets) or "none"
                raise FloatRTError(f"unknown preset {job.preset!r}; this worker has {have}")
        except FloatRTError as exc:
            log.warning("job %s refused: %s", req.id, exc)
            self.jobs_refused += 1
            await req.reject(terminate=True)
            return
        if not self.capacity.reserve():
            log.info("job %s refused: at capacity (%d sessions)", req.id, self.capacity.max_sessions)
            self.jobs_refused += 1
            await req.reject(terminate=False)     # another worker may take it
            return
        await req.accept(identity=job.avatar_identity, name=job.avatar_name,
                         attributes={ATTRIBUTE_PUBLISH_ON_BEHALF: job.agent_identity})

    def load(self) -> float:
        return self.capacity.load()

    def photo(self, job: AvatarJob):
        """The whole photo of a preset (paste-back), None for a job's cropped portrait."""
        from float_rt.media import load_image
        return load_image(self.presets[job.preset]) if job.preset is not None else None

    def reference(self, job: AvatarJob):
        if job.preset is not None:
            return self.engine.prepare(self.photo(job), crop=True)
        return self.engine.prepare(job.image_array(), crop=False)   # cropped on the agent side

    async def entrypoint(self, ctx) -> None:
        from livekit import rtc
        from livekit.agents import AutoSubscribe
        from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner, DataStreamAudioReceiver

        from .generator import FloatVideoGenerator
        self.capacity.start()
        gen = runner = None
        try:
            job = AvatarJob.from_json(ctx.job.metadata)
            image = await asyncio.to_thread(self.reference, job)
            # The avatar needs the agent's data streams and RPCs, not anyone's media.
            await ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)
            gone = asyncio.Event()

            def on_left(p: rtc.RemoteParticipant) -> None:
                if p.identity == job.agent_identity:
                    gone.set()

            ctx.room.on("participant_disconnected", on_left)
            ctx.room.on("disconnected", lambda *_: gone.set())
            await asyncio.wait_for(ctx.wait_for_participant(identity=job.agent_identity), JOIN_TIMEOUT_S)
            options = self.engine.default_options(**job.options)
            photo = self.photo(job)
            gen = FloatVideoGenerator(self.engine, image, options, video_size=job.video_size,
                                      audio_sample_rate=job.audio_sample_rate, photo=photo)
            follow_agent_state(ctx.room, job.agent_identity, gen)
            receiver = DataStreamAudioReceiver(ctx.room, sender_identity=job.agent_identity)
            runner = AvatarRunner(ctx.room, audio_recv=receiver, video_gen=gen,
                                  options=AvatarOptions(*gen.video_size, gen.fps, job.audio_sample_rate, 1))
            await runner.start()
            await gone.wait()
        except (FloatRTError, asyncio.TimeoutError) as exc:
            log.error("avatar job %s failed: %s", ctx.job.id, exc or "the agent never joined")
        finally:
            if runner is not None:
                await runner.aclose()
            if gen is not None:
                gen.close()
            self.capacity.finish()
            ctx.shutdown("avatar done")


def follow_agent_state(room, agent_identity: str, gen) -> None:
    """The agent publishes its state as the participant attribute ``lk.agent.state``; the avatar
    follows it (attentive while the user speaks)."""
    from livekit.agents.types import ATTRIBUTE_AGENT_STATE

    def on_attributes(changed: dict, participant) -> None:
        if participant.identity == agent_identity and ATTRIBUTE_AGENT_STATE in changed:
            gen.set_state(agent_state(changed[ATTRIBUTE_AGENT_STATE]))

    room.on("participant_attributes_changed", on_attributes)
    agent = room.remote_participants.get(agent_identity)
    if agent is not None and ATTRIBUTE_AGENT_STATE in agent.attributes:
        gen.set_state(agent_state(agent.attributes[ATTRIBUTE_AGENT_STATE]))


def require_env() -> None:
    missing = [k for k in ENV if not os.environ.get(k)]
    if missing:
        raise FloatRTError(f"livekit-worker needs {', '.join(missing)} in the environment "
                           "(for `livekit-server --dev`: LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey "
                           "LIVEKIT_API_SECRET=secret)")


def run_worker(engine: Engine, max_sessions: int, presets: dict[str, Path], agent_name: str = AGENT_NAME) -> None:
    """Register with the LiveKit server (``LIVEKIT_*``) and serve avatar jobs until SIGINT/SIGTERM."""
    from livekit.agents import AgentServer, JobExecutorType
    require_env()
    worker = AvatarWorker(engine, max_sessions, presets, agent_name)
    server = AgentServer(job_executor_type=JobExecutorType.THREAD, load_threshold=1.0,
                         num_idle_processes=0, load_fnc=worker.load)
    server.rtc_session(worker.entrypoint, agent_name=agent_name, on_request=worker.on_request)

    async def main():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        engine.start()
        task = asyncio.create_task(server.run())
        print(f"float-rt livekit-worker: agent name {agent_name!r}, {max_sessions} sessions on {engine.device}, "
              f"presets: {', '.join(presets) or 'none'}", flush=True)
        done, _ = await asyncio.wait({task, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            await server.drain()
            await server.aclose()
        engine.stop()

    asyncio.run(main())
