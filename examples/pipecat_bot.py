#!/usr/bin/env python
"""A Pipecat voice bot whose face is a FLOAT-RT avatar, over SmallWebRTC (local, no outside service).

    pip install 'float-rt[pipecat]'
    export OPENAI_API_KEY=...              # the default STT, LLM and TTS; see build_services()
    export FLOAT_RT_CHECKPOINTS=DIR        # or leave it out after `float-rt download --accept-license`
    python examples/pipecat_bot.py         # then open http://127.0.0.1:7860/ in a browser on this machine

This script serves its own page (examples/pipecat_client.html: a Start button, the microphone, the
avatar's video with its voice) and the SmallWebRTC signalling (POST /api/offer), with aiohttp. The
page loads nothing from another host, so the bot needs no network beyond the STT/LLM/TTS services.
Each browser that connects gets its own bot; all of them share one engine (its batched steps).
Pipeline: SmallWebRTC in -> STT -> LLM context -> LLM -> TTS -> FloatAvatarService -> SmallWebRTC out.

Options: --host (default 127.0.0.1) and --port (default 7860). Browsers let a page use the
microphone only on localhost or over https, so a bot on another host needs a TLS proxy in front.

Environment:
  FLOAT_RT_CHECKPOINTS   checkpoint folder (default: the one `float-rt download` fills)
  FLOAT_RT_CONFIG        model config (default float-512; `ditto` for the Apache/MIT family; `small` or
                         `ditto-tiny` run on a CPU, with demo weights
                         from `float-rt demo-weights --config small --out DIR`: the face is noise)
  FLOAT_RT_AVATAR        a portrait file (default: the packaged astronaut)
  FLOAT_RT_DEVICE        cpu, cuda or cuda:N
The STT, LLM and TTS are yours to choose: edit build_services() (any Pipecat service works,
e.g. Deepgram STT, Anthropic LLM, Cartesia TTS) and install its extra.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from functools import lru_cache
from pathlib import Path

PAGE = Path(__file__).with_name("pipecat_client.html")
NEEDS = "pip install 'float-rt[pipecat]' (pipecat-ai with its webrtc extra, aiortc and aiohttp)"
NO_WEIGHTS = ("no checkpoint folder: set FLOAT_RT_CHECKPOINTS=DIR (or run `float-rt download --accept-license`; "
              "`FLOAT_RT_CONFIG=small` with `float-rt demo-weights --config small --out DIR` runs on a CPU)")

log = logging.getLogger("pipecat_bot")


def model_config() -> str:
    return os.environ.get("FLOAT_RT_CONFIG", "float-512")


def checkpoint_folder() -> Path:
    """FLOAT_RT_CHECKPOINTS, or the folder `float-rt download` fills for the config's family;
    FloatRTError when neither is there."""
    from float_rt.cli import load_config_arg
    from float_rt.family import family_of
    from float_rt.resources import resolve_checkpoints
    family = family_of(load_config_arg(model_config()))
    return resolve_checkpoints(os.environ.get("FLOAT_RT_CHECKPOINTS"), family.default_checkpoints(), NO_WEIGHTS)


@lru_cache(maxsize=1)
def engine_and_image():
    """One engine for every bot of this process: concurrent calls share its batched steps."""
    from float_rt.media import load_image
    from server.config import packaged_page
    from streaming.engine import Engine
    engine = Engine.load(checkpoint_folder(), model_config(), "stream", os.environ.get("FLOAT_RT_DEVICE"))
    portrait = os.environ.get("FLOAT_RT_AVATAR") or packaged_page() / "avatars" / "astronaut.jpg"
    return engine, engine.prepare(load_image(portrait))


def build_services():
    """STT, LLM and TTS: your choice. OpenAI for all three needs one key."""
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.openai.stt import OpenAISTTService
    from pipecat.services.openai.tts import OpenAITTSService
    key = os.environ.get("OPENAI_API_KEY")
    return OpenAISTTService(api_key=key), OpenAILLMService(api_key=key), OpenAITTSService(api_key=key)


def build_pipeline(transport, stt, llm, tts, avatar):
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    context = LLMContext([{"role": "system", "content": "You are a friendly assistant with a face. "
                                                        "Keep answers to one or two short sentences."}])
    aggregators = LLMContextAggregatorPair(context,
                                           user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()))
    return Pipeline([transport.input(), stt, aggregators.user(), llm, tts, avatar, transport.output(),
                     aggregators.assistant()])


def transport_params():
    from pipecat.transports.base_transport import TransportParams

    from server.pipecat import SMALL_WEBRTC
    return TransportParams(audio_in_enabled=True, audio_out_enabled=True, video_out_enabled=True,
                           video_out_is_live=True, video_out_width=512, video_out_height=512,
                           video_out_framerate=SMALL_WEBRTC["output_fps"])


async def run_bot(connection) -> None:
    """The bot of one browser, on its SmallWebRTC connection; it ends when the browser leaves."""
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
    from pipecat.workers.runner import WorkerRunner

    from server.pipecat import SMALL_WEBRTC, FloatAvatarService
    engine, image = engine_and_image()
    transport = SmallWebRTCTransport(connection, transport_params())
    avatar = FloatAvatarService(engine, image, video_size=512, **SMALL_WEBRTC)
    worker = PipelineWorker(build_pipeline(transport, *build_services(), avatar),
                            params=PipelineParams(enable_metrics=True))

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def make_app():
    """The page (GET / and /client) and the signalling (POST /api/offer), as an aiohttp application.

    An offer ``{"sdp": ..., "type": "offer"}`` gets SmallWebRTC's answer ``{"sdp", "type", "pc_id"}``,
    and a bot (``run_bot``) starts on that connection.  The page sends its offer with every ICE
    candidate in it, so there is no trickle ICE and no renegotiation to handle.
    """
    from aiohttp import web
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection

    connections: dict[str, SmallWebRTCConnection] = {}
    bots: set[asyncio.Task] = set()

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=PAGE.read_bytes(), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def offer(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            sdp = body["sdp"]
            if not isinstance(sdp, str) or body.get("type", "offer") != "offer":
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text='expected JSON {"sdp": "...", "type": "offer"}\n') from None
        connection = SmallWebRTCConnection(ice_servers=[])     # host candidates only: nothing outside
        try:
            await connection.initialize(sdp=sdp, type="offer")
        except Exception as exc:                                # aiortc: an offer it cannot answer
            await connection.disconnect()
            raise web.HTTPBadRequest(text=f"cannot answer this offer: {exc}\n") from None
        answer = connection.get_answer()
        connections[connection.pc_id] = connection

        @connection.event_handler("closed")
        async def forget(closed):
            connections.pop(closed.pc_id, None)

        bot = asyncio.create_task(run_bot(connection), name=f"bot {connection.pc_id}")
        bots.add(bot)
        bot.add_done_callback(finished)
        log.info("browser %s connected: bot started", request.remote)
        return web.json_response(answer)

    def finished(bot: asyncio.Task) -> None:
        bots.discard(bot)
        error = None if bot.cancelled() else bot.exception()
        if error is not None:
            log.error("%s failed: %s: %s", bot.get_name(), type(error).__name__, error)
        else:
            log.info("%s ended", bot.get_name())

    async def shut_down(app: web.Application) -> None:
        for bot in list(bots):
            bot.cancel()
        await asyncio.gather(*bots, return_exceptions=True)
        await asyncio.gather(*(c.disconnect() for c in list(connections.values())), return_exceptions=True)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/client", page)
    app.router.add_post("/api/offer", offer)
    app.on_shutdown.append(shut_down)
    return app


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A Pipecat voice bot with a FLOAT-RT avatar, and its page.")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve the page on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    args = parser.parse_args(argv)
    if not os.environ.get("OPENAI_API_KEY"):
        return fail("set OPENAI_API_KEY for the default STT/LLM/TTS, or choose other services in build_services()")
    from float_rt.errors import FloatRTError
    try:
        checkpoint_folder()                 # at once, before the imports, the port and the model
    except FloatRTError as exc:
        return fail(str(exc))
    try:
        from aiohttp import web
        from pipecat.services.openai.llm import OpenAILLMService  # noqa: F401  (the default services)
        from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection  # noqa: F401
    except ImportError as exc:
        return fail(f"this bot needs {NEEDS}: {exc}")
    try:
        sock = socket.create_server((args.host, args.port))
    except OSError as exc:
        return fail(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}): choose another with --port")
    try:
        engine_and_image()                  # load the model before the first browser connects
    except FloatRTError as exc:
        sock.close()
        return fail(" ".join(str(exc).split()))
    # aioice leaves loopback out of the host candidates: offer 127.0.0.1 too, so that a browser on
    # this machine connects even where it has no other interface (containers).
    from server.ice import use_host_addresses
    use_host_addresses(["127.0.0.1"], keep_default=True)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")     # aioice logs each ICE check at INFO
    log.setLevel(logging.INFO)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Pipecat bot with a FLOAT-RT avatar: open http://{host}:{sock.getsockname()[1]}/ (Ctrl-C stops)",
          flush=True)
    web.run_app(make_app(), sock=sock, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
