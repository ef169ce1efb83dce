"""The examples start, and say what they need when it is missing."""
import importlib.util
import os
import subprocess
import sys

from conftest import ROOT


def run_example(name, *args, **env_over):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "OPENAI_"))}
    env.update(env_over)
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def test_livekit_agent_explains_what_it_needs():
    r = run_example("livekit_agent.py", "dev")
    assert r.returncode == 2
    assert "LIVEKIT_URL" in r.stderr and "livekit-server --dev" in r.stderr and "float-rt livekit-worker" in r.stderr
    h = run_example("livekit_agent.py", "--help")
    assert h.returncode == 0 and "dev" in h.stdout and "start" in h.stdout


def test_pipecat_bot_explains_what_it_needs():
    r = run_example("pipecat_bot.py")
    assert r.returncode == 2
    assert "pipecat-ai[runner" in r.stderr or "OPENAI_API_KEY" in r.stderr


def test_pipecat_bot_pipeline_builds(small_engine, small_portrait, monkeypatch):
    """The example's pipeline, with its default services (constructed, not called) and the avatar."""
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
    from server.pipecat import SMALL_WEBRTC, FloatAvatarService
    spec = importlib.util.spec_from_file_location("pipecat_bot", ROOT / "examples" / "pipecat_bot.py")
    bot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bot)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")
    transport = SmallWebRTCTransport(SmallWebRTCConnection(ice_servers=[]), bot.transport_params())
    avatar = FloatAvatarService(small_engine, small_portrait, **SMALL_WEBRTC)
    pipeline = bot.build_pipeline(transport, *bot.build_services(), avatar)
    names = [type(p).__name__ for p in pipeline.processors]
    assert names.index("FloatAvatarService") == names.index("OpenAITTSService") + 1
    assert names.index("SmallWebRTCOutputTransport") == names.index("FloatAvatarService") + 1
    assert bot.transport_params().video_out_framerate == SMALL_WEBRTC["output_fps"]
