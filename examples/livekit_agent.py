#!/usr/bin/env python
"""A LiveKit voice agent whose face is a FLOAT-RT avatar.

    pip install 'float-rt[livekit]'
    livekit-server --dev                                  # ws://127.0.0.1:7880, key devkey, secret secret
    export LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret

    # in-process avatar (one process, one engine):
    python -m livekit.agents start examples/livekit_agent.py --dev
    # the same, shorter:
    python examples/livekit_agent.py dev
    # or, with the LiveKit CLI (`lk`, a separate program), which also reloads on edits:
    lk agent dev examples/livekit_agent.py

    # or dispatched avatar workers, one per GPU, on any machine that reaches the LiveKit server:
    float-rt livekit-worker --device cuda:0 --max-sessions 8
    FLOAT_RT_AVATAR_MODE=worker python examples/livekit_agent.py dev

Then join the room from a LiveKit client (e.g. the Agents Playground) and talk.

`dev` and `start` go through `python -m livekit.agents start`, the pinned livekit-agents'
current entry point (its `python agent.py dev` CLI is deprecated). `start` is production mode.

Console mode talks to the agent through this machine's microphone and speaker, with no LiveKit
server and no avatar (there is no room to show it in): `lk agent console examples/livekit_agent.py`,
or `python examples/livekit_agent.py console` (LiveKit's older Python console, which says it is
deprecated). Both need the PortAudio library: on Debian `sudo apt-get install libportaudio2`, or
`bash scripts/install-system-deps.sh --portaudio`.

Environment:
  FLOAT_RT_AVATAR_MODE   local (default) or worker
  FLOAT_RT_AVATAR        a portrait file, or a preset name (default: astronaut)
  FLOAT_RT_CHECKPOINTS   local mode: checkpoint folder (default: the one `float-rt download` fills)
  FLOAT_RT_CONFIG        local mode: model config (default float-512; `ditto` for the Apache/MIT family;
                         `small` or `ditto-tiny` run on a CPU)
  AGENT_STT, AGENT_LLM, AGENT_TTS
                         LiveKit Inference model ids (needs LiveKit Cloud credentials), e.g.
                         deepgram/nova-3, openai/gpt-4.1-mini, cartesia/sonic-2.  To use your own
                         providers instead, edit `build_session()`: any STT/LLM/TTS plug-in works,
                         e.g. `from livekit.plugins import openai` -> stt=openai.STT(), ...
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from livekit.agents import Agent, AgentServer, AgentSession, JobContext

NEEDED = {"LIVEKIT_URL": "--url", "LIVEKIT_API_KEY": "--api-key", "LIVEKIT_API_SECRET": "--api-secret"}
NO_WEIGHTS = ("no checkpoint folder for the local avatar: set FLOAT_RT_CHECKPOINTS=DIR (or run "
              "`float-rt download --accept-license`; `FLOAT_RT_CONFIG=small` with `float-rt demo-weights "
              "--config small --out DIR` runs on a CPU), or use FLOAT_RT_AVATAR_MODE=worker")
USAGE = """usage: python examples/livekit_agent.py COMMAND [--url URL] [--api-key KEY] [--api-secret SECRET] [--log-level LEVEL]

commands:
  dev             run the agent's worker in development mode
                  (the same as: python -m livekit.agents start examples/livekit_agent.py --dev)
  start           run it in production mode (python -m livekit.agents start examples/livekit_agent.py)
  console         talk to the agent in this terminal, voice only, no LiveKit server: LiveKit's older
                  Python console; `lk agent console examples/livekit_agent.py` is the current one.
                  Both need PortAudio (Debian: libportaudio2)
  download-files  fetch the plug-ins' model files (python -m livekit.agents download-files)

LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET give the server (or --url, --api-key,
--api-secret); see the top of this file for the avatar's settings."""

log = logging.getLogger("livekit_agent")
server = AgentServer()


