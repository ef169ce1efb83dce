"""Ditto offline, end to end: photo + speech -> frames, the official offline computation.

HuBERT (onnxruntime) -> 25 Hz features -> 1103-value condition -> LMDM windows (guided DDIM, fuse,
smoothing) -> 265-value motion -> LivePortrait drive (relative to frame 0) + stitching -> warp +
SPADE decoder.  The photo is cropped once around OpenCV's face box (media.SquareCrop).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..cpu import tune as tune_cpu
from ..device import resolve_device
from ..liveportrait import Renderer, load_renderer
from ..liveportrait.kinematics import MotionInfo
from ..media import SquareCrop
from .condition import SourceCondition
from .config import EMOTION_LABELS, DittoConfig
from .ddim import DDIMScheduler
from .eyes import FILES as EYE_FILES
from .eyes import EyeMeasurer
from .hubert import HubertRunner, offline_features
from .layout import HUBERT_PATH, LMDM_PATH, check_ditto_layout, repo_root
from .lmdm import MotionDecoder
from .loader import load_lmdm
from .pipeline import MotionNoise, OfflineResult, offline_audio2motion
from .windows import num_windows

log = logging.getLogger(__name__)
RECIPE_MARKER = "RECIPE_WEIGHTS.txt"


@dataclass
class DittoModel:
    cfg: DittoConfig
    renderer: Renderer
    lmdm: MotionDecoder
    hubert: Callable[[np.ndarray], np.ndarray]   # one (6480,) chunk -> its (20, 1024) encoder output
    device: torch.device
    eyes: EyeMeasurer | None = None              # the source's eye measures; None: the config's neutral ones


def load_ditto(cfg: DittoConfig, folder: str | Path, device: str | None = None,
               hubert: Callable[[np.ndarray], np.ndarray] | None = None) -> DittoModel:
    """The renderer, the LMDM and the HuBERT session from a folder in the published layout, each file
    through its loader's key and shape check.  ``hubert`` replaces the ONNX session (reference cases)."""
    root = check_ditto_layout(folder)
    dev = resolve_device(device)
    if dev.type == "cpu":
        # glibc keeps the renderer's large activations in the heap, denormals flush (float_rt/cpu.py):
        # about 10% of a rendered frame at the published sizes
        tune_cpu()
    if (Path(folder) / RECIPE_MARKER).exists() or (root / RECIPE_MARKER).exists():
        log.warning("%s holds recipe (demo) weights: the output is noise, not a face", folder)
    renderer, _ = load_renderer(root, cfg.renderer, dev)
    lmdm, _ = load_lmdm(root / LMDM_PATH, cfg.lmdm, dev)
    if hubert is None:
        hubert = HubertRunner(root / HUBERT_PATH)
    eyes = EyeMeasurer.from_folder(repo_root(root))
    if eyes is None:
        log.warning("no %s: the photo's eye measures are neutral values (float-rt download --config ditto "
                    "fetches the two files)", " or ".join(EYE_FILES))
    return DittoModel(cfg, renderer, lmdm, hubert, dev, eyes)


def emotion_index(label: str | None, cfg: DittoConfig) -> int:
    """A label among Ditto's 8 (any case); None: the config's."""
    label = label or cfg.emotion
    lower = [e.lower() for e in EMOTION_LABELS]
    return lower.index(label.lower())


@dataclass
class DittoReference:
    """Everything about the source photo: its head state, keypoints and features, the 79 condition
    values, its 265-value motion vector (the first conditioning frame) and where its crop came from."""
    info: MotionInfo
    x_s: torch.Tensor          # (1, 21, 3)
    f_s: torch.Tensor          # (1, C, D, h, w)
    condition: SourceCondition
    motion: torch.Tensor       # (265,)
    crop: SquareCrop | None = None


