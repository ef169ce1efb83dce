#!/usr/bin/env python
"""WebRTC server benchmarks: N concurrent Python clients against one server.

    python scripts/bench_server.py --clients 1,2,3 [--checkpoints DIR --config CFG] [--audio speech.wav]
    python scripts/bench_server.py --model-free --clients 1,2,4,6 [--seconds 10] [--video-codec vp8]

Runs itself inside a private network namespace (`unshare --net`, only `lo`), so all traffic
stays on 127.0.0.1.

Default mode (the model runs): per N, frames/s received, latency (audio sent -> frame received,
from the server's frame stamps), lip-sync offset, and the server's duplicated/dropped frames.

``--model-free``: the server runs in a process of its own on ``cache_engine`` (scripts/frame_cache.py:
512x512 frames from a cache, no model), so its CPU is the transport's alone: VP8/H.264 encode,
Opus, SRTP, pacing and Python.  Per N it prints the server process's CPU (cores), CPU per session,
the clients' frame rate, and whether N sessions were sustained (every client >= 24 fps, <= 5 %
duplicated frames).  The clients (decoding, in this process) are measured apart.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_common import checkpoints_or_recipe, isolate  # noqa: E402


def client_module():
    spec = importlib.util.spec_from_file_location("mic_client", ROOT / "client_demo" / "mic_client.py")
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    return client


def one_address(n: int) -> dict:
    """Per-address limits for n clients that all come from 127.0.0.1."""
    return dict(max_sessions_per_ip=n, max_connections_per_ip=n, handshakes_per_minute=10_000)


def espeak(text: str, path: Path) -> Path:
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    return path


# ---------------------------------------------------------------------------------------- model
def bench_model(a) -> list[dict]:
    from float_rt.media import load_audio
    from server.config import ServerConfig
    from server.thread import ServerThread

    tmp = Path(tempfile.mkdtemp())
    ckpt = str(checkpoints_or_recipe(a.checkpoints, a.config))
    audio = a.audio or espeak("Hello there. I am a talking avatar, and this is a benchmark of the real time "
                              "server with several clients at once.", tmp / "speech.wav")
    speech = load_audio(audio)
    client = client_module()
    counts = [int(x) for x in a.clients.split(",")]
    srv = ServerThread(ServerConfig(port=0, config=a.config, checkpoints=ckpt, ice_hosts=["127.0.0.1"],
                                    max_sessions=max(counts), **one_address(max(counts)))).start()
    results = []
    try:
        print(f"{len(speech) / 16000:.1f} s of speech per client; config {a.config}")
        print("  N  fps(min)  latency p50  latency p95  lip-sync p50  |lip-sync| p95  dup%  dropped  real time")
        for n in counts:
            async def run(n=n):
                return await asyncio.gather(*(client.measure(srv.url, speech, emotion="neutral") for _ in range(n)))
            rs = asyncio.run(run())
            lat = np.concatenate([r["latency_ms"] for r in rs])
            sync = np.concatenate([r["lipsync_ms"] for r in rs])
            fps = min(r["fps"] for r in rs)
            last = [r["stats"][-1] for r in rs if r["stats"]]
            frames = sum(s["frames"] for s in last) or 1
            dup = 100 * sum(s["duplicated"] for s in last) / frames
            dropped = sum(s["dropped"] for s in last)
            ok = fps >= 24 and dup <= 5 and not any(r["errors"] for r in rs)
            row = dict(clients=n, fps_min=fps, latency_p50_ms=float(np.median(lat)),
                       latency_p95_ms=float(np.percentile(lat, 95)), lipsync_p50_ms=float(np.median(sync)),
                       lipsync_abs_p95_ms=float(np.percentile(np.abs(sync), 95)), duplicated_pct=dup,
                       dropped=dropped, realtime=ok)
            results.append(row)
            # The lip-sync probe finds frame j's sound at j * 40 ms into the returned audio, which only
            # holds while no frame was repeated (silence) or skipped.
            clean = dup == 0 and dropped == 0
            sync_txt = (f"{row['lipsync_p50_ms']:+10.0f} ms  {row['lipsync_abs_p95_ms']:12.0f} ms" if clean
                        else f"{'n/a':>13s}  {'(dup/drop)':>15s}")
            print(f"  {n}  {fps:8.1f}  {row['latency_p50_ms']:9.0f} ms  {row['latency_p95_ms']:9.0f} ms"
                  f"  {sync_txt}  {dup:4.1f}  {dropped:7d}  {'yes' if ok else 'no'}")
    finally:
        srv.stop()
    best = max([r["clients"] for r in results if r["realtime"]], default=0)
    print(f"sessions served in real time: {best}")
    return results


# ----------------------------------------------------------------------------------- model-free
def serve_cache(a) -> int:
    """The server process of --model-free: real AvatarServers on cache_engine (``--workers``: several)."""
    import signal

    from frame_cache import cache_server
    from server.config import ServerConfig
    from server.workers import Supervisor
    cfg = ServerConfig(port=a.port, ice_hosts=["127.0.0.1"], max_sessions=a.max_sessions, workers=a.workers,
                       video_codec=a.video_codec, video_size=512, **one_address(a.max_sessions))
    if a.workers > 1:
        sup = Supervisor(cfg, a.workers, make_server=cache_server)
        signal.signal(signal.SIGTERM, lambda *_: sup.stopping.set())
        print(sup.start(), flush=True)
        try:
            sup.watch()
        finally:
            sup.stop()
        return 0
    server = cache_server(cfg)

    async def main():
        ready = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(server.serve(ready))
        print(await ready, flush=True)
        await task

    asyncio.run(main())
    return 0


def thread_time(proc, tid: int) -> float:
    """CPU seconds of one thread of ``proc`` (the main thread's id is the pid): the event loop's share,
    which the GIL bounds to one core whatever the machine, where encoders run in other threads."""
    return next((t.user_time + t.system_time for t in proc.threads() if t.id == tid), 0.0)


def bench_model_free(a) -> list[dict]:
    import psutil
    from float_rt.media import load_audio
    from server.ice import use_host_addresses
    use_host_addresses(["127.0.0.1"])        # the clients' side: only `lo` here, and aioice skips it
    counts = [int(x) for x in a.clients.split(",")]
    tmp = Path(tempfile.mkdtemp())
    speech = load_audio(espeak("Hello there. I am a talking avatar. " * 6, tmp / "speech.wav"))
    pcm = (np.clip(speech, -1, 1) * 32767).astype(np.int16)
    server = subprocess.Popen([sys.executable, __file__, "--serve-cache", "--port", "0", "--max-sessions",
                               str(max(max(counts), a.workers)), "--video-codec", a.video_codec,
                               "--workers", str(a.workers)], stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    url = f"ws://127.0.0.1:{port}/ws"
    me = psutil.Process()
    top = psutil.Process(server.pid)
    # The processes that serve: the server itself, or its workers (the supervisor only watches).
    procs = [p for p in top.children(recursive=True) if "spawn_main" in " ".join(p.cmdline())] or [top]
    if a.workers > 1 and len(procs) != a.workers:
        raise SystemExit(f"expected {a.workers} worker processes, found {len(procs)}")
    client = client_module()
    results = []
    print(f"model-free server ({a.video_codec.upper()} 512x512 25 fps + Opus), {a.seconds:.0f} s per N, "
          f"{psutil.cpu_count()} cores, {a.workers} server process(es)")
    print("  N  server cores  per session  event loop (busiest)  clients cores  fps(min)  dup%  sustained")

    def cpu() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in procs)

    def loops() -> list[float]:
        return [thread_time(p, p.pid) for p in procs]

    async def run(n: int) -> dict:
        arrivals = [[] for _ in range(n)]
        clients = []
        for i in range(n):
            c = client.AvatarClient(url, None, audio_input="pcm", pcm_rate=16000, emotion="neutral",
                                    on_video=lambda f, t, i=i: arrivals[i].append(t))
            await c.connect()
            await c.send_pcm(pcm)                    # a long reply: the audio track carries speech
            clients.append(c)
        await asyncio.sleep(2.0)                     # warm-up: ICE, DTLS, first keyframes
        cpu0, me0, t0, main0 = cpu(), sum(me.cpu_times()[:2]), time.monotonic(), loops()
        await asyncio.sleep(a.seconds)
        cpu1, me1, t1, main1 = cpu(), sum(me.cpu_times()[:2]), time.monotonic(), loops()
        stats = [m for c in clients for m in c.messages if m["type"] == "stats"]
        for c in clients:
            await c.close()
        fps = [sum(t0 <= t < t1 for t in arr) / (t1 - t0) for arr in arrivals]
        last = {}
        for m in stats:
            last[id(m)] = m
        dup = 100 * sum(m["duplicated"] for m in stats[-n:]) / max(1, sum(m["frames"] for m in stats[-n:]))
        cores = (cpu1 - cpu0) / (t1 - t0)
        return dict(clients=n, server_cores=cores, cores_per_session=cores / n,
                    event_loop_cores=(sum(main1) - sum(main0)) / (t1 - t0),
                    busiest_loop_cores=max(y - x for x, y in zip(main0, main1)) / (t1 - t0),
                    client_cores=(me1 - me0) / (t1 - t0), fps_min=min(fps), duplicated_pct=dup,
                    sustained=min(fps) >= 24 and dup <= 5)

    try:
        for n in counts:
            row = asyncio.run(run(n))
            results.append(row)
            print(f"  {n}  {row['server_cores']:12.2f}  {row['cores_per_session']:11.3f}"
                  f"  {row['event_loop_cores']:10.2f} ({row['busiest_loop_cores']:.2f})  {row['client_cores']:13.2f}"
                  f"  {row['fps_min']:8.1f}  {row['duplicated_pct']:4.1f}  {'yes' if row['sustained'] else 'no'}")
            time.sleep(1.0)
    finally:
        server.terminate()
        server.wait(30)
    best = max([r["clients"] for r in results if r["sustained"]], default=0)
    per = [r["cores_per_session"] for r in results if r["sustained"]]
    print(f"sessions sustained by {a.workers} server process(es) here: {best}; "
          f"CPU per session {min(per) if per else float('nan'):.3f}-{max(per) if per else float('nan'):.3f} cores")
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", default="1,2,3")
    p.add_argument("--config", default="small")
    p.add_argument("--checkpoints", default=None, help="default: recipe weights of --config in a temp folder")
    p.add_argument("--audio", default=None, help="speech file (default: espeak-ng)")
    p.add_argument("--model-free", action="store_true", help="transport cost only: frames from a cache")
    p.add_argument("--seconds", type=float, default=10.0, help="--model-free: measurement window per N")
    p.add_argument("--video-codec", choices=["vp8", "h264"], default="vp8")
    p.add_argument("--workers", type=int, default=1, help="--model-free: server processes (float-rt serve --workers)")
    p.add_argument("--json", default=None)
    p.add_argument("--serve-cache", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--max-sessions", type=int, default=8, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve_cache:
        return serve_cache(a)
    code = isolate()
    if code is not None:
        return code
    results = bench_model_free(a) if a.model_free else bench_model(a)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
