"""The examples start the current way, and say what they need, in one line, when it is missing."""
import asyncio
import importlib.abc
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest
from conftest import ROOT

NO_SERVER = {"LIVEKIT_URL": "", "LIVEKIT_API_KEY": "", "LIVEKIT_API_SECRET": ""}


def example_env(**over):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "OPENAI_", "FLOAT_RT_"))}
    env.update({k: v for k, v in over.items() if v})
    return env


def run_example(name, *args, **env_over):
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=ROOT,
                          env=example_env(**env_over), capture_output=True, text=True, timeout=180)


def load_example(name):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), ROOT / "examples" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_error_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def closed_loopback_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- LiveKit
def test_livekit_agent_explains_what_it_needs():
    for command in ("dev", "start"):
        r = run_example("livekit_agent.py", command)
        assert r.returncode == 2
        line = one_error_line(r.stderr)
        assert "LIVEKIT_URL" in line and "livekit-server --dev" in line and "float-rt livekit-worker" in line
        assert "deprecated" not in (r.stdout + r.stderr).lower()
    h = run_example("livekit_agent.py", "--help")
    assert h.returncode == 0
    assert "python -m livekit.agents start examples/livekit_agent.py --dev" in h.stdout
    assert "console" in h.stdout and "PortAudio" in h.stdout and "libportaudio2" in h.stdout
    u = run_example("livekit_agent.py", "connect")
    assert u.returncode == 2 and "dev, start, console" in one_error_line(u.stderr)


def test_livekit_agent_local_mode_finds_its_weights_first(tmp_path):
    r = run_example("livekit_agent.py", "dev", LIVEKIT_URL=f"ws://127.0.0.1:{closed_loopback_port()}",
                    LIVEKIT_API_KEY="devkey", LIVEKIT_API_SECRET="secret", FLOAT_RT_CACHE=str(tmp_path))
    assert r.returncode == 2
    line = one_error_line(r.stderr)
    assert "FLOAT_RT_CHECKPOINTS" in line and "FLOAT_RT_AVATAR_MODE=worker" in line


def test_livekit_agent_runs_livekits_current_cli(monkeypatch):
    """`dev`/`start` hand over to `python -m livekit.agents start FILE [--dev]`, never the deprecated CLI."""
    import livekit.agents.__main__ as livekit_main
    from livekit.agents import cli
    agent = load_example("livekit_agent.py")
    calls = []
    monkeypatch.setattr(livekit_main, "main", lambda argv: calls.append(argv) or 0)
    monkeypatch.setattr(cli, "run_app", lambda *a: pytest.fail("the deprecated CLI was used"))
    monkeypatch.setenv("FLOAT_RT_AVATAR_MODE", "worker")
    for k in NO_SERVER:
        monkeypatch.delenv(k, raising=False)
    flags = ["--url", "ws://127.0.0.1:7880", "--api-key", "devkey", "--api-secret=secret"]
    assert agent.main(["dev", *flags]) == 0
    assert agent.main(["start", *flags, "--log-level", "DEBUG"]) == 0
    path = str((ROOT / "examples" / "livekit_agent.py").resolve())
    assert calls == [["start", path, "--dev", *flags], ["start", path, *flags, "--log-level", "DEBUG"]]
    # LiveKit's own discovery finds the example's AgentServer in the file
    from livekit.agents.cli.discover import get_import_data
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        assert get_import_data(path=ROOT / "examples" / "livekit_agent.py").app_name == "server"
    finally:
        sys.modules.pop("livekit_agent", None)


def test_livekit_agent_dev_prints_no_deprecation():
    """The real start-up, up to the worker's first attempt to reach a LiveKit server (a closed loopback port)."""
    env = example_env(LIVEKIT_URL=f"ws://127.0.0.1:{closed_loopback_port()}", LIVEKIT_API_KEY="devkey",
                      LIVEKIT_API_SECRET="a-secret-of-at-least-thirty-two-bytes", FLOAT_RT_AVATAR_MODE="worker")
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "livekit_agent.py"), "dev"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    guard = threading.Timer(170, proc.kill)      # a hang guard only: the worker logs its start at once
    guard.start()
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "failed to connect to livekit" in line:
                break
        proc.send_signal(signal.SIGINT)
        seen.append(proc.communicate(timeout=120)[0])
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(seen)
    assert "starting worker" in out and "failed to connect to livekit" in out, out
    assert "deprecated" not in out.lower(), out