def crop_tensor(crop_rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 (S, S, 3) -> (1, 3, S, S) float32 in [0, 1], as the extractors take it."""
    return torch.from_numpy(np.ascontiguousarray(crop_rgb.transpose(2, 0, 1))).float().div(255)[None]


EYE_CROP = 512      # the official code measures the eyes on its 512-px crop, then resizes it for the extractors


def eye_crop(photo: np.ndarray, crop: SquareCrop | None) -> np.ndarray:
    """The square the eye measures are taken on: ``crop`` cut again at 512 px, or (no crop: the photo is
    the face) the photo resized to 512 x 512, as ``prepare`` resizes it for the extractors."""
    import cv2
    if crop is not None:
        return SquareCrop(crop.x0, crop.y0, crop.side, EYE_CROP).cut(photo)
    return cv2.resize(np.ascontiguousarray(photo), (EYE_CROP, EYE_CROP), interpolation=cv2.INTER_AREA)


def source_eyes(model: DittoModel, image: torch.Tensor, eye_image: np.ndarray | None = None) -> tuple:
    """The eye measures (MediaPipe's detector and mesh, ``eyes.py``) on ``eye_image`` (RGB uint8; default:
    the extractors' crop itself), or the config's neutral ones without those files or where the detector
    finds no face."""
    src = model.cfg.source
    if model.eyes is not None:
        crop = eye_image if eye_image is not None else \
            image[0].permute(1, 2, 0).mul(255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        measured = model.eyes.measure(crop)
        if measured is not None:
            return measured
        log.warning("MediaPipe's face detector finds no face in the crop: neutral eye measures")
    return src.eye_open, src.eye_ball


@torch.no_grad()
def encode_source(model: DittoModel, image: torch.Tensor, emotion: int, eye_open=None, eye_ball=None,
                  crop: SquareCrop | None = None, eye_image: np.ndarray | None = None) -> DittoReference:
    """(1, 3, 256, 256) crop in [0, 1] -> the reference.  Eye measures: given, else measured on
    ``eye_image`` (``eye_crop``), else on the crop itself."""
    info, x_s, f_s = model.renderer.source(image.to(model.device))
    if eye_open is None or eye_ball is None:
        measured_open, measured_ball = source_eyes(model, image, eye_image)
        eye_open = measured_open if eye_open is None else eye_open
        eye_ball = measured_ball if eye_ball is None else eye_ball
    cond = SourceCondition.build(eye_open, eye_ball, info.kp.cpu(), emotion)
    return DittoReference(info, x_s, f_s, cond, info.to_vector()[0], crop)


def encode_photo(model: DittoModel, photo: np.ndarray, crop: SquareCrop, emotion: int) -> DittoReference:
    """The reference of ``photo`` cut at ``crop``: the extractors on the 256-px square, the eyes (when the
    eye models are there) on the same square at 512 px."""
    eyes = eye_crop(photo, crop) if model.eyes is not None else None
    return encode_source(model, crop_tensor(crop.cut(photo)), emotion, crop=crop, eye_image=eyes)


def face_crop(cfg: DittoConfig, photo: np.ndarray) -> SquareCrop:
    s = cfg.source
    return SquareCrop.around_face(photo, s.crop_scale, s.crop_vx, s.crop_vy, s.crop_size)


def audio_features(model: DittoModel, samples: np.ndarray) -> torch.Tensor:
    """(N, 1024) HuBERT features at 25 Hz, N = ceil(seconds * 25), official offline chunking."""
    return torch.from_numpy(offline_features(samples, model.hubert)).to(model.device)


@torch.no_grad()
def clip_motion(model: DittoModel, ref: DittoReference, features: torch.Tensor, steps: int | None = None,
                seed: int | None = None, noise: MotionNoise | None = None) -> OfflineResult:
    """The offline window loop.  The step noises are drawn once and reused by every window, then one
    start noise per window, from ``seed`` (the official code draws them from torch's global seed)."""
    cfg = model.cfg
    sampler = replace(cfg.sampler, steps=steps) if steps else cfg.sampler
    scheduler = DDIMScheduler(sampler)
    if noise is None:
        gen = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
        windows = num_windows(features.shape[0], cfg.lmdm.seq_len, cfg.windows)
        noise = MotionNoise.draw(scheduler, windows, cfg.lmdm.seq_len, cfg.lmdm.motion_dim, gen)
    return offline_audio2motion(model.lmdm, scheduler, features, ref.condition, ref.motion.to(features.device),
                                cfg.windows, noise)


@torch.no_grad()
def render_frames(model: DittoModel, ref: DittoReference, motion: torch.Tensor, d0: torch.Tensor,
                  batch: int = 8) -> Iterator[torch.Tensor]:
    """Frames (b, H, W, 3) float in [0, 255], ``batch`` at a time, driven relative to ``d0``."""
    for start in range(0, motion.shape[0], batch):
        rows = motion[start:start + batch].to(model.device)
        x_d = model.renderer.drive(ref.info, ref.x_s, rows, d0.to(model.device))
        yield model.renderer.render(ref.f_s, ref.x_s, x_d)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    return frames.round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def frame_size(cfg: DittoConfig) -> int:
    """Side of the rendered frames: the crop, down to the features' grid, up through the decoder."""
    r = cfg.renderer
    return cfg.source.crop_size // 2 ** r.appearance.num_down_blocks * 2 ** r.decoder.num_down_blocks * r.decoder.upscale


def write_clip(model: DittoModel, photo: np.ndarray, crop: SquareCrop, samples: np.ndarray, out_path: str | Path,
               emotion: int, steps: int | None = None, seed: int | None = None, controls=None,
               progress: bool = True) -> int:
    """photo + 16 kHz speech -> mp4 (H.264 + AAC) with ceil(seconds * 25) frames, written as they are
    rendered.  ``controls`` (float_rt/controls.py): the motion controls (ditto/controls.py) and, with
    ``paste_back``, the frames put back into the photo, at its size or ``video_size``."""
    from tqdm.auto import tqdm

    from ..controls import Controls
    from ..liveportrait.renderer import exact_float32
    from ..media import PasteBack, check_audio, write_video
    from .controls import control_rows
    cfg = model.cfg
    controls = controls or Controls()
    check_audio(samples, warn_silence=False)   # load_audio warned of silence already
    side = frame_size(cfg)
    paste = PasteBack(photo, crop, side, controls.video_size) if controls.paste_back else None

    def batches():   # runs only once the output is open
        with exact_float32():
            ref = encode_photo(model, photo, crop, emotion)
            result = clip_motion(model, ref, audio_features(model, samples), steps=steps, seed=seed)
            motion = control_rows(result.motion, result.d0, ref.info, controls, 0, cfg.fps)
            bar = tqdm(total=result.motion.shape[0], desc="rendering", unit="frame", disable=not progress)
            for frames in render_frames(model, ref, motion, result.d0):
                rgb = to_uint8(frames)
                yield np.stack([paste(f) for f in rgb]) if paste else rgb
                bar.update(len(rgb))
            bar.close()

    return write_video(out_path, cfg.fps, (paste.w, paste.h) if paste else side, samples, cfg.sampling_rate,
                       batches())
