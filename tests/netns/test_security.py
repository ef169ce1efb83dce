"""Serving beyond localhost: origin policy, no open server without a token, TLS, per-address limits.

Everything stays on the loopback range of this namespace: a non-loopback bind is 0.0.0.0 reached
over 127.0.0.1, and a second client address is 127.0.0.2.
"""
import asyncio
import base64
import datetime
import hashlib
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import urllib.request

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from float_rt.errors import FloatRTError
from float_rt.media import load_audio
from helpers import HANG_S, ROOT, SMALL, make_server
from test_browser import CDP, devtools_page, frames_decoded, launch, require_chromium


async def hello(url, **kw):
    ws = await websockets.connect(url, max_size=None, compression=None, **kw)
    msg = json.loads(await asyncio.wait_for(ws.recv(), HANG_S))
    assert msg["type"] == "hello"
    return ws


async def refused(url, **kw):
    with pytest.raises(InvalidStatus) as info:
        await hello(url, **kw)
    r = info.value.response
    return r.status_code, r.body.decode()


async def offer(ws):
    """An SDP offer on this websocket; the reply (answer or error)."""
    from aiortc import RTCConfiguration, RTCPeerConnection
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp, "preset": "astronaut"}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), HANG_S))
    await pc.close()
    return reply


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_origin_policy_same_origin_by_default(small_ckpt):
    srv = make_server(small_ckpt)
    try:
        own = f"http://127.0.0.1:{srv.port}"

        async def main():
            status, body = await refused(srv.url, origin="http://evil.example")
            assert status == 403 and "http://evil.example may not use this server" in body
            status, _ = await refused(srv.url, origin=f"http://localhost:{srv.port}")   # another origin
            assert status == 403
            status, _ = await refused(srv.url, origin=f"https://127.0.0.1:{srv.port}")  # another scheme
            assert status == 403
            for kw in ({"origin": own}, {}):                                            # own page, native client
                ws = await hello(srv.url, **kw)
                await ws.close()

        asyncio.run(main())
        metrics = urllib.request.urlopen(srv.http + "/metrics").read().decode()
        assert 'float_rt_handshakes_refused_total{reason="origin"} 3' in metrics
    finally:
        srv.stop()


def test_allowed_origins_and_star_with_its_warning(small_ckpt, caplog):
    srv = make_server(small_ckpt, allowed_origins=["https://kiosk.example.com"])
    try:
        async def main():
            ws = await hello(srv.url, origin="https://kiosk.example.com")
            await ws.close()
            assert (await refused(srv.url, origin="https://other.example.com"))[0] == 403

        asyncio.run(main())
    finally:
        srv.stop()
    with caplog.at_level(logging.WARNING, logger="server.app"):
        star = make_server(small_ckpt, allowed_origins=["*"])
    try:
        assert any("ANY web page" in r.getMessage() for r in caplog.records)

        async def any_origin():
            ws = await hello(star.url, origin="http://evil.example")
            await ws.close()

        asyncio.run(any_origin())
    finally:
        star.stop()


def test_no_open_server_beyond_loopback(small_ckpt, tmp_path):
    with pytest.raises(FloatRTError, match="without a token") as info:
        make_server(small_ckpt, host="0.0.0.0")
    assert "--token-file" in str(info.value) and "FLOAT_RT_TOKEN" in str(info.value)
    # The command line says so at once, before it loads a model.
    port = free_port()
    r = subprocess.run([sys.executable, "-m", "server.cli", "serve", "--host", "0.0.0.0", "--port", str(port),
                        "--checkpoints", str(small_ckpt), "--config", str(SMALL)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "FLOAT_RT_TOKEN"})
    assert r.returncode == 2 and "refusing to serve 0.0.0.0 without a token" in r.stderr
    # With a token from a file it starts; reached over 127.0.0.1 a wrong token gets 401.
    token = tmp_path / "token"
    token.write_text("s3cret-from-file\n")
    srv = make_server(small_ckpt, host="0.0.0.0", token_file=str(token))
    try:
        url = f"ws://127.0.0.1:{srv.port}/ws"

        async def main():
            assert (await refused(url))[0] == 401
            assert (await refused(url + "?token=wrong"))[0] == 401
            ws = await hello(url + "?token=s3cret-from-file")
            await ws.close()

        asyncio.run(main())
    finally:
        srv.stop()


