"""Real synthetic speech for tests and benchmarks (espeak-ng, installed by the project's set-up)."""
from __future__ import annotations

import io
import subprocess

import av
import numpy as np


def espeak(text: str, rate: int = 24000) -> np.ndarray:
    """Real speech as int16 at ``rate`` (espeak-ng speaks at 22.05 kHz; PyAV resamples)."""
    wav = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True).stdout
    chunks = []
    with av.open(io.BytesIO(wav)) as c:
        res = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for f in c.decode(audio=0):
            chunks += [o.to_ndarray()[0] for o in res.resample(f)]
        chunks += [o.to_ndarray()[0] for o in res.resample(None)]
    return np.concatenate(chunks).astype(np.int16)
