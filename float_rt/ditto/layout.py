"""The published Ditto folder (``digital-avatar/ditto-talkinghead``, ``ditto_pytorch/``), checked by
file names alone.

No torch here: commands check the folder the moment they start, before any heavy import.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError

SUBDIR = "ditto_pytorch"
RENDERER_FILES = ("models/appearance_extractor.pth", "models/motion_extractor.pth", "models/warp_network.pth",
                  "models/decoder.pth", "models/stitch_network.pth")
LMDM_PATH = "models/lmdm_v0.4_hubert.pth"
HUBERT_PATH = "aux_models/hubert_streaming_fix_kv.onnx"
FILES = (*RENDERER_FILES, LMDM_PATH, HUBERT_PATH)   # relative to ditto_pytorch/

LAYOUT = "expected DIR/ditto_pytorch/models/*.pth and DIR/ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx"


def model_folder(folder: str | Path) -> Path:
    """The ``ditto_pytorch`` folder: DIR/ditto_pytorch when it exists, else DIR itself."""
    folder = Path(folder)
    return folder / SUBDIR if (folder / SUBDIR).is_dir() else folder


def repo_root(root: Path) -> Path:
    """The published repo's root for its ``ditto_pytorch`` folder (where ``ditto_onnx/`` sits), or
    the folder itself when it is not called so."""
    return root.parent if root.name == SUBDIR else root


def check_ditto_layout(folder: str | Path) -> Path:
    """Every file the loaders open is there; returns the ``ditto_pytorch`` folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {folder} ({LAYOUT})")
    root = model_folder(folder)
    for rel in FILES:
        if not (root / rel).is_file():
            raise CheckpointError(f"{Path(rel).name} not found: {root / rel} ({LAYOUT})")
    return root
