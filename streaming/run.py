"""Feed an audio file through a live session (``float-rt stream``)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from float_rt.media import VideoWriter

from .engine import Engine
from .frames import FrameShaper
from .session import Frame, Session


@dataclass
class StreamResult:
    frames: int
    duplicated: int
    dropped: int
    wall_s: float
    audio_s: float
    latency_ms: np.ndarray        # per decoded frame: ready - audio arrived
    step_ms: float                # mean compute per engine step
    algorithmic_ms: float


async def _feed(session: Session, samples: np.ndarray, rate: int, realtime: bool, chunk_ms: int = 20) -> None:
    n = rate * chunk_ms // 1000
    loop = asyncio.get_running_loop()
    start = loop.time()
    for k, i in enumerate(range(0, len(samples), n)):
        if session.closed:
            return
        session.push_audio(samples[i:i + n], rate)
        if realtime:
            await asyncio.sleep(max(0.0, start + (k + 1) * chunk_ms / 1000 - loop.time()))
        elif k % 50 == 0:
            await asyncio.sleep(0)
    session.end_input()


async def stream_file(engine: Engine, image: torch.Tensor, samples: np.ndarray, out: str | Path,
                      realtime: bool = False, trace: str | Path | None = None, progress=None,
                      photo: np.ndarray | None = None, **options) -> StreamResult:
    """Push ``samples`` (mono float, the model's rate) through a session and write the mp4.

    ``photo``: the whole photo, for ``controls`` that paste back.  ``realtime``: audio arrives at its own pace and frames leave on the 25 fps clock
    (duplicates and skips included, as a viewer would see them); otherwise the file is
    processed as fast as the engine goes.
    """
    opts = engine.default_options(**options)
    shape = FrameShaper(engine, None, photo, opts.controls)    # the crop, or pasted into the photo
    session = engine.open_session(image, opts, live=realtime)
    writer = VideoWriter(out, engine.fps, shape.size, sampling_rate=engine.sampling_rate, with_audio=True)
    rows: list[Frame] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    engine.start()
    feeder = asyncio.create_task(_feed(session, samples, engine.sampling_rate, realtime))
    try:
        async for f in session.frames(realtime=realtime):
            writer.write(shape(f.image)[None], f.audio)
            rows.append(f)
            if progress:
                progress(1)
        await feeder
    finally:
        feeder.cancel()
        engine.stop()
        writer.close()
        stats = session.stats
        session.close()
    wall = loop.time() - t0
    lat = np.array([f.ready - f.arrived for f in rows if not f.duplicate]) * 1e3
    if trace:
        base = session.started
        np.savez(trace, pts=np.array([f.pts for f in rows]), index=np.array([f.index for f in rows]),
                 arrived=np.array([f.arrived - base for f in rows]), ready=np.array([f.ready - base for f in rows]),
                 motion=np.stack([f.motion for f in rows]) if rows else np.zeros((0, 0)),
                 duplicate=np.array([f.duplicate for f in rows]))
    steps = [h.total for h in engine.history]
    o = session.options
    return StreamResult(len(rows), stats.duplicated, stats.dropped_late + stats.dropped_backlog, wall,
                        len(samples) / engine.sampling_rate, lat, float(np.mean(steps) * 1e3) if steps else 0.0,
                        engine.live.algorithmic_latency_ms(o))
