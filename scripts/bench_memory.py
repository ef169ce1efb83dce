"""Peak RSS of `float-rt generate` for short and long audio (memory must not grow with length).

usage: python scripts/bench_memory.py --checkpoints DIR --config CONFIG --ref IMG [--seconds 5 60]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def speech(seconds: float, path: Path) -> Path:
    """Looped espeak-ng speech of the requested length, written with PyAV."""
    import av
    from float_rt.media import load_audio
    src = path.with_suffix(".src.wav")
    subprocess.run(["espeak-ng", "-w", str(src), "The quick brown fox jumps over the lazy dog, again and again."],
                   check=True)
    base = load_audio(src, 16000)
    x = np.resize(base, int(seconds * 16000)).astype(np.float32)
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_f32le", rate=16000)
        s.layout = "mono"
        f = av.AudioFrame.from_ndarray(x[None], format="flt", layout="mono")
        f.sample_rate = 16000
        c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak RSS of one child process (fresh interpreter per run)."""
    wrapper = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoints", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--seconds", type=float, nargs="+", default=[5.0, 60.0])
    a = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sec in a.seconds:
            wav = speech(sec, Path(tmp) / f"s{sec:g}.wav")
            cmd = ["float-rt", "generate", "--checkpoints", a.checkpoints, "--config", a.config,
                   "--ref", a.ref, "--audio", str(wav), "--out", str(Path(tmp) / f"o{sec:g}.mp4")]
            results[sec] = peak_rss_mb(cmd)
            print(f"{sec:6.1f} s of audio: peak RSS {results[sec]:.0f} MB", flush=True)
    secs = sorted(results)
    print(f"growth {secs[0]:g} s -> {secs[-1]:g} s: {results[secs[-1]] - results[secs[0]]:.0f} MB")


if __name__ == "__main__":
    main()
