"""Server limits and failure handling: cycles, vanishing clients, bad messages, busy, token, origins."""
import asyncio
import base64
import gc
import json
import time
import urllib.request

import numpy as np
import psutil
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from float_rt.media import load_audio
from server.stamp import read_stamp

from helpers import HANG_S, eventually, make_server


def wait_until(cond, timeout=HANG_S):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def idle(server):
    return server.call(lambda: server.server.active == 0 and not server.server.connections
                       and not server.server.engine.sessions)


async def raw(url, **kw):
    ws = await websockets.connect(url, max_size=None, compression=None, **kw)
    hello = json.loads(await ws.recv())
    assert hello["type"] == "hello"
    return ws


async def ask(ws, msg):
    await ws.send(msg if isinstance(msg, (str, bytes)) else json.dumps(msg))
    return json.loads(await asyncio.wait_for(ws.recv(), HANG_S))


async def session(client_mod, url, speech, frames=None, **options):
    track = client_mod.FileAudioTrack(speech, tail_silence=0.5)
    got = asyncio.Event()

    def on_video(frame, t):
        if frames is not None:
            frames.append(frame)
        got.set()

    c = client_mod.AvatarClient(url, track, on_video=on_video, **options)
    await c.connect()
    await asyncio.wait_for(got.wait(), HANG_S)
    return c


def test_fifty_connect_disconnect_cycles_leak_nothing(server, client_mod, speech_wav):
    speech = load_audio(speech_wav)[:8000]
    proc = psutil.Process()

    async def cycles(n):
        for _ in range(n):
            c = await session(client_mod, server.url, speech, emotion="neutral")
            await c.close()

    asyncio.run(cycles(10))                        # warm-up: codecs, allocator pools
    assert wait_until(lambda: idle(server))
    gc.collect()
    rss0 = proc.memory_info().rss
    tasks0 = server.call(lambda: len(asyncio.all_tasks()))
    asyncio.run(cycles(50))
    assert wait_until(lambda: idle(server))
    gc.collect()
    growth = (proc.memory_info().rss - rss0) / 2**20
    tasks = server.call(lambda: len(asyncio.all_tasks()))
    print(f"\n50 cycles: RSS growth {growth:.1f} MB, server tasks {tasks0} -> {tasks}")
    assert growth < 50
    assert tasks <= tasks0


def test_client_vanishing_mid_stream_frees_its_session(server, client_mod, speech_wav):
    speech = load_audio(speech_wav)

    async def vanish():
        c = await session(client_mod, server.url, speech)
        assert server.call(lambda: server.server.active) == 1
        # No bye: the peer connection and the websocket just disappear.
        c.ws.transport.abort()
        await c.pc.close()
        for t in c._tasks:
            t.cancel()

    asyncio.run(vanish())
    assert wait_until(lambda: idle(server))
    # The server is unharmed.
    async def again():
        c = await session(client_mod, server.url, speech[:8000])
        await c.close()
    asyncio.run(again())


def test_malformed_and_oversized_messages_get_errors(server, portrait_png):
    async def main():
        ws = await raw(server.url)
        codes = []
        for msg in ["not json", "[1, 2]", json.dumps({"type": "dance"}), json.dumps({"type": "set", "emotion": "sad"}),
                    json.dumps({"type": "interrupt"}), b"\x00\x01",
                    json.dumps({"type": "set", "pad": "x" * 70000}),
                    json.dumps({"type": "offer", "sdp": "nonsense"}),
                    json.dumps({"type": "offer", "sdp": "v=0\r\n", "avatar": "%%%not base64%%%"}),
                    json.dumps({"type": "offer", "sdp": "v=0\r\n", "avatar": "A" * int(13.38 * 2**20)}),
                    json.dumps({"type": "offer", "sdp": "v=0\r\n", "nfe": 1000}),
                    json.dumps({"type": "offer", "sdp": "v=0\r\n", "emotion": "bored"}),
                    json.dumps({"type": "offer", "sdp": "v=0\r\n", "preset": "nobody"}),
                    json.dumps({"type": "offer", "sdp": "v=0\r\n", "preset": "astronaut"}),
                    "x" * (2 * 2**20),                     # 2 MB of text that is no offer
                    "[" * 100_000 + "]" * 100_000]:        # 100,000 levels of nesting
            if msg == "x" * (2 * 2**20):
                # The 13 MB offer above spent the connection's byte burst (max_bytes_per_s): a client
                # within its budget waits for it to refill.  (A slower machine only waits longer.)
                await asyncio.sleep(1.5)
            reply = await ask(ws, msg)
            assert reply["type"] == "error" and reply["message"]
            codes.append(reply["code"])
        assert await ask(ws, {"type": "ping"}) == {"type": "pong"}
        await ws.close()
        # Beyond the hard frame limit the websocket is closed with 1009 (message too big).
        ws = await raw(server.url)
        await ws.send("x" * (20 * 2**20))
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd.code == 1009
        return codes

    codes = asyncio.run(main())
    assert codes == ["bad_json", "bad_message", "unknown_type", "no_session", "no_session", "no_session",
                     "too_large", "bad_sdp", "bad_image", "image_too_large", "bad_option", "bad_option",
                     "bad_preset", "bad_sdp", "too_large", "bad_json"]
    assert wait_until(lambda: idle(server))
    assert json.loads(urllib.request.urlopen(server.http + "/healthz").read())["status"] == "ok"


