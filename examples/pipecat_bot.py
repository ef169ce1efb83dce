#!/usr/bin/env python
"""A Pipecat voice bot whose face is a FLOAT-RT avatar, over SmallWebRTC (local, no outside service).

    pip install 'float-rt[pipecat]' 'pipecat-ai[runner,openai]'
    export OPENAI_API_KEY=...              # the default STT, LLM and TTS; see build_services()
    python examples/pipecat_bot.py         # then open http://localhost:7860/client

The `runner` extra serves Pipecat's prebuilt browser client and the SmallWebRTC signalling.
Pipeline: SmallWebRTC in -> STT -> LLM context -> LLM -> TTS -> FloatAvatarService -> SmallWebRTC out.

Environment:
  FLOAT_RT_CHECKPOINTS   checkpoint folder (default: the one `float-rt download` fills)
  FLOAT_RT_CONFIG        model config (default float-512; `small` runs on a CPU, with demo weights)
  FLOAT_RT_AVATAR        a portrait file (default: the packaged astronaut)
  FLOAT_RT_DEVICE        cpu, cuda or cuda:N
The STT, LLM and TTS are yours to choose: edit build_services() (any Pipecat service works,
e.g. Deepgram STT, Anthropic LLM, Cartesia TTS) and install its extra.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache

NEEDS = "pip install 'pipecat-ai[runner,openai]' (the runner serves the browser client)"


@lru_cache(maxsize=1)
def engine_and_image():
    """One engine for every bot of this process: concurrent calls share its batched steps."""
    from float_rt.media import load_image, prepare_reference
    from server.config import packaged_page
    from streaming.engine import Engine
    engine = Engine.load(os.environ.get("FLOAT_RT_CHECKPOINTS"), os.environ.get("FLOAT_RT_CONFIG", "float-512"),
                         "stream", os.environ.get("FLOAT_RT_DEVICE"))
    portrait = os.environ.get("FLOAT_RT_AVATAR") or packaged_page() / "avatars" / "astronaut.jpg"
    return engine, prepare_reference(load_image(portrait), engine.cfg.model.input_size)


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
    from pipecat.processors.aggregators.llm_response_universal import (LLMContextAggregatorPair,
                                                                       LLMUserAggregatorParams)
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


async def bot(runner_args):
    """Called by Pipecat's runner for each browser that connects."""
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
    from pipecat.workers.runner import WorkerRunner

    from server.pipecat import SMALL_WEBRTC, FloatAvatarService
    engine, image = engine_and_image()
    transport = SmallWebRTCTransport(runner_args.webrtc_connection, transport_params())
    avatar = FloatAvatarService(engine, image, video_size=512, **SMALL_WEBRTC)
    worker = PipelineWorker(build_pipeline(transport, *build_services(), avatar),
                            params=PipelineParams(enable_metrics=True))

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def main() -> int:
    try:
        from pipecat.runner.run import main as run_pipecat
    except ImportError as exc:
        print(f"this bot needs Pipecat's runner and services: {NEEDS} ({exc})", file=sys.stderr)
        return 2
    if not os.environ.get("OPENAI_API_KEY"):
        print("set OPENAI_API_KEY for the default STT/LLM/TTS, or choose other services in build_services()",
              file=sys.stderr)
        return 2
    # aioice leaves loopback out of the host candidates: offer 127.0.0.1 too, so that a browser on
    # this machine connects even where it has no other interface (containers).
    from server.ice import use_host_addresses
    use_host_addresses(["127.0.0.1"], keep_default=True)
    engine_and_image()          # load the model before the first browser connects
    run_pipecat()
    return 0


if __name__ == "__main__":
    sys.exit(main())
