"""Sizes and options of Ditto's audio-to-motion stage, as plain dataclasses.

The defaults are the published model (``lmdm_v0.4_hubert.pth``) and the offline defaults of the
official ``StreamSDK.setup``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..liveportrait.sizes import RendererSizes


@dataclass(frozen=True)
class LMDMSizes:
    motion_dim: int = 265      # the LivePortrait motion vector (see motion.py)
    cond_dim: int = 1103       # the per-frame condition (see condition.py)
    seq_len: int = 80          # frames per diffusion window
    width: int = 512
    ff_width: int = 1024
    num_layers: int = 8        # FiLM decoder layers
    num_heads: int = 8
    encoder_layers: int = 2    # audio-condition encoder layers (fixed at 2 in the published model)

    @classmethod
    def tiny(cls) -> LMDMSizes:
        """The reduced sizes of the shared reference case ``cases/tiny``."""
        return cls(seq_len=40, width=64, ff_width=128, num_layers=2, num_heads=4)


@dataclass(frozen=True)
class SamplerOptions:
    steps: int = 50                # DDIM sampling steps
    guidance_weight: float = 2.0   # unc + (cond - unc) * w
    train_steps: int = 1000        # length of the cosine schedule
    cosine_s: float = 8e-3
    eta: float = 1.0


PUBLISHED_SIZES = LMDMSizes()
DEFAULT_SAMPLER = SamplerOptions()


@dataclass(frozen=True)
class WindowOptions:
    overlap: int = 10          # rows shared by consecutive windows (official ``overlap_v2``)
    smooth_k: int = 3          # moving-average width over time (``smo_k_d``); <= 1 turns it off
    smooth_dims: int = 202     # scale, angle bins and t are smoothed; the expression is not
    # ``fix_kp_cond``: 0 = carry the generated row; n > 0 = reset to the source every n windows
    fix_cond_every: int = 0
    fix_cond_dims: tuple[int, int] | None = None   # ``fix_kp_cond_dim``: dims kept from the generated row on a reset
    online: bool = False       # the online fuse length is min(overlap, valid)

    def valid(self, seq_len: int) -> int:
        """New rows contributed by each window after the first."""
        return seq_len - self.overlap

    def fuse_length(self, seq_len: int) -> int:
        return min(self.overlap, self.valid(seq_len)) if self.online else self.overlap


@dataclass(frozen=True)
class LiveOptions:
    """How a live session (``float-rt serve``, LiveKit, Pipecat) runs the windows: the official online
    settings (``v0.4_hubert_cfg_trt_online``): 80-frame windows overlapping by 70, so each window
    commits 10 frames (400 ms); 10 DDIM steps; the conditioning frame reset to the source every
    window except for dims [0, 202) (scale, pose bins, translation)."""
    overlap: int = 70
    steps: int = 10
    fix_cond_every: int = 1
    fix_cond_dims: tuple[int, int] | None = (0, 202)

    def windows(self, base: WindowOptions) -> WindowOptions:
        return replace(base, overlap=self.overlap, fix_cond_every=self.fix_cond_every,
                       fix_cond_dims=self.fix_cond_dims, online=True)


# ---------------------------------------------------------------- the family's model config
EMOTION_LABELS = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise", "Contempt")


@dataclass(frozen=True)
class SourceOptions:
    """How the source photo is cropped and described.

    The official crop is a square ``crop_scale`` times the longer side of the face landmarks' box,
    its centre moved by ``crop_vx``/``crop_vy`` times that square's side (negative: up, to take in the
    forehead); we apply the same numbers to OpenCV's face box (no rotation: the box has no angle).
    ``eye_open``/``eye_ball`` stand in for the MediaPipe eye measures the LMDM is conditioned on where
    they cannot be measured (``eyes.py``: without its two ONNX files, or no face found in the crop).
    ``eye_open`` is, per eye, the sum of three eyelid gaps over the eye's width (about 0.9 for relaxed
    open eyes) and ``eye_ball`` the iris offset from the eye's centre (0: looking straight ahead); the
    defaults are those neutral values.
    """
    crop_scale: float = 2.3
    crop_vx: float = 0.0
    crop_vy: float = -0.125
    crop_size: int = 256           # what the extractors take
    eye_open: tuple[float, ...] = (0.9, 0.9)
    eye_ball: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass
class DittoConfig:
    """``configs/ditto*.yaml``: the renderer's and the LMDM's sizes and the offline options."""
    renderer: RendererSizes
    lmdm: LMDMSizes = PUBLISHED_SIZES
    sampler: SamplerOptions = DEFAULT_SAMPLER
    windows: WindowOptions = WindowOptions()
    source: SourceOptions = SourceOptions()
    live: LiveOptions = LiveOptions()
    emotion: str = "Neutral"
    seed: int = 0
    fps: float = 25.0
    sampling_rate: int = 16000
    name: str = "ditto"
    family: str = "ditto"


def ditto_config(raw: dict, name: str) -> DittoConfig:
    """From a parsed YAML file; unknown sections or options are a ValueError naming them."""
    from ..config import build_dataclass
    sections = {"family", "name", "renderer", "lmdm", "sampler", "windows", "source", "live", "generate"}
    unknown = sorted(set(raw) - sections)
    if unknown:
        raise ValueError(f"unknown section(s) of a ditto config: {', '.join(unknown)}")
    windows = dict(raw.get("windows") or {})
    if windows.get("fix_cond_dims") is not None:
        windows["fix_cond_dims"] = tuple(windows["fix_cond_dims"])
    source = {k: tuple(v) if isinstance(v, list) else v for k, v in (raw.get("source") or {}).items()}
    live = dict(raw.get("live") or {})
    if live.get("fix_cond_dims") is not None:
        live["fix_cond_dims"] = tuple(live["fix_cond_dims"])
    live_opts = build_dataclass(LiveOptions, live, "live")
    lmdm = build_dataclass(LMDMSizes, raw.get("lmdm"), "lmdm")
    if not lmdm.seq_len / 2 <= live_opts.overlap < lmdm.seq_len:
        # A live window's first emitted row is row ``overlap`` of the buffer, the first real frame,
        # only when the fuse (min(overlap, valid)) spans the whole new part: overlap >= L/2.
        raise ValueError(f"live.overlap must lie in [{lmdm.seq_len // 2}, {lmdm.seq_len}) for "
                         f"{lmdm.seq_len}-frame windows, got {live_opts.overlap}")
    gen = build_dataclass(_Generate, raw.get("generate"), "generate")
    if gen.emotion not in EMOTION_LABELS:
        raise ValueError(f"generate.emotion {gen.emotion!r} is not one of {', '.join(EMOTION_LABELS)}")
    return DittoConfig(renderer=RendererSizes.from_dict(raw.get("renderer") or {}),
                       lmdm=lmdm, live=live_opts,
                       sampler=build_dataclass(SamplerOptions, raw.get("sampler"), "sampler"),
                       windows=build_dataclass(WindowOptions, windows, "windows"),
                       source=build_dataclass(SourceOptions, source, "source"),
                       emotion=gen.emotion, seed=gen.seed, fps=gen.fps, sampling_rate=gen.sampling_rate,
                       name=str(raw.get("name", name)))


@dataclass(frozen=True)
class _Generate:
    emotion: str = "Neutral"
    seed: int = 0
    fps: float = 25.0
    sampling_rate: int = 16000
