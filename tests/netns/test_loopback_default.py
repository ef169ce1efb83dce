"""`float-rt serve` with no --ice-host, on a machine whose only interface is `lo`.

aioice skips loopback when it gathers host candidates, so without the loopback default such
a server answers the offer and then no media ever flows.  The server runs as its own process
(as a user starts it); the client pins its own candidates to 127.0.0.1.
"""
import asyncio
import socket
import subprocess
import sys
import time
import urllib.request

from helpers import HANG_S, ROOT, only_loopback

from float_rt.media import load_audio
from server.ice import use_host_addresses


def test_loopback_listener_offers_loopback_candidates(small_ckpt, client_mod, speech_wav):
    assert only_loopback()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--checkpoints", str(small_ckpt),
                               "--config", "small", "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.3)
        use_host_addresses(["127.0.0.1"])
        speech = load_audio(speech_wav)[:16000]
        frames, answer = [], {}

        async def main():
            got = asyncio.Event()

            def on_video(frame, t):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) >= 25:
                    got.set()

            c = client_mod.AvatarClient(f"ws://127.0.0.1:{port}/ws", client_mod.FileAudioTrack(speech),
                                        on_video=on_video)
            answer.update(await c.connect())
            await asyncio.wait_for(got.wait(), HANG_S)
            await c.close()

        asyncio.run(main())
        assert "127.0.0.1" in answer["sdp"]                # the server's own candidates include loopback
        assert len(frames) >= 25 and frames[0].shape == (512, 512, 3)
    finally:
        server.terminate()
        server.wait(30)
