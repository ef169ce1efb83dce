"""The official ``checkpoints/`` layout, and its check by file names alone.

Nothing here imports torch: the commands check a folder the moment they start, so a wrong
path is one line at once, before the seconds of heavy imports and model set-up.
"""
from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError

FLOAT_FILES = ("float.safetensors", "float.pth")
AUDIO_DIR = "wav2vec2-base-960h"
EMOTION_DIR = "wav2vec-english-speech-emotion-recognition"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")

LAYOUT = f"""expected layout:
  CKPT_DIR/float.pth (or float.safetensors)
  CKPT_DIR/{AUDIO_DIR}/config.json + model.safetensors or pytorch_model.bin
  CKPT_DIR/{EMOTION_DIR}/config.json + model.safetensors or pytorch_model.bin"""


def missing(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{what} not found: {path}\n{LAYOUT}")


def find(folder: Path, names: tuple[str, ...], what: str) -> Path:
    """The first of ``names`` present in ``folder``."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise missing(folder / names[-1], what)


def check_layout(ckpt_dir: str | Path) -> Path:
    """Every file the loader will open is there (names only; the loader checks keys and shapes)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise missing(ckpt_dir, "checkpoint folder")
    find(ckpt_dir, FLOAT_FILES, "float.pth")
    for sub in (AUDIO_DIR, EMOTION_DIR):
        find(ckpt_dir / sub, ("config.json",), f"{sub} config")
        find(ckpt_dir / sub, HF_WEIGHTS, "weights file")
    return ckpt_dir
