"""Deterministic "recipe" weights computed from parameter names (see shared/reference/README.md).

They make every command runnable without the published files; the output is noise.
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor

from .checkpoint import AUDIO_DIR, EMOTION_DIR, write_hf_folder
from .config import EMOTIONS, FloatConfig
from .keys import float_keys, hf_keys
from .model import FloatModel


def recipe_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    n = torch.randn(shape, generator=gen, dtype=torch.float32)
    if key.endswith("modulation.bias") or key.endswith("weight_g"):
        return 1 + 0.1 * n
    if key.endswith("bias"):
        return 0.1 * n
    if key.startswith("motion_autoencoder."):
        return n
    if len(shape) >= 2:
        return n * (1.0 / math.sqrt(math.prod(shape[1:])))
    if key.endswith("weight"):
        return 1 + 0.1 * n
    return 0.1 * n


def hf_configs(cfg: FloatConfig) -> tuple[Wav2Vec2Config, Wav2Vec2Config]:
    audio = Wav2Vec2Config(**{"architectures": ["Wav2Vec2ForCTC"], **cfg.audio_encoder})
    emo_kwargs = {"architectures": ["Wav2Vec2ForSpeechClassification"], "pooling_mode": "mean",
                  "num_labels": len(EMOTIONS), "id2label": dict(enumerate(EMOTIONS)),
                  "label2id": {e: i for i, e in enumerate(EMOTIONS)}, **cfg.emotion_encoder}
    emo_kwargs["id2label"] = {int(k): v for k, v in emo_kwargs["id2label"].items()}
    emotion = Wav2Vec2Config(**emo_kwargs)
    return audio, emotion


def skeleton(cfg: FloatConfig) -> FloatModel:
    """The model's structure without allocating or initialising weights."""
    audio, emotion = hf_configs(cfg)
    with torch.device("meta"):
        return FloatModel(cfg.model, audio, emotion)


def write_recipe_checkpoints(cfg: FloatConfig, out_dir: str | Path, progress=None) -> Path:
    """Write a complete checkpoint folder in the published layout, filled with recipe weights."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = skeleton(cfg)
    audio_cfg, emotion_cfg = hf_configs(cfg)
    steps = [("float", None), ("audio", AUDIO_DIR), ("emotion", EMOTION_DIR)]
    for which, sub in (progress(steps) if progress else steps):
        entries = float_keys(model) if which == "float" else hf_keys(model, which)
        state = {e.official: recipe_tensor(e.official, e.shape) for e in entries}
        if which == "float":
            torch.save(state, str(out_dir / "float.pth"))
            continue
        if which == "audio":  # a real wav2vec2-base-960h download also holds the CTC head
            for k, shape in (("lm_head.weight", (audio_cfg.vocab_size, audio_cfg.hidden_size)),
                             ("lm_head.bias", (audio_cfg.vocab_size,))):
                state[k] = recipe_tensor(k, shape)
        prep = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                        do_normalize=True, return_attention_mask=which == "emotion")
        # The published emotion folder ships pytorch_model.bin only; keep that path exercised.
        write_hf_folder(out_dir / sub, state, audio_cfg if which == "audio" else emotion_cfg, prep,
                        "safetensors" if which == "audio" else "bin")
    write_recipe_marker(out_dir)
    return out_dir


RECIPE_MARKER = "RECIPE_WEIGHTS.txt"


def write_recipe_marker(out_dir: Path) -> None:
    """The file that tells loaders (and people) a folder holds recipe weights."""
    (Path(out_dir) / RECIPE_MARKER).write_text(
        "Deterministic recipe weights written by `float-rt demo-weights`: output is noise, "
        "not a face. Replace with the published checkpoints for real results.\n")
