#!/usr/bin/env python
"""What a hostile client costs the others: a message flood and an image bomb against `float-rt serve`.

    python scripts/bench_abuse.py [--checkpoints DIR --config CFG] [--json OUT]

Runs inside a private network namespace with only `lo` (it re-runs itself under `unshare --net`).
A victim streams speech in and video out the whole time; meanwhile
  flood  another client sends 2-byte PCM messages as fast as it can (bounded: 20 s or 50,000
         messages) until the server closes it; and a third sends `ping`s the same way;
  bomb   a client offers a 12000 x 12000 PNG (about 150 KB) as its avatar.
Printed: the victim's fps before, during and after each, /healthz latency while it happens,
the server's memory (RSS) before and at its peak, and how the attacker was answered.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import struct
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_common import checkpoints_or_recipe, isolate  # noqa: E402


def png_bomb(side: int) -> bytes:
    """A valid greyscale PNG of side x side zeros: a few hundred KB that decode to side^2 bytes or more."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z, row, idat = zlib.compressobj(9), b"\0" * (side + 1), []
    for _ in range(side):
        idat.append(z.compress(row))
    idat.append(z.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b""))


class Watch:
    """/healthz latency and the process's memory, sampled in a thread while an attack runs."""

    def __init__(self, base_url: str):
        import psutil
        self.url, self.proc = base_url + "/healthz", psutil.Process()
        self.latency: list[float] = []
        self.rss: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                urllib.request.urlopen(self.url, timeout=30).read()
                self.latency.append(time.monotonic() - t)
            except OSError:
                self.latency.append(float("inf"))
            self.rss.append(self.proc.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


async def run(url: str, base: str, client_mod, speech: np.ndarray) -> dict:
    frames: list[float] = []
    victim = client_mod.AvatarClient(url, client_mod.FileAudioTrack(speech, tail_silence=120.0),
                                     on_video=lambda f, t: frames.append(t))
    await victim.connect()
    while len(frames) < 50:
        await asyncio.sleep(0.05)

    def fps(a: float, b: float) -> float:
        return sum(a <= t < b for t in frames) / max(b - a, 1e-9)

    out = {}
    for kind, message in (("pcm_flood", b"\0\0"), ("ping_flood", json.dumps({"type": "ping"}))):
        t0 = time.monotonic()
        await asyncio.sleep(3.0)
        attacker = client_mod.AvatarClient(url, None, audio_input="pcm", pcm_rate=16000)
        await attacker.connect()
        sent, start = 0, time.monotonic()
        with Watch(base) as w:
            try:
                while sent < 50_000 and time.monotonic() - start < 20:
                    await attacker.ws.send(message)
                    sent += 1
                    if sent % 200 == 0:
                        await asyncio.sleep(0)
            except Exception:  # noqa: BLE001 - the server closed it
                pass
            end = time.monotonic()
            await asyncio.sleep(3.0)
        after = time.monotonic()
        codes = [m.get("code") for m in attacker.errors]
        await attacker.close(bye=False)
        out[kind] = {"messages_sent": sent, "closed_after_s": round(end - start, 2),
                     "errors": codes, "victim_fps_before": round(fps(t0, start), 1),
                     "victim_fps_during": round(fps(start, end), 1), "victim_fps_after": round(fps(end, after), 1),
                     "healthz_ms_p50": round(float(np.median(w.latency)) * 1e3, 1),
                     "healthz_ms_max": round(max(w.latency) * 1e3, 1),
                     "rss_mb_before": round(w.rss[0] / 1e6), "rss_mb_peak": round(max(w.rss) / 1e6)}

    bomb = png_bomb(12000)
    import websockets
    with Watch(base) as w:
        start = time.monotonic()
        ws = await websockets.connect(url, max_size=None, compression=None)
        await ws.recv()
        await ws.send(json.dumps({"type": "offer", "sdp": "v=0\r\n", "avatar": base64.b64encode(bomb).decode()}))
        reply = json.loads(await ws.recv())
        answered = time.monotonic() - start
        await ws.close()
        await asyncio.sleep(2.0)
    out["png_bomb"] = {"bytes": len(bomb), "pixels": "12000x12000", "answer": reply.get("code"),
                       "answered_ms": round(answered * 1e3, 1), "victim_fps_during": round(fps(start, start + 2), 1),
                       "healthz_ms_max": round(max(w.latency) * 1e3, 1),
                       "rss_mb_before": round(w.rss[0] / 1e6), "rss_mb_peak": round(max(w.rss) / 1e6)}
    await victim.close()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", default=None, help="default: recipe weights of --config")
    p.add_argument("--config", default="small")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    code = isolate()
    if code is not None:
        return code
    import importlib.util

    from float_rt.media import load_audio
    from server.config import ServerConfig
    from server.ice import use_host_addresses
    from server.thread import ServerThread
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("mic_client", root / "client_demo" / "mic_client.py")
    client_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client_mod)
    use_host_addresses(["127.0.0.1"])
    import subprocess
    import tempfile
    wav = Path(tempfile.mkdtemp()) / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Hello there. I keep talking while someone floods the server."],
                   check=True)
    speech = load_audio(wav)
    cfg = ServerConfig(port=0, config=a.config, checkpoints=str(checkpoints_or_recipe(a.checkpoints, a.config)),
                       ice_hosts=["127.0.0.1"])
    srv = ServerThread(cfg).start()
    try:
        res = asyncio.run(run(srv.url, srv.http, client_mod, speech))
    finally:
        srv.stop()
    for name, row in res.items():
        print(f"{name:11s} " + ", ".join(f"{k} {v}" for k, v in row.items()))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
