"""Offline generation: reference image + speech -> talking-head video."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .backends import BackendConfig, apply_backends
from .checkpoint import AUDIO_DIR, feature_extractor, load_model
from .config import EMOTIONS, FloatConfig, SamplingConfig
from .device import resolve_device  # noqa: F401 - also imported from here
from .errors import FloatRTError
from .media import check_audio, frames_to_uint8, write_video
from .model import FloatModel
from .sampler import emotion_condition, sample_motion

log = logging.getLogger(__name__)


def load_with_backends(cfg: FloatConfig, ckpt_dir: str | Path, device: torch.device) -> FloatModel:
    """Load the checkpoints and put each stage on the backend ``cfg.backends`` names."""
    model, _ = load_model(cfg.model, ckpt_dir, device)
    if (Path(ckpt_dir) / "RECIPE_WEIGHTS.txt").exists():
        log.warning("%s holds recipe (demo) weights: the output is noise, not a face", ckpt_dir)
    try:
        backends = BackendConfig.from_dict(cfg.backends)
    except ValueError as exc:
        raise FloatRTError(str(exc)) from exc
    return apply_backends(model, backends, device)


@dataclass
class Reference:
    """Everything the decoder and sampler need from the reference image (computed once)."""
    s_r: torch.Tensor               # (1, dim_w) identity latent
    r_s: torch.Tensor               # (1, dim_w) reference motion
    feats: list[torch.Tensor]       # skip features, coarsest first

    @classmethod
    @torch.no_grad()
    def encode(cls, model: FloatModel, image: torch.Tensor) -> "Reference":
        s_r, _, r_s, feats = model.motion.encode_reference(image.to(model.device))
        return cls(s_r, r_s, feats)


class FloatPipeline:
    def __init__(self, model: FloatModel, cfg: FloatConfig, preprocessor, device: torch.device,
                 decode_batch: int = 8):
        self.model, self.cfg, self.preprocessor, self.device = model, cfg, preprocessor, device
        self.decode_batch = decode_batch

    @classmethod
    def from_checkpoints(cls, ckpt_dir: str | Path, cfg: FloatConfig, device: str | None = None,
                         **kw) -> "FloatPipeline":
        dev = resolve_device(device)
        model = load_with_backends(cfg, ckpt_dir, dev)
        return cls(model, cfg, feature_extractor(Path(ckpt_dir) / AUDIO_DIR), dev, **kw)

    # ------------------------------------------------------------ stages
    @torch.no_grad()
    def encode_reference(self, image: torch.Tensor) -> Reference:
        return Reference.encode(self.model, image)

    def input_values(self, samples: np.ndarray, warn_silence: bool = False) -> torch.Tensor:
        check_audio(samples, warn_silence=warn_silence)
        iv = self.preprocessor(samples, sampling_rate=self.cfg.model.sampling_rate,
                               return_tensors="np").input_values.astype(np.float32)
        return torch.from_numpy(iv).to(self.device)

    @torch.no_grad()
    def sample(self, ref: Reference, input_values: torch.Tensor, sampling: SamplingConfig,
               progress: bool = False) -> torch.Tensor:
        """Motion latents (1, T, dim_w) for the whole clip (official offline semantics)."""
        if sampling.emotion is not None and sampling.emotion.lower() not in EMOTIONS:
            raise FloatRTError(f"unknown emotion {sampling.emotion!r}; choose from {', '.join(EMOTIONS)}")
        wa = self.model.encode_audio(input_values)
        probs = self.model.emotion(input_values) if sampling.emotion is None else None
        we = emotion_condition(sampling.emotion, probs, self.cfg.model.dim_e, self.model.labels).to(self.device)
        bar = (lambda it: tqdm(it, desc="sampling motion", unit="window")) if progress else None
        return sample_motion(self.model.fmt, wa, ref.r_s, we, self.cfg.model, sampling, progress=bar)

    @torch.no_grad()
    def decode(self, ref: Reference, motion: torch.Tensor, progress: bool = False) -> Iterator[torch.Tensor]:
        """Yield decoded frames (n, 3, S, S) in batches of ``decode_batch``."""
        total = motion.shape[1]
        bar = tqdm(total=total, desc="decoding frames", unit="frame", disable=not progress)
        for start in range(0, total, self.decode_batch):
            chunk = motion[0, start:start + self.decode_batch]
            yield self.model.motion.decode(ref.s_r, chunk, ref.feats)
            bar.update(chunk.shape[0])
        bar.close()

    # ------------------------------------------------------------ end to end
    def generate(self, image: torch.Tensor, samples: np.ndarray, out_path: str | Path,
                 sampling: SamplingConfig | None = None, progress: bool = True, paste=None,
                 motion_scale: float = 1.0) -> int:
        """Write an mp4 (H.264 + AAC) for ``samples`` (mono float32 at the model's rate).
        ``paste``: a media.FramePaster putting each frame back into the photo; ``motion_scale``:
        float_controls.scale_motion on the sampled latents (1: untouched)."""
        from .float_controls import scale_motion
        sampling = sampling or self.cfg.sampling
        m = self.cfg.model
        iv = self.input_values(samples)

        def batches():   # runs only once the output is open
            ref = self.encode_reference(image)
            motion = self.sample(ref, iv, sampling, progress=progress)
            motion = scale_motion(motion[0], ref.r_s, motion_scale)[None]
            for frames in self.decode(ref, motion, progress=progress):
                rgb = frames_to_uint8(frames)
                yield np.stack([paste(f) for f in rgb]) if paste is not None else rgb

        size = (paste.w, paste.h) if paste is not None else m.input_size
        return write_video(out_path, m.fps, size, samples, m.sampling_rate, batches())


def sampling_with(base: SamplingConfig, **overrides) -> SamplingConfig:
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