def make_certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1 and localhost; its SPKI hash for Chromium."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "float-rt test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return certfile, keyfile, base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_tls_python_client_and_chromium(small_ckpt, client_mod, speech_wav, tmp_path):
    certfile, keyfile, spki = make_certificate(tmp_path)
    srv = make_server(small_ckpt, certfile=str(certfile), keyfile=str(keyfile))
    try:
        base = f"https://127.0.0.1:{srv.port}"
        trust = ssl.create_default_context(cafile=str(certfile))
        page = urllib.request.urlopen(base + "/", context=trust).read().decode()
        assert "app.js" in page
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(base + "/healthz", timeout=5)       # not trusted without the certificate
        frames = []

        async def python_client():
            got = asyncio.Event()

            def on_video(frame, t):
                frames.append(frame)
                if len(frames) >= 25:
                    got.set()

            c = client_mod.AvatarClient(f"wss://127.0.0.1:{srv.port}/ws",
                                        client_mod.FileAudioTrack(load_audio(speech_wav)[:16000]),
                                        on_video=on_video, ws_options={"ssl": trust})
            await c.connect()
            await asyncio.wait_for(got.wait(), HANG_S)
            await c.close()

        asyncio.run(python_client())
        assert len(frames) >= 25
        # Chromium, told to trust the test certificate: a secure context, so the microphone is granted.
        require_chromium()
        proc = launch(base + "/?autostart=1", speech_wav, tmp_path / "profile",
                      f"--ignore-certificate-errors-spki-list={spki}")
        try:
            async def browser():
                async with websockets.connect(devtools_page(tmp_path / "profile"), max_size=None) as ws:
                    cdp = CDP(ws)
                    seen = await frames_decoded(cdp)
                    secure = await cdp.js("window.isSecureContext && location.protocol")
                    mic = await cdp.js("navigator.mediaDevices.getUserMedia({audio: true})"
                                       ".then(s => s.getAudioTracks().length).catch(e => String(e))")
                    return seen, secure, mic

            seen, secure, mic = asyncio.run(browser())
        finally:
            proc.terminate()
            proc.wait(10)
        assert secure == "https:" and mic == 1
        assert seen and seen[-1] > 25 and seen[-1] > seen[-3], f"video did not play over https: {seen}"
    finally:
        srv.stop()


def test_per_address_limits(small_ckpt):
    srv = make_server(small_ckpt, max_connections_per_ip=2, max_sessions_per_ip=1, max_sessions=4)
    try:
        second = {"local_addr": ("127.0.0.2", 0)}

        async def main():
            a, b = await hello(srv.url), await hello(srv.url)
            status, body = await refused(srv.url)                          # the 3rd connection of 127.0.0.1
            assert status == 429 and "max_connections_per_ip" in body
            c = await hello(srv.url, **second)                             # another address still gets in
            assert (await offer(a))["type"] == "answer"
            busy = await offer(b)                                          # a 2nd session of 127.0.0.1
            assert busy["type"] == "error" and busy["code"] == "busy" and "max_sessions_per_ip" in busy["message"]
            assert (await offer(c))["type"] == "answer"                    # ... 127.0.0.2 gets one
            for ws in (a, b, c):
                await ws.close()

        asyncio.run(main())
        metrics = urllib.request.urlopen(srv.http + "/metrics").read().decode()
        assert 'float_rt_handshakes_refused_total{reason="connections_per_ip"} 1' in metrics
    finally:
        srv.stop()


def test_handshake_rate_and_idle_websockets(small_ckpt):
    srv = make_server(small_ckpt, handshakes_per_minute=3, session_wait_s=1.0)
    try:
        async def main():
            ws = await hello(srv.url)
            # Holding no session, it is closed after session_wait_s, with a reason.
            msg = json.loads(await asyncio.wait_for(ws.recv(), HANG_S))
            assert msg["type"] == "error" and msg["code"] == "timeout"
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), HANG_S)
            for _ in range(2):
                (await hello(srv.url)).transport.abort()
            status, body = await refused(srv.url)                         # the 4th within a minute
            assert status == 429 and "handshakes_per_minute" in body
            ws = await hello(srv.url, local_addr=("127.0.0.2", 0))       # counted per address
            await ws.close()

        asyncio.run(main())
        metrics = urllib.request.urlopen(srv.http + "/metrics").read().decode()
        assert 'float_rt_handshakes_refused_total{reason="rate"} 1' in metrics
        assert "float_rt_idle_websockets_closed_total 1" in metrics
    finally:
        srv.stop()


def test_trusted_proxy_names_the_client_and_its_origin(small_ckpt):
    srv = make_server(small_ckpt, trusted_proxies=["127.0.0.1"], max_connections_per_ip=1)
    try:
        proxied = {"origin": "https://avatar.example.com", "additional_headers": {
            "X-Forwarded-Host": "avatar.example.com", "X-Forwarded-Proto": "https"}}

        async def main():
            def via(client):
                h = {**proxied["additional_headers"], "X-Forwarded-For": client}
                return {"origin": proxied["origin"], "additional_headers": h}
            a = await hello(srv.url, **via("203.0.113.7"))               # the page's origin, as the proxy saw it
            status, body = await refused(srv.url, **via("203.0.113.7"))
            assert status == 429 and "203.0.113.7" in body                # counted for the real client
            b = await hello(srv.url, **via("198.51.100.2"))
            await a.close()
            await b.close()
            # Not through the trusted proxy: the forwarded headers are not believed.
            assert (await refused(srv.url, local_addr=("127.0.0.2", 0), **via("203.0.113.9")))[0] == 403

        asyncio.run(main())
    finally:
        srv.stop()