def test_image_without_a_face_is_refused(server, client_mod, speech_wav):
    import cv2
    blank = np.full((256, 256, 3), 200, np.uint8)
    png = base64.b64encode(cv2.imencode(".png", blank)[1].tobytes()).decode()

    async def main():
        c = client_mod.AvatarClient(server.url, client_mod.FileAudioTrack(np.zeros(1600, np.float32)), avatar=png)
        with pytest.raises(RuntimeError, match="bad_input.*face"):
            await c.connect()
        await c.close()

    asyncio.run(main())
    assert wait_until(lambda: idle(server))


def test_busy_beyond_max_sessions(server, client_mod, speech_wav):
    speech = load_audio(speech_wav)

    async def main():
        a = await session(client_mod, server.url, speech)
        b = await session(client_mod, server.url, speech)
        c = client_mod.AvatarClient(server.url, client_mod.FileAudioTrack(speech))
        with pytest.raises(RuntimeError, match="busy"):
            await c.connect()
        await c.close()
        await a.close()
        assert wait_until(lambda: server.call(lambda: server.server.active) == 1)
        d = await session(client_mod, server.url, speech[:8000])   # a slot is free again
        await d.close()
        await b.close()

    asyncio.run(main())
    assert wait_until(lambda: idle(server))
    metrics = urllib.request.urlopen(server.http + "/metrics").read().decode()
    assert "float_rt_sessions_rejected_busy_total 1" in metrics
    assert 'float_rt_errors_total{code="busy"} 1' in metrics


def test_pcm_input_set_and_interrupt(server, client_mod, speech_wav):
    speech = load_audio(speech_wav)
    frames = []

    async def main():
        c = client_mod.AvatarClient(server.url, None, audio_input="pcm", pcm_rate=16000, stamp=True,
                                    on_video=lambda f, t: frames.append(f.to_ndarray(format="rgb24")))
        await c.connect()
        pcm = (speech * 32767).astype(np.int16)
        await c.send_pcm(pcm)                      # a whole TTS reply at once: queued, not dropped
        await c.ws.send(b"\x01\x02\x03")
        await c.send({"type": "set", "emotion": "sad", "e_cfg_scale": 2.0})
        last = len(speech) // 640 - 1
        await eventually(lambda: frames and read_stamp(frames[-1]) >= last)    # the reply has been shown
        await c.send({"type": "interrupt"})
        await eventually(lambda: any(m.get("for") == "interrupt" for m in c.messages))
        await eventually(lambda: any(m["type"] == "stats" and m["emotion"]["sad"] == 1.0 for m in c.messages))
        await c.close()
        return c

    c = asyncio.run(main())
    codes = [m.get("code") for m in c.errors]
    assert codes == ["bad_pcm"]
    oks = [m["for"] for m in c.messages if m["type"] == "ok"]
    assert oks == ["set", "interrupt"]
    stats = [m for m in c.messages if m["type"] == "stats"]
    assert stats[-1]["emotion"]["sad"] == 1.0
    idx = [read_stamp(f) for f in frames]
    assert idx == sorted(idx)                                  # in order (repeats allowed, never back)
    assert wait_until(lambda: idle(server))


def test_token_and_origin_checks(small_ckpt):
    srv = make_server(small_ckpt, token="s3cret", allowed_origins=["http://good.example"])
    try:
        async def main():
            for url in (srv.url, srv.url + "?token=wrong"):
                with pytest.raises(InvalidStatus) as info:
                    await raw(url)
                assert info.value.response.status_code == 401
            with pytest.raises(InvalidStatus) as info:
                await raw(srv.url + "?token=s3cret", origin="http://evil.example")
            assert info.value.response.status_code == 403
            ws = await raw(srv.url + "?token=s3cret", origin="http://good.example")
            await ws.close()
            ws = await raw(srv.url, additional_headers={"Authorization": "Bearer s3cret"})
            await ws.close()

        asyncio.run(main())
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(srv.http + "/metrics")
        assert info.value.code == 401
        assert urllib.request.urlopen(srv.http + "/metrics?token=s3cret").status == 200
    finally:
        srv.stop()


def test_http_routes(server):
    page = urllib.request.urlopen(server.http + "/").read().decode()
    assert "<video" in page and "app.js" in page
    assert urllib.request.urlopen(server.http + "/app.js").headers["Content-Type"].endswith("javascript")
    assert urllib.request.urlopen(server.http + "/avatars/astronaut.jpg").read()[:2] == b"\xff\xd8"
    for bad in ("/../pyproject.toml", "/%2e%2e/pyproject.toml", "/mic_client.py", "/nothing"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server.http + bad)
        assert info.value.code == 404
    health = json.loads(urllib.request.urlopen(server.http + "/healthz").read())
    assert health["demo_weights"] is True and health["max_sessions"] == 2
    text = urllib.request.urlopen(server.http + "/metrics").read().decode()
    assert "# TYPE float_rt_sessions_active gauge" in text


def test_connect_timeout_frees_the_session(small_ckpt):
    from aiortc import RTCConfiguration, RTCPeerConnection
    srv = make_server(small_ckpt, connect_timeout_s=1.0)
    try:
        async def main():
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            ws = await raw(srv.url)
            answer = await ask(ws, {"type": "offer", "sdp": pc.localDescription.sdp, "preset": "astronaut"})
            assert answer["type"] == "answer"
            assert srv.call(lambda: srv.server.active) == 1
            # The answer is never applied, so ICE never connects: the server gives up and cleans up.
            msgs = []
            while True:
                try:
                    msgs.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
                except ConnectionClosed:
                    break
            await pc.close()
            return msgs

        msgs = asyncio.run(main())
        assert any(m["type"] == "error" and m["code"] == "timeout" for m in msgs)
        assert wait_until(lambda: idle(srv))
    finally:
        srv.stop()
