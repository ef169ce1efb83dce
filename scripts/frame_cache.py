"""Model-free sessions for transport benchmarks: frames from a cache, everything else real.

``cache_engine`` is a ``streaming.Engine`` whose family (``CacheLive``) hands out precomputed images
instead of running the model, so sessions keep their real input, pacing, interruption and
output machinery and a benchmark measures only what the transport costs.  The cache is the
packaged portrait moving a little (a slow head bob and sway), which an encoder sees as a real
talking head, not the noise that recipe weights draw.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from float_rt.config import EMOTIONS
from float_rt.live import Committed
from float_rt.media import crop_face, load_image
from streaming.config import StreamConfig
from streaming.engine import Engine


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


@dataclass
class CacheCarry:
    """A model-free session's carry: only the frame clock."""
    next_frame: int = 0

    @property
    def rewind_floor(self) -> int:
        return 0

    def rewind(self, frame: int) -> int:
        self.next_frame = max(0, min(frame, self.next_frame))
        return self.next_frame

    def skip(self, n: int) -> None:
        self.next_frame += n

    def keep_from(self) -> int:
        return self.next_frame * 640


class CacheLive:
    """A ``float_rt.live.LiveModel`` that draws no model: each committed frame is the next image of
    ``frames``; the session's input, pacing, interruption and output machinery stay real."""
    name = "cache"
    fps, sampling_rate, samples_per_frame = 25, 16000, 640
    emotions = EMOTIONS
    option_names = frozenset({"emotion", "chunk_frames", "lookahead_frames"})
    supported_controls = frozenset()
    device = torch.device("cpu")
    flush_denormal = False

    def __init__(self, frames: np.ndarray, chunk_frames: int = 5):
        self.frames, self.chunk_frames = frames, chunk_frames
        self.image_size = self.frame_size = frames.shape[1]

    def option_defaults(self, stream_cfg) -> dict:
        return dict(chunk_frames=stream_cfg.chunk_frames, lookahead_frames=stream_cfg.frames_of(stream_cfg.lookahead_ms, 25))

    def algorithmic_latency_ms(self, options) -> float:
        return (options.chunk_frames + options.lookahead_frames) * 40.0

    def prepare(self, image, crop=True):
        return image

    def crop_box(self, image):
        raise NotImplementedError("the frame cache has no photo to paste into")

    def encode_reference(self, prepared):
        return None

    def new_carry(self, reference, options, rewind_limit):
        return CacheCarry()

    def set_emotion(self, carry, label, probs=None):
        pass

    def emotion_of(self, carry) -> dict:
        return {}

    def frames_needed(self, carry, options) -> int:
        return carry.next_frame + options.chunk_frames + options.lookahead_frames

    def plan(self, reference, carry, options, audio, features, ended, total_frames):
        n = options.chunk_frames if not ended else min(options.chunk_frames, total_frames - carry.next_frame)
        return (carry.next_frame, n)

    def compute(self, plans, times) -> None:
        pass

    def commit(self, carry, plan):
        t, n = plan
        if n <= 0:
            return None
        carry.next_frame = t + n
        return Committed(t, np.arange(t, t + n), None)

    def render(self, items):
        k = len(self.frames)
        return [self.frames[np.asarray(done.motion) % k] for _, done in items]


def cache_engine(stream_cfg: StreamConfig, frames: np.ndarray, **kw) -> Engine:
    """An engine whose family is the frame cache (a model-free transport benchmark)."""
    return Engine(CacheLive(frames), stream_cfg, **kw)


def cache_server(cfg):
    """An AvatarServer on a frame-cache engine (a --workers factory: module level, picklable)."""
    from float_rt.resources import config_path
    from server.app import AvatarServer
    from streaming.config import load_stream_config
    engine = cache_engine(load_stream_config(config_path("stream")), portrait_frames(cfg.video_size))
    return AvatarServer.with_engine(cfg, engine)
