"""What paste-back costs per frame: a rendered face crop put back into a photo at 1920x1080.

    .venv/bin/python scripts/bench_paste.py [--frames 300] [--size 1920x1080] [--frame-size 512] [--threads N]

Prints wall and CPU ms per frame (CPU time: this process, all its threads; the steadier figure on
a shared machine) for ``paste_into`` (the live path: only the mask's box is written into a
reused output buffer) and for ``__call__`` (a new full frame each time: one more full-frame copy),
with the CPU's name and OpenCV's thread count.  The photo is a real portrait (scikit-image's
astronaut) scaled to cover the size; the crop is where Ditto's face crop would put it.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    import skimage.data

    from float_rt.controls import parse_size
    from float_rt.media import FramePaster, SquareCrop
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", default="1920x1080", help="video size WxH")
    ap.add_argument("--frame-size", type=int, default=512, help="side of the rendered crop (Ditto: 512)")
    ap.add_argument("--threads", type=int, default=0, help="OpenCV threads (0: its default)")
    a = ap.parse_args()
    if a.threads:
        cv2.setNumThreads(a.threads)
    w, h = parse_size(a.size)
    photo = skimage.data.astronaut()                       # 512x512 RGB, face near (250, 130)
    # Ditto's crop: 2.3x the face box (about 110 px here), moved up by 1/8 of its side
    crop = SquareCrop(250 - 126, 130 - 126 - 32, 253, 256)
    paster = FramePaster(photo, crop, a.frame_size, (w, h), limit=None)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (a.frame_size, a.frame_size, 3), dtype=np.uint8) for _ in range(8)]
    out = paster.new_frame()
    x0, y0, x1, y1 = paster.box
    for f in frames:                                       # warm-up (and the colour offset)
        paster.paste_into(f, out)

    def timed(fn) -> tuple[float, float]:
        """(wall ms, CPU ms of this process, all threads) per frame."""
        t, c = time.perf_counter(), time.process_time()
        for i in range(a.frames):
            fn(frames[i % len(frames)])
        return (time.perf_counter() - t) / a.frames * 1e3, (time.process_time() - c) / a.frames * 1e3

    live = timed(lambda f: paster.paste_into(f, out))
    fresh = timed(paster)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, {cv2.getNumThreads()} OpenCV threads, load {load:.1f}")
    print(f"video {w}x{h}, crop {a.frame_size}px pasted into a {x1 - x0}x{y1 - y0} box, {a.frames} frames")
    print(f"paste_into (reused buffer): {live[0]:.2f} ms/frame wall, {live[1]:.2f} ms CPU")
    print(f"paste (new frame each):     {fresh[0]:.2f} ms/frame wall, {fresh[1]:.2f} ms CPU")


if __name__ == "__main__":
    main()
