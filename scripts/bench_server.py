#!/usr/bin/env python
"""End-to-end WebRTC benchmark: N concurrent Python clients against one server.

    python scripts/bench_server.py --clients 1,2,3 [--checkpoints DIR --config CFG] [--audio speech.wav]

Runs itself inside a private network namespace (`unshare --net`, only `lo`), so all traffic
stays on 127.0.0.1.  For each N it prints, per client and overall: frames/s received, latency
(audio sent -> frame received, from the server's frame stamps), lip-sync offset, and the
server's duplicated/dropped frame counts; N is served in real time when every client gets
>= 24 fps with no more than 5 % duplicated frames.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def in_private_netns() -> bool:
    import socket
    return [n for _, n in socket.if_nameindex()] == ["lo"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", default="1,2,3")
    p.add_argument("--config", default=str(ROOT / "configs" / "small.yaml"))
    p.add_argument("--checkpoints", default=None, help="default: recipe weights of --config in a temp folder")
    p.add_argument("--audio", default=None, help="speech file (default: espeak-ng)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if not in_private_netns():
        if os.environ.get("FLOAT_RT_NETNS") == "1":
            raise SystemExit("could not enter a private network namespace")
        env = dict(os.environ, FLOAT_RT_NETNS="1")
        inner = "ip link set lo up && exec " + " ".join([sys.executable, *map(str, sys.argv)])
        user = [] if os.geteuid() == 0 else ["--map-root-user"]
        return subprocess.call(["unshare", "--net", *user, "--", "sh", "-c", inner], env=env)

    from float_rt.config import load_config
    from float_rt.media import load_audio
    from float_rt.recipe import write_recipe_checkpoints
    from server.config import ServerConfig
    from server.thread import ServerThread

    tmp = Path(tempfile.mkdtemp())
    ckpt = a.checkpoints or str(write_recipe_checkpoints(load_config(a.config), tmp / "ckpt"))
    audio = a.audio
    if audio is None:
        audio = str(tmp / "speech.wav")
        subprocess.run(["espeak-ng", "-w", audio, "Hello there. I am a talking avatar, and this is a benchmark "
                        "of the real time server with several clients at once."], check=True)
    speech = load_audio(audio)
    spec = importlib.util.spec_from_file_location("mic_client", ROOT / "client_demo" / "mic_client.py")
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)

    counts = [int(x) for x in a.clients.split(",")]
    srv = ServerThread(ServerConfig(port=0, config=a.config, checkpoints=ckpt, ice_hosts=["127.0.0.1"],
                                    max_sessions=max(counts))).start()
    results = []
    try:
        print(f"{len(speech) / 16000:.1f} s of speech per client; config {Path(a.config).name}")
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
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
