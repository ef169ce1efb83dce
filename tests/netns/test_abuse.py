"""One client cannot take the server down: floods, costly options, image bombs, DNS rebinding,
malformed paths, token guessing, idle sessions, and frames counted to the last one.

Bounded in count and time, loopback only.  What must hold is asserted; how fast the victim
runs while it happens is a figure (printed here, measured by scripts/bench_abuse.py).
"""
import asyncio
import base64
import http.client
import json
import logging
import sys
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import psutil
import websockets
from websockets.exceptions import ConnectionClosed

from float_rt.media import load_audio
from helpers import HANG_S, ROOT, eventually, make_server

sys.path.insert(0, str(ROOT / "scripts"))
from bench_abuse import png_bomb  # noqa: E402  (the benchmark's bomb: one recipe for test and figure)


def get(srv, path, headers=None, timeout=HANG_S):
    req = urllib.request.Request(srv.http + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(srv, name, token=None):
    status, text = get(srv, "/metrics" + (f"?token={token}" if token else ""))
    assert status == 200, text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


async def pcm_client(client_mod, srv):
    """A client with a session whose speech comes as PCM messages (a voice agent's TTS), connected."""
    c = client_mod.AvatarClient(srv.url, None, audio_input="pcm", pcm_rate=16000)
    await c.connect()
    return c


async def hello(url):
    ws = await websockets.connect(url, max_size=None, compression=None)
    assert json.loads(await asyncio.wait_for(ws.recv(), HANG_S))["type"] == "hello"
    return ws


def test_a_flood_is_refused_and_closed_while_others_go_on(small_ckpt, client_mod, speech_wav):
    srv = make_server(small_ckpt, max_sessions=3)
    speech = load_audio(speech_wav)
    frames = []
    health = []
    stop = threading.Event()

    def poll_health():            # another user of the server, all along
        while not stop.is_set():
            t = time.monotonic()
            status, _ = get(srv, "/healthz")
            health.append((status, time.monotonic() - t))
            time.sleep(0.1)

    async def main():
        victim = client_mod.AvatarClient(srv.url, client_mod.FileAudioTrack(speech, tail_silence=30.0),
                                         on_video=lambda f, t: frames.append(t))
        await victim.connect()
        await eventually(lambda: len(frames) > 10)
        attacker = await pcm_client(client_mod, srv)
        poller = threading.Thread(target=poll_health, daemon=True)
        poller.start()
        before, sent, t0 = len(frames), 0, time.monotonic()
        try:
            while sent < 50_000 and time.monotonic() - t0 < 20:     # 2-byte PCM, as fast as it goes
                await attacker.ws.send(b"\0\0")
                sent += 1
                if sent % 500 == 0:
                    await asyncio.sleep(0)
        except ConnectionClosed:
            pass
        flood_s = time.monotonic() - t0
        during = len(frames) - before
        await eventually(lambda: attacker.ws.state.name == "CLOSED")
        after = len(frames)
        await eventually(lambda: len(frames) > after + 10)             # the victim goes on
        stop.set()
        poller.join(HANG_S)
        await attacker.close(bye=False)
        codes = [m.get("code") for m in attacker.errors]
        await victim.close()
        return sent, flood_s, during, codes

    try:
        sent, flood_s, during, codes = asyncio.run(main())
        print(f"\nflood: {sent} messages in {flood_s:.2f} s before the server closed the connection; "
              f"victim {during} frames meanwhile; /healthz max {max(t for _, t in health) * 1e3:.0f} ms "
              f"over {len(health)} polls")
        assert codes.count("rate_limited") == 1                        # told once, then closed
        assert sent < 50_000                                          # closed before the flood ended
        assert health and all(status == 200 for status, _ in health)   # /healthz answered throughout
        assert metric(srv, "float_rt_rate_limited_closed_total") == 1
        assert wait_idle(srv)
    finally:
        srv.stop()


def wait_idle(srv, timeout=HANG_S):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if srv.call(lambda: srv.server.active == 0 and not srv.server.engine.sessions):
            return True
        time.sleep(0.05)
    return False


def test_session_cost_is_capped_by_the_server(server):
    async def main():
        out = []
        for options in ({"nfe": 50}, {"chunk_frames": 1}, {"nfe": 11, "chunk_frames": 5}):
            ws = await hello(server.url)
            await ws.send(json.dumps({"type": "offer", "sdp": "v=0\r\n", "preset": "astronaut", **options}))
            out.append(json.loads(await asyncio.wait_for(ws.recv(), HANG_S)))
            await ws.close()
        return out

    replies = asyncio.run(main())
    assert [r["code"] for r in replies] == ["over_limit"] * 3
    assert "nfe 50" in replies[0]["message"] and "2..10" in replies[0]["message"] and "nfe_range" in replies[0]["message"]
    assert "chunk_frames 1" in replies[1]["message"] and "3..25" in replies[1]["message"]
    assert server.call(lambda: server.server.active) == 0           # no slot was taken


def test_image_bombs_and_other_formats_are_refused_from_the_header(server):
    bomb = png_bomb(12000)                                          # 144 MP of zeros, ~150 KB
    assert len(bomb) < 1_000_000
    tiff = cv2.imencode(".tiff", np.zeros((64, 64, 3), np.uint8))[1].tobytes()
    proc = psutil.Process()

    async def main():
        replies, peak = [], 0
        for data in (bomb, tiff, b"not an image at all"):
            ws = await hello(server.url)
            await ws.send(json.dumps({"type": "offer", "sdp": "v=0\r\n",
                                      "avatar": base64.b64encode(data).decode()}))
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), HANG_S)))
            peak = max(peak, proc.memory_info().rss)
            await ws.close()
        return replies, peak

    base = proc.memory_info().rss
    replies, peak = asyncio.run(main())
    print(f"\nPNG bomb (12000x12000, {len(bomb) / 1e3:.0f} KB): refused, memory {base / 1e6:.0f} -> "
          f"{peak / 1e6:.0f} MB")
    assert [r["code"] for r in replies] == ["image_too_large", "bad_image", "bad_image"]
    assert "12000x12000" in replies[0]["message"] and "max_image_pixels" in replies[0]["message"]
    assert "TIFF" in replies[1]["message"]
    assert peak - base < 200e6                 # decoding it would take 144 MB grey, 432 MB as RGB
    assert server.call(lambda: server.server.active) == 0


