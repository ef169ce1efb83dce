"""Configuration dataclasses, loaded from ``configs/*.yaml``.

``ModelConfig`` mirrors the options of the published FLOAT model; the defaults are
the published values (``configs/float-512.yaml``).  ``channel_base``/``channel_max``
scale the motion autoencoder's widths (width at resolution r is
``min(channel_max, channel_base // r)``); the published network uses 16384/512.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


@dataclass
class ModelConfig:
    input_size: int = 512
    dim_w: int = 512          # motion latent / style size
    dim_a: int = 512          # projected audio feature size
    dim_e: int = 7            # emotion classes
    dim_m: int = 20           # motion directions
    dim_h: int = 1024         # FMT hidden size
    fmt_depth: int = 8
    num_heads: int = 8
    mlp_ratio: float = 4.0
    attention_window: int = 2
    num_prev_frames: int = 10
    num_frames: int = 50      # frames per window (wav2vec_sec * fps)
    fps: float = 25.0
    sampling_rate: int = 16000
    only_last_features: bool = False
    channel_base: int = 16384
    channel_max: int = 512

    def width(self, resolution: int) -> int:
        return min(self.channel_max, self.channel_base // resolution)

    @property
    def window(self) -> int:
        return self.num_prev_frames + self.num_frames

    @property
    def samples_per_frame(self) -> int:
        return int(round(self.sampling_rate / self.fps))


@dataclass
class SamplingConfig:
    # ``nfe`` follows the official meaning: points of the Euler time grid
    # ``linspace(0, 1, nfe)``, i.e. nfe - 1 vector-field evaluations per window.
    nfe: int = 10
    a_cfg_scale: float = 2.0
    e_cfg_scale: float = 1.0
    r_cfg_scale: float = 1.0
    seed: int = 15
    fix_noise_seed: bool = True
    emotion: str | None = None  # None: predicted from speech

    @property
    def guided(self) -> bool:
        return self.a_cfg_scale != 1.0 or self.e_cfg_scale != 1.0 or self.r_cfg_scale != 1.0


@dataclass
class FloatConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # transformers.Wav2Vec2Config kwargs, used only to write recipe (demo) weights;
    # real checkpoints carry their own config.json.
    audio_encoder: dict[str, Any] = field(default_factory=dict)
    emotion_encoder: dict[str, Any] = field(default_factory=dict)
    # Per-stage backends (float_rt/backends.py:BackendConfig): torch, onnxruntime or tensorrt.
    backends: dict[str, Any] = field(default_factory=dict)
    name: str = "float"
    family: str = "float"


def build_dataclass(cls, data: dict | None, what: str | None = None, **overrides):
    """``cls(**data)`` with ``overrides`` that are not None; unknown keys are a ValueError naming them."""
    data = dict(data or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {what or cls.__name__} option(s): {', '.join(unknown)}")
    return cls(**data)


def load_config(path: str | Path):
    """The model config of a YAML file, of the family its ``family:`` field names (default float)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a config (a YAML mapping expected)")
    from .family import family_named
    try:
        return family_named(raw.get("family", "float")).parse_config(raw, path.stem)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def float_config(raw: dict, name: str) -> FloatConfig:
    """FLOAT's config from a parsed YAML mapping."""
    unknown = sorted(set(raw) - {"model", "sampling", "audio_encoder", "emotion_encoder", "backends", "name",
                                 "family"})
    if unknown:
        raise ValueError(f"unknown section(s): {', '.join(unknown)}")
    return FloatConfig(
        model=build_dataclass(ModelConfig, raw.get("model")),
        sampling=build_dataclass(SamplingConfig, raw.get("sampling")),
        audio_encoder=dict(raw.get("audio_encoder") or {}),
        emotion_encoder=dict(raw.get("emotion_encoder") or {}),
        backends=dict(raw.get("backends") or {}),
        name=str(raw.get("name", name)),
    )


def config_from_official(options: dict, audio_encoder: dict, emotion_encoder: dict) -> FloatConfig:
    """Build a config from the official option names (as in a reference case)."""
    o = options
    model = ModelConfig(
        input_size=int(o["input_size"]), dim_w=int(o["dim_w"]), dim_a=int(o["dim_a"]),
        dim_e=int(o["dim_e"]), dim_m=int(o["dim_m"]), dim_h=int(o["dim_h"]),
        fmt_depth=int(o["fmt_depth"]), num_heads=int(o["num_heads"]),
        mlp_ratio=float(o["mlp_ratio"]), attention_window=int(o["attention_window"]),
        num_prev_frames=int(o["num_prev_frames"]),
        num_frames=int(float(o["wav2vec_sec"]) * float(o["fps"])),
        fps=float(o["fps"]), sampling_rate=int(o["sampling_rate"]),
        only_last_features=bool(o.get("only_last_features", False)),
    )
    sampling = SamplingConfig(
        nfe=int(o["nfe"]), a_cfg_scale=float(o["a_cfg_scale"]),
        e_cfg_scale=float(o["e_cfg_scale"]), r_cfg_scale=float(o.get("r_cfg_scale", 1.0)),
        seed=int(o["seed"]), fix_noise_seed=bool(o.get("fix_noise_seed", True)),
        emotion=o.get("emo"),
    )
    return FloatConfig(model=model, sampling=sampling, audio_encoder=dict(audio_encoder),
                       emotion_encoder=dict(emotion_encoder), name="case")
