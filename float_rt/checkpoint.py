"""Loading and writing checkpoint folders in the official ``checkpoints/`` layout.

    DIR/float.pth                                   (or float.safetensors, see ``convert``)
    DIR/wav2vec2-base-960h/                         config.json, preprocessor_config.json,
                                                    model.safetensors or pytorch_model.bin
    DIR/wav2vec-english-speech-emotion-recognition/ likewise
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor

from .config import ModelConfig
from .errors import CheckpointError
from .layout import AUDIO_DIR, EMOTION_DIR, FLOAT_FILES, HF_WEIGHTS, check_layout, find, missing
from .keys import KeyEntry, alternative_names, float_keys, hf_keys
from .model import FloatModel

log = logging.getLogger(__name__)

@dataclass
class LoadReport:
    ignored: dict[str, list[str]] = field(default_factory=dict)   # file -> extra keys
    used: dict[str, int] = field(default_factory=dict)            # file -> tensors taken from it

    def summary(self) -> str:
        parts = [f"{name}: {len(keys)} unused key(s) ignored ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                 for name, keys in self.ignored.items() if keys]
        return "; ".join(parts)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))  # memory-mapped
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state


# wav2vec2 config.json fields that fix the network we build: each must be present.  Published
# folders (and their mirrors) carry many more; the rest are training options and are ignored.
W2V_REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim",
                "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm", "do_stable_layer_norm",
                "num_conv_pos_embeddings", "num_conv_pos_embedding_groups")
# Used when present; transformers' defaults are the published values otherwise.
W2V_OPTIONAL = ("hidden_act", "feat_extract_activation", "layer_norm_eps")
PREPROCESSOR_FIELDS = ("feature_size", "sampling_rate", "padding_value", "do_normalize", "return_attention_mask")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data


def hf_config(folder: Path, classifier: bool = False) -> Wav2Vec2Config:
    """The wav2vec2 config of a published folder, read tolerantly.

    Unknown or irrelevant fields are ignored (a mirror's uploader may have edited the file);
    a field the network needs is an error naming it when it is missing or malformed.
    """
    if not folder.is_dir():
        raise missing(folder, "folder")
    path = folder / "config.json"
    if not path.is_file():
        raise missing(path, "config.json")
    raw = _read_json(path)
    absent = [k for k in W2V_REQUIRED if k not in raw]
    kwargs = {k: raw[k] for k in (*W2V_REQUIRED, *W2V_OPTIONAL) if k in raw}
    if classifier:
        if isinstance(raw.get("id2label"), dict):
            kwargs["id2label"] = {int(k): str(v) for k, v in raw["id2label"].items()}
        elif "num_labels" in raw:
            kwargs["num_labels"] = raw["num_labels"]
        else:
            absent.append("id2label (or num_labels)")
        if raw.get("pooling_mode", "mean") != "mean":
            raise CheckpointError(f"{path}: pooling_mode {raw['pooling_mode']!r} is not supported (FLOAT uses 'mean')")
    if absent:
        raise CheckpointError(f"{path}: missing field(s) {', '.join(absent)}")
    try:
        return Wav2Vec2Config(**kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers' strict validation names the field
        raise CheckpointError(f"{path}: {' '.join(str(exc).split())}") from exc


def feature_extractor(folder: Path) -> Wav2Vec2FeatureExtractor:
    """The folder's input preprocessor (16 kHz, normalised), read as tolerantly as its config."""
    path = folder / "preprocessor_config.json"
    kwargs = {"feature_size": 1, "sampling_rate": 16000, "padding_value": 0.0, "do_normalize": True,
              "return_attention_mask": False}
    if path.is_file():
        raw = _read_json(path)
        kwargs.update({k: raw[k] for k in PREPROCESSOR_FIELDS if k in raw})
    else:
        log.warning("%s has no preprocessor_config.json; using 16 kHz with normalisation", folder)
    if kwargs["sampling_rate"] != 16000:
        raise CheckpointError(f"{path}: sampling_rate {kwargs['sampling_rate']!r}; the model takes 16000 Hz audio")
    return Wav2Vec2FeatureExtractor(**kwargs)


def _apply(entries: list[KeyEntry], state: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
           source: Path) -> list[str]:
    """Copy tensors named by ``entries`` from ``state`` into ``target``; return the unused keys."""
    problems, used = [], set()
    for e in entries:
        name = next((n for n in alternative_names(e.official) if n in state), None)
        if name is None:
            if not e.optional:
                problems.append(f"missing key {e.official} (expected shape {list(e.shape)})")
            continue
        used.add(name)
        tensor = state[name]
        if tuple(tensor.shape) != e.shape:
            problems.append(f"key {e.official}: expected shape {list(e.shape)}, file has {list(tensor.shape)}")
            continue
        if e.ours is not None:
            target[e.ours] = tensor.reshape(target[e.ours].shape)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(f"{source}: " + "; ".join(problems[:5]) + more +
                              " - does the --config match these weights?")
    return sorted(set(state) - used)


def build_model(cfg: ModelConfig, ckpt_dir: Path) -> FloatModel:
    return FloatModel(cfg, hf_config(ckpt_dir / AUDIO_DIR), hf_config(ckpt_dir / EMOTION_DIR, classifier=True))


def _fill(model: FloatModel, ckpt_dir: Path, target: dict[str, torch.Tensor]) -> LoadReport:
    """The loader's check: every tensor of the three files against ``model``, copied into ``target``."""
    float_path = find(ckpt_dir, FLOAT_FILES, "float.pth")
    report = LoadReport()
    files = [(float_path, float_keys(model))]
    for which, sub in (("audio", AUDIO_DIR), ("emotion", EMOTION_DIR)):
        files.append((find(ckpt_dir / sub, HF_WEIGHTS, "weights file"), hf_keys(model, which)))
    for path, entries in files:
        name = path.relative_to(ckpt_dir).as_posix()
        report.ignored[name] = _apply(entries, read_tensors(path), target, path)
        report.used[name] = sum(e.ours is not None for e in entries)
    return report


def _folder(ckpt_dir: str | Path) -> Path:
    return check_layout(ckpt_dir)


def load_model(cfg: ModelConfig, ckpt_dir: str | Path, device: str | torch.device = "cpu") -> tuple[FloatModel, LoadReport]:
    """Build FloatModel for ``cfg`` and fill it exactly from a checkpoint folder."""
    ckpt_dir = _folder(ckpt_dir)
    model = build_model(cfg, ckpt_dir)
    target = model.state_dict()
    report = _fill(model, ckpt_dir, target)
    model.load_state_dict(target)
    model.motion.direction.invalidate()
    if report.summary():
        log.info(report.summary())
    return model.to(device).eval(), report


def check_folder(cfg: ModelConfig, ckpt_dir: str | Path) -> LoadReport:
    """The loader's key and shape check of a folder, without allocating the model (files memory-mapped)."""
    ckpt_dir = _folder(ckpt_dir)
    with torch.device("meta"):
        model = build_model(cfg, ckpt_dir)
    return _fill(model, ckpt_dir, model.state_dict())


def official_state(model: FloatModel, which: str) -> dict[str, torch.Tensor]:
    """The model's tensors under the published names ('float', 'audio' or 'emotion')."""
    entries = float_keys(model) if which == "float" else hf_keys(model, which)
    params = model.state_dict()
    return {e.official: (params[e.ours].reshape(e.shape) if e.ours else torch.zeros(e.shape)).contiguous()
            for e in entries}


def write_hf_folder(folder: Path, state: dict[str, torch.Tensor], config: Wav2Vec2Config,
                    preprocessor: Wav2Vec2FeatureExtractor, fmt: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    preprocessor.save_pretrained(str(folder))
    for stale in HF_WEIGHTS:
        (folder / stale).unlink(missing_ok=True)
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
                  metadata={"format": "pt"})
    else:
        torch.save(state, str(folder / "pytorch_model.bin"))


def convert(ckpt_dir: str | Path, out_dir: str | Path) -> Path:
    """Rewrite a checkpoint folder as safetensors (memory-mapped, faster to load)."""
    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    float_path = find(ckpt_dir, FLOAT_FILES, "float.pth")
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in read_tensors(float_path).items() if isinstance(v, torch.Tensor)}
    save_file(state, str(out_dir / "float.safetensors"), metadata={"format": "pt"})
    for sub in (AUDIO_DIR, EMOTION_DIR):
        src = find(ckpt_dir / sub, HF_WEIGHTS, "weights file")
        dst = out_dir / sub
        dst.mkdir(exist_ok=True)
        for name in ("config.json", "preprocessor_config.json"):
            if (ckpt_dir / sub / name).is_file():
                shutil.copy2(ckpt_dir / sub / name, dst / name)
        tensors = {k: v.contiguous() for k, v in read_tensors(src).items()}
        save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return out_dir