def test_livekit_agent_console_names_portaudio(monkeypatch, capsys):
    from livekit.agents import cli
    agent = load_example("livekit_agent.py")
    monkeypatch.setattr(cli, "run_app", lambda *a: pytest.fail("console started without PortAudio"))

    class NoPortAudio(importlib.abc.MetaPathFinder):      # what sounddevice raises where the library is missing
        def find_spec(self, name, path=None, target=None):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoPortAudio(), *sys.meta_path])
    assert agent.main(["console"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "PortAudio" in line and "libportaudio2" in line and "install-system-deps.sh --portaudio" in line


def test_install_script_offers_portaudio():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "install-system-deps.sh"), "--no-such-option"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--portaudio" in one_error_line(r.stderr)
    h = subprocess.run(["bash", str(ROOT / "scripts" / "install-system-deps.sh"), "--help"],
                       capture_output=True, text=True, timeout=60)
    assert h.returncode == 0 and "--portaudio" in h.stdout
    script = (ROOT / "scripts" / "install-system-deps.sh").read_text()
    assert "libportaudio2" in script and "FLOAT_RT_PORTAUDIO" in script


# ---------------------------------------------------------------------------------------------- Pipecat
def test_pipecat_bot_explains_what_it_needs():
    r = run_example("pipecat_bot.py")
    assert r.returncode == 2
    assert "OPENAI_API_KEY" in one_error_line(r.stderr)


def test_pipecat_bot_without_weights_says_how_to_give_them(tmp_path):
    r = run_example("pipecat_bot.py", OPENAI_API_KEY="sk-not-used", FLOAT_RT_CACHE=str(tmp_path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    line = one_error_line(r.stderr)
    assert "FLOAT_RT_CHECKPOINTS" in line and "--checkpoints" not in line


def test_pipecat_bot_pipeline_builds(family_engine, monkeypatch):
    """The example's pipeline, with its default services (constructed, not called) and the avatar."""
    engine, portrait = family_engine
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

    from server.pipecat import SMALL_WEBRTC, FloatAvatarService
    bot = load_example("pipecat_bot.py")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")
    transport = SmallWebRTCTransport(SmallWebRTCConnection(ice_servers=[]), bot.transport_params())
    avatar = FloatAvatarService(engine, portrait, **SMALL_WEBRTC)
    pipeline = bot.build_pipeline(transport, *bot.build_services(), avatar)
    names = [type(p).__name__ for p in pipeline.processors]
    assert names.index("FloatAvatarService") == names.index("OpenAITTSService") + 1
    assert names.index("SmallWebRTCOutputTransport") == names.index("FloatAvatarService") + 1
    assert bot.transport_params().video_out_framerate == SMALL_WEBRTC["output_fps"]


def test_pipecat_bot_serves_its_own_page_and_answers_an_offer(monkeypatch):
    """The page needs no other host; an offer gets SmallWebRTC's answer and a bot on that connection."""
    import aiohttp
    import aioice.ice
    from aiohttp import web
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection

    bot = load_example("pipecat_bot.py")
    # every peer of this test offers 127.0.0.1 only: nothing leaves loopback
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])

    async def scenario():
        started = asyncio.Event()
        bots = []

        async def fake_bot(connection):          # stands in for STT/LLM/TTS and the avatar
            bots.append(connection)
            started.set()

        monkeypatch.setattr(bot, "run_bot", fake_bot)
        runner = web.AppRunner(bot.make_app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            async with aiohttp.ClientSession() as http:
                pages = []
                for path in ("/", "/client"):
                    async with http.get(base + path) as r:
                        assert r.status == 200 and r.content_type == "text/html"
                        pages.append(await r.text())
                assert pages[0] == pages[1]
                for wrong in ({"offer": "none"}, {"sdp": "v=0 not an offer", "type": "offer"}):
                    async with http.post(base + "/api/offer", json=wrong) as r:
                        assert r.status == 400, await r.text()
                assert not bots

                client.addTrack(AudioStreamTrack())                      # the microphone: audio sendrecv
                client.addTransceiver("video", direction="recvonly")     # the avatar
                await client.setLocalDescription(await client.createOffer())
                offer = {"sdp": client.localDescription.sdp, "type": "offer"}
                async with http.post(base + "/api/offer", json=offer) as r:
                    assert r.status == 200
                    answer = await r.json()
            await asyncio.wait_for(started.wait(), 60)
            await client.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
            kinds = [t.kind for t in client.getTransceivers()]
            return pages[0], answer, bots, kinds
        finally:
            await client.close()
            await runner.cleanup()

    page, answer, bots, kinds = asyncio.run(scenario())
    assert answer["type"] == "answer" and "m=audio" in answer["sdp"] and "m=video" in answer["sdp"]
    assert len(bots) == 1 and isinstance(bots[0], SmallWebRTCConnection) and bots[0].pc_id == answer["pc_id"]
    assert kinds == ["audio", "video"]
    # our page: a Start button, the microphone, the avatar's video, the offer to this server, no other host
    assert 'id="start"' in page and "<video" in page and "getUserMedia" in page and '"/api/offer"' in page
    assert re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page, re.IGNORECASE) is None
    assert re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"(?!data:)", page) is None


@pytest.mark.parametrize("config", ["small", "ditto-tiny"])
def test_pipecat_bot_loads_the_family_its_config_names(config, small_ckpt, ditto_ckpt, monkeypatch):
    """FLOAT_RT_CONFIG picks the family: the bot's engine and portrait are that family's."""
    monkeypatch.setenv("FLOAT_RT_CONFIG", config)
    monkeypatch.setenv("FLOAT_RT_CHECKPOINTS", str(small_ckpt if config == "small" else ditto_ckpt))
    bot = load_example("pipecat_bot.py")
    engine, image = bot.engine_and_image()
    assert engine.name == config and engine.family == ("float" if config == "small" else "ditto")
    session = engine.open_session(image)          # the portrait is what this family's sessions take
    session.close()
