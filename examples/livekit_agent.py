#!/usr/bin/env python
"""A LiveKit voice agent whose face is a FLOAT-RT avatar.

    pip install 'float-rt[livekit]'
    livekit-server --dev                                  # ws://127.0.0.1:7880, key devkey, secret secret
    export LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret

    # in-process avatar (one process, one engine):
    FLOAT_RT_AVATAR_MODE=local python examples/livekit_agent.py dev
    # or dispatched avatar workers, one per GPU, on any machine that reaches the LiveKit server:
    float-rt livekit-worker --device cuda:0 --max-sessions 8
    FLOAT_RT_AVATAR_MODE=worker python examples/livekit_agent.py dev

Then join the room from a LiveKit client (e.g. the Agents Playground) and talk.

Environment:
  FLOAT_RT_AVATAR_MODE   local (default) or worker
  FLOAT_RT_AVATAR        a portrait file, or a preset name (default: astronaut)
  FLOAT_RT_CHECKPOINTS   local mode: checkpoint folder (default: the one `float-rt download` fills)
  FLOAT_RT_CONFIG        local mode: model config (default float-512; `small` runs on a CPU)
  AGENT_STT, AGENT_LLM, AGENT_TTS
                         LiveKit Inference model ids (needs LiveKit Cloud credentials), e.g.
                         deepgram/nova-3, openai/gpt-4.1-mini, cartesia/sonic-2.  To use your own
                         providers instead, edit `build_session()`: any STT/LLM/TTS plug-in works,
                         e.g. `from livekit.plugins import openai` -> stt=openai.STT(), ...
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli

from server.livekit import AvatarSession

NEEDED = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")

server = AgentServer()


def build_session() -> AgentSession:
    """The voice pipeline: choose your STT, LLM and TTS here."""
    return AgentSession(stt=os.environ.get("AGENT_STT", "deepgram/nova-3"),
                        llm=os.environ.get("AGENT_LLM", "openai/gpt-4.1-mini"),
                        tts=os.environ.get("AGENT_TTS", "cartesia/sonic-2"))


def build_avatar() -> AvatarSession:
    mode = os.environ.get("FLOAT_RT_AVATAR_MODE", "local")
    portrait = os.environ.get("FLOAT_RT_AVATAR", "astronaut")
    face = {"image": portrait} if Path(portrait).is_file() else {"preset": portrait}
    if mode == "worker":
        return AvatarSession(mode="worker", **face)
    return AvatarSession(mode="local", checkpoints=os.environ.get("FLOAT_RT_CHECKPOINTS"),
                         config=os.environ.get("FLOAT_RT_CONFIG", "float-512"), **face)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    session = build_session()
    avatar = build_avatar()
    await avatar.start(session, room=ctx.room)          # before session.start: it takes over the audio output
    await session.start(Agent(instructions="You are a friendly assistant with a face. Keep answers short."),
                        room=ctx.room)
    await session.generate_reply(instructions="Greet the user in one sentence.")


def main() -> int:
    missing = [k for k in NEEDED if not os.environ.get(k)]
    if missing and any(a in sys.argv[1:] for a in ("dev", "start", "connect")):
        print(f"this agent needs {', '.join(missing)}: run `livekit-server --dev` and\n"
              "  export LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret\n"
              "worker mode also needs `float-rt livekit-worker` running; see the top of this file.",
              file=sys.stderr)
        return 2
    cli.run_app(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
