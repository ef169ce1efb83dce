"""A Python aiortc client talks to the server: speech in, 25 fps avatar video and synced speech out."""
import asyncio

import numpy as np

from float_rt.media import load_audio
from server.stamp import draw_stamp


def test_client_reads_the_server_stamp(client_mod):
    img = draw_stamp(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8), 1234)
    assert client_mod.read_stamp(img) == 1234


def test_speech_in_avatar_out(server, client_mod, speech_wav):
    speech = load_audio(speech_wav)
    r = asyncio.run(client_mod.measure(server.url, speech, emotion="happy"))
    assert not r["errors"] and r["stats"]
    assert r["shapes"] == [(512, 512, 3)]
    assert r["median_std"] > 5                                   # not blank
    # The frames are stamped on the 25 fps clock (90 kHz): every step a whole number of frames,
    # forward.  How many arrive per second, and how early, are benchmark figures (printed below;
    # scripts/bench_server.py), which a busy machine changes.
    steps = np.array(r["pts_steps"])
    assert (steps > 0).all() and (steps % 3600 == 0).all()
    assert r["shown_fraction"] > 0 and r["frames"] >= 2
    lat, sync = np.array(r["latency_ms"]), np.array(r["lipsync_ms"])
    assert (lat > 0).all()                                       # causal: after its audio was sent
    print(f"\nE2E: {r['frames']} frames in {r['span_s']:.2f} s ({r['fps']:.1f} fps), "
          f"{r['shown_fraction']:.0%} of the speech frames shown; latency audio sent -> frame received: "
          f"median {np.median(lat):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms; lip sync at arrival "
          f"(picture - sound): median {np.median(sync):+.0f} ms, p95 |offset| {np.percentile(np.abs(sync), 95):.0f} ms"
          if lat.size and sync.size else f"\nE2E: {r['frames']} frames")