def upgrade(srv, host, origin=None):
    """The status of a websocket upgrade of /ws sent with this Host (and Origin)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=HANG_S)
    headers = {"Host": host, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode()}
    if origin:
        headers["Origin"] = origin
    conn.request("GET", "/ws", headers=headers)
    status = conn.getresponse().status
    conn.close()
    return status


def test_dns_rebinding_host_names_are_refused(server, small_ckpt):
    assert upgrade(server, "evil.example", "http://evil.example") == 403
    assert upgrade(server, f"evil.example:{server.port}", f"http://evil.example:{server.port}") == 403
    assert get(server, "/healthz", {"Host": "evil.example"})[0] == 403
    for name in ("127.0.0.1", "localhost", "[::1]"):
        assert upgrade(server, f"{name}:{server.port}", f"http://{name}:{server.port}") == 101, name
    listed = make_server(small_ckpt, allowed_hosts=["kiosk.example"])
    try:
        assert upgrade(listed, f"kiosk.example:{listed.port}", f"http://kiosk.example:{listed.port}") == 101
        assert upgrade(listed, "evil.example") == 403
    finally:
        listed.stop()


def test_a_nul_byte_in_a_path_is_a_400_without_a_traceback(server, caplog):
    import socket
    caplog.set_level(logging.INFO)
    before = metric(server, "float_rt_bad_requests_total")
    statuses = []
    for _ in range(200):
        with socket.create_connection(("127.0.0.1", server.port), timeout=HANG_S) as s:
            s.sendall(b"GET /x\x00y HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            statuses.append(s.recv(64).split(b" ")[1])
    assert set(statuses) <= {b"400", b"404"}
    assert metric(server, "float_rt_bad_requests_total") - before == statuses.count(b"400")
    assert not [r for r in caplog.records if r.exc_info]                        # no traceback
    assert len([r for r in caplog.records if "malformed" in r.getMessage()]) <= 1   # one summary at most


def test_metrics_token_guessing_is_limited_and_healthz_says_little_to_strangers(small_ckpt):
    srv = make_server(small_ckpt, host="0.0.0.0", token="s3cret", handshakes_per_minute=5)
    srv.host = "127.0.0.1"
    try:
        codes = [get(srv, f"/metrics?token=guess{i}")[0] for i in range(8)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3
        text = get(srv, "/metrics?token=s3cret")[1]
        assert 'float_rt_handshakes_refused_total{reason="token"} 5' in text
        assert 'float_rt_handshakes_refused_total{reason="rate"} 3' in text
        stranger = json.loads(get(srv, "/healthz")[1])
        assert stranger == {"status": "ok", "sessions": 0, "max_sessions": 4}
        insider = json.loads(get(srv, "/healthz", {"Authorization": "Bearer s3cret"})[1])
        assert insider["model"] == "small" and "demo_weights" in insider
    finally:
        srv.stop()


def test_an_idle_session_is_closed_with_a_reason(small_ckpt, client_mod):
    srv = make_server(small_ckpt, idle_timeout_s=1.5)
    try:
        async def main():
            c = await pcm_client(client_mod, srv)                   # then says and sends nothing
            await eventually(lambda: c.ws.state.name == "CLOSED")
            return c

        c = asyncio.run(main())
        timeouts = [m for m in c.errors if m.get("code") == "timeout"]
        assert timeouts and "idle_timeout_s" in timeouts[0]["message"]
        assert wait_idle(srv)
    finally:
        srv.stop()


def test_every_frame_sent_is_counted_and_the_session_logged(small_ckpt, client_mod, speech_wav, caplog):
    caplog.set_level(logging.INFO, logger="float_rt.sessions")
    srv = make_server(small_ckpt)
    speech = load_audio(speech_wav)[:16000]
    received = []
    try:
        async def main():
            c = client_mod.AvatarClient(srv.url, client_mod.FileAudioTrack(speech, tail_silence=0.3),
                                        on_video=lambda f, t: received.append(t))
            await c.connect()
            await eventually(lambda: len(received) > 37)     # ends mid-second: a partial second to count
            await c.close()

        asyncio.run(main())
        assert wait_idle(srv)
        sent = metric(srv, "float_rt_frames_sent_total")
        assert sent >= len(received) > 37       # the last, partial second of frames is counted too
        lines = [r.getMessage() for r in caplog.records if r.name == "float_rt.sessions"]
        assert len(lines) == 2 and " started: 127.0.0.1, preset " in lines[0], lines
        assert " ended after " in lines[1] and f"{int(sent)} frames sent" in lines[1], lines
    finally:
        srv.stop()


def test_speech_queued_ahead_is_capped(small_ckpt, client_mod):
    srv = make_server(small_ckpt, max_queued_audio_s=1.0)
    try:
        async def main():
            c = await pcm_client(client_mod, srv)
            await c.send_pcm(np.zeros(3 * 16000, np.int16))       # a 3 s reply at once: queued
            await c.send_pcm(np.zeros(16000, np.int16))           # more while 3 s wait: over the cap
            await eventually(lambda: c.errors)
            await c.close()
            return c

        c = asyncio.run(main())
        assert [e["code"] for e in c.errors] == ["rate_limited"]
        assert "max_queued_audio_s" in c.errors[0]["message"]
    finally:
        srv.stop()
