"""Model-free sessions for transport benchmarks: frames from a cache, everything else real.

``CacheEngine`` is a ``streaming.Engine`` whose compute step hands out precomputed images
instead of running the model, so sessions keep their real input, pacing, interruption and
output machinery and a benchmark measures only what the transport costs.  The cache is the
packaged portrait moving a little (a slow head bob and sway), which an encoder sees as a real
talking head, not the noise that recipe weights draw.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from float_rt.config import EMOTIONS, FloatConfig
from float_rt.media import crop_face, load_image
from streaming.config import StreamConfig
from streaming.engine import Engine, _Plan
from streaming.session import Frame, Session, SessionOptions


def portrait_frames(size: int = 512, count: int = 50) -> np.ndarray:
    """(count, size, size, 3) uint8: the packaged portrait with small head motion."""
    from server.config import packaged_page
    face = crop_face(load_image(packaged_page() / "avatars" / "astronaut.jpg"), size)
    out = []
    for i in range(count):
        a = 2 * math.pi * i / count
        m = cv2.getRotationMatrix2D((size / 2, size / 2), 2.0 * math.sin(a), 1.0 + 0.01 * math.sin(2 * a))
        m[:, 2] += (4 * math.sin(a), 3 * math.sin(3 * a))
        out.append(cv2.warpAffine(face, m, (size, size), borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


class CacheEngine(Engine):
    """An engine that draws no model: each committed frame is the next image of ``frames``."""

    def __init__(self, cfg: FloatConfig, stream_cfg: StreamConfig, frames: np.ndarray, **kw):
        super().__init__(None, cfg, stream_cfg, normalize_audio=False, device="cpu", **kw)
        self.frames = frames
        m = cfg.model
        self._zeros = torch.zeros(1, m.num_frames, m.dim_w), torch.zeros(1, m.num_frames, m.dim_a)

    def open_session(self, image, options: SessionOptions | None = None, live: bool = False) -> Session:
        options = (options or self.default_options()).validate()
        emotion = torch.zeros(1, 1, self.cfg.model.dim_e)
        emotion[..., EMOTIONS.index(options.emotion or "neutral")] = 1.0
        s = Session(self.cfg.model, self.stream_cfg, None, options, live, emotion, wake=self.notify,
                    release=self.remove, clock=self.clock)
        with self._lock:
            self._sessions.append(s)
        return s

    def _compute(self, plans: list[_Plan]) -> None:
        ready = self.clock()
        for p in plans:
            self._commit(p, *self._zeros)
            if p.commit <= 0:
                continue
            n = len(self.frames)
            p.s.deliver([Frame(0, p.t + i, self.frames[(p.t + i) % n], p.audio[i], None, None, p.arrived[i], ready)
                         for i in range(p.commit)], p.epoch)


def cache_server(cfg):
    """An AvatarServer on a CacheEngine of the small config (a --workers factory: module level, picklable)."""
    from float_rt.config import load_config
    from float_rt.resources import config_path
    from server.app import AvatarServer
    from streaming.config import load_stream_config
    engine = CacheEngine(load_config(config_path("small")), load_stream_config(config_path("stream")),
                         portrait_frames(cfg.video_size))
    return AvatarServer.with_engine(cfg, engine)
