"""HuBERT audio features at 25 Hz: chunking (offline and online), the ONNX runner, a stand-in ONNX.

Ditto runs HuBERT on fixed 6480-sample chunks (``hubert_streaming_fix_kv.onnx``): 3 frames of left
context, 5 frames kept, 2 frames of right context, at 640 samples per 25 Hz frame, plus 80 samples
so the 50 Hz encoder yields 20 outputs.  Of those 20, the 10 that belong to the 5 kept frames are
averaged in pairs.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError

SAMPLE_RATE = 16000
FPS = 25
HOP = SAMPLE_RATE // FPS   # 640 samples per motion frame
FEATURE_DIM = 1024
INPUT_NAME = "input_values"


@dataclass(frozen=True)
class ChunkSpec:
    left: int = 3    # frames of context before the kept ones
    valid: int = 5   # frames kept per chunk
    right: int = 2   # frames of context after

    @property
    def samples(self) -> int:
        return (self.left + self.valid + self.right) * HOP + 80   # 6480

    @property
    def encoder_frames(self) -> int:
        return 2 * (self.left + self.valid + self.right)          # 20 outputs at 50 Hz


DITTO_CHUNK = ChunkSpec()


def num_frames(num_samples: int) -> int:
    """Motion frames for a clip: ceil(seconds * 25), computed as the official code does."""
    return math.ceil(num_samples / SAMPLE_RATE * FPS)


def _frame_offset(i: int) -> int:
    # The official offset is int(i * 0.04 * 16000) in floating point; it equals 640 * i only
    # for i < 1615 and is one sample short for some longer offsets, so keep the same arithmetic.
    return int(i * 0.04 * SAMPLE_RATE)


def offline_chunks(waveform, spec: ChunkSpec = DITTO_CHUNK) -> tuple[np.ndarray, int]:
    """Every chunk fed to HuBERT for a whole clip, (C, 6480), and the clip's frame count.

    The audio gets ``samples - (valid + right) * 640`` zeros before it (so the first kept frame is
    frame 0) and a whole chunk of zeros after it; chunk j starts at frame 5j.
    """
    audio = np.asarray(waveform, dtype=np.float32).reshape(-1)
    n = num_frames(len(audio))
    before = spec.samples - (spec.valid + spec.right) * HOP
    padded = np.concatenate([np.zeros(before, np.float32), audio, np.zeros(spec.samples, np.float32)])
    starts = [_frame_offset(i) for i in range(0, n, spec.valid)]
    if not starts:
        return np.zeros((0, spec.samples), np.float32), n
    return np.stack([padded[s:s + spec.samples] for s in starts]), n


def online_chunks(waveform, spec: ChunkSpec = DITTO_CHUNK) -> list[np.ndarray]:
    """The chunks a live stream sends, in order: the audio behind ``left`` frames of silence, cut
    every ``valid`` frames, the last one zero-padded.  (Its features sit 80 samples later than the
    offline ones.)"""
    audio = np.concatenate([np.zeros(spec.left * HOP, np.float32), np.asarray(waveform, np.float32).reshape(-1)])
    out = []
    for s in range(0, len(audio), spec.valid * HOP):
        chunk = audio[s:s + spec.samples]
        if len(chunk) < spec.samples:
            chunk = np.pad(chunk, (0, spec.samples - len(chunk)))
        out.append(chunk)
    return out


def chunk_features(encoded, spec: ChunkSpec = DITTO_CHUNK) -> np.ndarray:
    """One chunk's (20, 1024) encoder output -> its (5, 1024) features at 25 Hz."""
    enc = np.asarray(encoded, dtype=np.float32)
    end = enc.shape[0] - 2 * spec.right
    kept = enc[end - 2 * spec.valid:end]
    return kept.reshape(spec.valid, 2, -1).mean(axis=1)


def offline_features(waveform, encode: Callable[[np.ndarray], np.ndarray], spec: ChunkSpec = DITTO_CHUNK) -> np.ndarray:
    """(N, 1024) features of a whole clip; ``encode`` maps one (6480,) chunk to its (20, 1024) output."""
    chunks, n = offline_chunks(waveform, spec)
    feats = [chunk_features(encode(c), spec) for c in chunks]
    if not feats:
        return np.zeros((0, FEATURE_DIM), np.float32)
    return np.concatenate(feats)[:n]


class HubertRunner:
    """``hubert_streaming_fix_kv.onnx`` on onnxruntime: (6480,) float32 -> (20, 1024)."""

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"HuBERT ONNX file not found: {path}")
        import onnxruntime as ort  # optional at import time of the package
        self.path = path
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for unreadable models
            raise CheckpointError(f"cannot load {path}: {' '.join(str(exc).split())[:300]}") from exc
        inputs = [i.name for i in self.session.get_inputs()]
        if INPUT_NAME not in inputs:
            raise CheckpointError(f"{path}: no input {INPUT_NAME!r} (inputs: {', '.join(inputs)}); "
                                  "expected Ditto's hubert_streaming_fix_kv.onnx")

    def __call__(self, chunk) -> np.ndarray:
        x = np.asarray(chunk, dtype=np.float32).reshape(1, -1)
        return self.session.run(None, {INPUT_NAME: x})[0]


def write_stub_onnx(path: str | Path, weight: torch.Tensor, bias: torch.Tensor, spec: ChunkSpec = DITTO_CHUNK) -> Path:
    """A stand-in with the published interface: tanh(Conv1d(1, 1024, 400, stride 320)(x)) as (20, 1024).

    Used by the reference cases instead of the real HuBERT (recipe keys ``hubert_stub.conv.*``).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = weight.detach().to(torch.float32).cpu().numpy()
    b = bias.detach().to(torch.float32).cpu().numpy()
    channels, _, kernel = w.shape
    stride = 320
    frames = (spec.samples - kernel) // stride + 1
    inits = [numpy_helper.from_array(w, "conv_weight"), numpy_helper.from_array(b, "conv_bias"),
             numpy_helper.from_array(np.array([1, 1, spec.samples], np.int64), "as_signal"),
             numpy_helper.from_array(np.array([channels, frames], np.int64), "as_matrix")]
    nodes = [helper.make_node("Reshape", [INPUT_NAME, "as_signal"], ["signal"]),
             helper.make_node("Conv", ["signal", "conv_weight", "conv_bias"], ["conv"], kernel_shape=[kernel],
                              strides=[stride]),
             helper.make_node("Tanh", ["conv"], ["act"]),
             helper.make_node("Reshape", ["act", "as_matrix"], ["act2d"]),
             helper.make_node("Transpose", ["act2d"], ["encoding_out"], perm=[1, 0])]
    graph = helper.make_graph(
        nodes, "hubert_stub",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, spec.samples])],
        [helper.make_tensor_value_info("encoding_out", TensorProto.FLOAT, [frames, channels])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 8)   # loadable by older onnxruntime builds too
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path