def build_session() -> AgentSession:
    """The voice pipeline: choose your STT, LLM and TTS here."""
    return AgentSession(stt=os.environ.get("AGENT_STT", "deepgram/nova-3"),
                        llm=os.environ.get("AGENT_LLM", "openai/gpt-4.1-mini"),
                        tts=os.environ.get("AGENT_TTS", "cartesia/sonic-2"))


def avatar_mode() -> str:
    return os.environ.get("FLOAT_RT_AVATAR_MODE", "local")


def build_avatar():
    # imported here: the model code loads only where a job runs
    from server.livekit import AvatarSession
    portrait = os.environ.get("FLOAT_RT_AVATAR", "astronaut")
    face = {"image": portrait} if Path(portrait).is_file() else {"preset": portrait}
    if avatar_mode() == "worker":
        return AvatarSession(mode="worker", **face)
    return AvatarSession(mode="local", checkpoints=os.environ.get("FLOAT_RT_CHECKPOINTS"),
                         config=os.environ.get("FLOAT_RT_CONFIG", "float-512"), **face)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    session = build_session()
    if ctx.is_fake_job():
        # console mode: no room to show a face in, and the avatar would take the speaker's audio
        log.info("console mode: voice only, the avatar is shown in a LiveKit room")
    else:
        await build_avatar().start(session, room=ctx.room)   # before session.start: it takes over the audio output
    await session.start(Agent(instructions="You are a friendly assistant with a face. Keep answers short."),
                        room=ctx.room)
    await session.generate_reply(instructions="Greet the user in one sentence.")


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def missing_settings(args: list[str]) -> list[str]:
    """The server settings given neither in the environment nor as options."""
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    return [k for k, flag in NEEDED.items() if not os.environ.get(k) and flag not in given]


def check_local_weights() -> str | None:
    """Local mode loads the model when the first job comes: find its folder now, not then."""
    if avatar_mode() != "local":
        return None
    from float_rt.cli import load_config_arg
    from float_rt.errors import FloatRTError
    from float_rt.family import family_of
    from float_rt.resources import resolve_checkpoints
    try:
        family = family_of(load_config_arg(os.environ.get("FLOAT_RT_CONFIG", "float-512")))
        resolve_checkpoints(os.environ.get("FLOAT_RT_CHECKPOINTS"), family.default_checkpoints(), NO_WEIGHTS)
    except FloatRTError as exc:
        return str(exc)
    return None


def run_worker(args: list[str], dev: bool) -> int:
    missing = missing_settings(args)
    if missing:
        return fail(f"this agent needs {', '.join(missing)}: for a local server run `livekit-server --dev` and "
                    "export LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret "
                    "(worker mode also needs `float-rt livekit-worker` running; see the top of this file)")
    problem = check_local_weights()
    if problem:
        return fail(problem)
    # LiveKit's current entry point: it imports this file as a module and runs its AgentServer.
    from livekit.agents.__main__ import main as livekit_main
    return livekit_main(["start", str(Path(__file__).resolve()), *(["--dev"] if dev else []), *args])


def run_console(args: list[str]) -> int:
    try:
        import sounddevice  # noqa: F401  (LiveKit's Python console plays and records through it)
    except OSError:
        return fail("console mode needs the PortAudio library: sudo apt-get install libportaudio2 "
                    "(or bash scripts/install-system-deps.sh --portaudio)")
    except ImportError:
        return fail("console mode needs sounddevice: pip install 'float-rt[mic]'")
    from livekit.agents import cli
    sys.argv = [sys.argv[0], "console", *args]
    cli.run_app(server)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if not command:
        print(USAGE, file=sys.stderr)
        return 2
    if command in ("dev", "start"):
        return run_worker(rest, dev=command == "dev")
    if command == "console":
        return run_console(rest)
    if command == "download-files":
        from livekit.agents.__main__ import main as livekit_main
        return livekit_main(["download-files"])
    return fail(f"unknown command {command!r}: choose dev, start, console or download-files (--help says more)")


if __name__ == "__main__":
    sys.exit(main())
