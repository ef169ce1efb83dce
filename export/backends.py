"""Exported graphs as model stages: the ``float_rt.backends`` plug-in (see pyproject.toml).

`float_rt.backends.apply_backends` hands us the stages its config puts on onnxruntime or
TensorRT; `swap_stages` replaces each with a drop-in runner of the same call signature, so
the offline pipeline and the streaming engine run whichever backend the config names
without knowing about it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from float_rt.audio import pad_to_frames
from float_rt.backends import BackendConfig
from float_rt.errors import FloatRTError
from float_rt.model import FloatModel

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def fingerprint(model: FloatModel) -> str:
    """A cheap identity of the weights and shapes (sums per tensor), to tell engines apart."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(np.float64(p.double().sum().item()).tobytes())
    return h.hexdigest()[:16]


def rebuild_hint() -> str:
    return ("rebuild them with: float-rt export onnx --checkpoints CKPT_DIR --config CONFIG --out ENGINES_DIR"
            " (then `float-rt export trt --onnx ENGINES_DIR` for TensorRT)")


def read_manifest(folder: Path, model: FloatModel) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise FloatRTError(f"no exported engines in {folder} ({MANIFEST} missing); {rebuild_hint()}")
    manifest = json.loads(path.read_text())
    want = fingerprint(model)
    if manifest.get("fingerprint") != want:
        raise FloatRTError(f"engines in {folder} were exported from other weights or another config "
                           f"(fingerprint {manifest.get('fingerprint')} != {want}); {rebuild_hint()}")
    return manifest


# ---------------------------------------------------------------- graph runners
class OrtGraph:
    """One ONNX graph in onnxruntime (CUDA provider where the device is CUDA and it is available)."""

    def __init__(self, path: Path, device: torch.device):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = torch.get_num_threads()
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.device = device

    def __call__(self, **inputs: torch.Tensor) -> list[torch.Tensor]:
        feed = {k: inputs[k].detach().float().cpu().numpy() for k in self.inputs}
        return [torch.from_numpy(o).to(self.device) for o in self.session.run(None, feed)]


def open_graph(kind: str, folder: Path, stage: str, manifest: dict, device: torch.device):
    entry = manifest["graphs"].get(stage)
    if entry is None:
        raise FloatRTError(f"{folder} has no {stage} graph")
    if kind == "onnxruntime":
        path = folder / entry["onnx"]
        if not path.is_file():
            raise FloatRTError(f"missing {path}; {rebuild_hint()}")
        return OrtGraph(path, device)
    from .trt import TrtGraph
    plan = entry.get("trt")
    if not plan or not (folder / plan).is_file():
        raise FloatRTError(f"no TensorRT engine for {stage} in {folder}; build it with: "
                           f"float-rt export trt --onnx {folder}")
    return TrtGraph(folder / plan, device)


# ---------------------------------------------------------------- drop-in stages
class DecoderStage(nn.Module):
    def __init__(self, graph, num_feats: int):
        super().__init__()
        self.graph, self.names = graph, [f"feat_{i}" for i in range(num_feats)]

    def forward(self, latent: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.graph(latent=latent, **dict(zip(self.names, feats)))[0]


class FMTStage(nn.Module):
    def __init__(self, graph, base: nn.Module):
        super().__init__()
        self.graph = graph
        self.pos_embed = base.pos_embed   # the model reads its device from here

    def forward(self, t, x, wa, wr, we, prev_x, prev_wa):
        t = t.reshape(1).to(x.dtype)
        return self.graph(t=t, x=x, wa=wa, wr=wr, we=we, prev_x=prev_x, prev_wa=prev_wa)[0]


class AudioStage(nn.Module):
    def __init__(self, graph):
        super().__init__()
        self.graph = graph

    def encode_frames(self, samples: torch.Tensor) -> torch.Tensor:
        return self.graph(samples=samples)[0]

    def forward(self, input_values, num_frames, sampling_rate, fps):
        input_values = pad_to_frames(input_values, num_frames, sampling_rate, fps)
        return self.encode_frames(input_values[:, :int(num_frames * sampling_rate / fps)])


class EmotionStage(nn.Module):
    def __init__(self, graph):
        super().__init__()
        self.graph = graph

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        return self.graph(samples=samples)[0]


def swap_stages(model: FloatModel, cfg: BackendConfig, stages: dict[str, str], device: torch.device) -> None:
    """Put ``stages`` (stage -> "onnxruntime" | "tensorrt") on the graphs in ``cfg.engines``."""
    if not cfg.engines:
        raise FloatRTError("onnxruntime/tensorrt backends need the engines folder (backends.engines / --engines); "
                           + rebuild_hint())
    folder = Path(cfg.engines)
    manifest = read_manifest(folder, model)      # before torch stages change the weights' layout
    num_feats = len(model.motion.decoder.to_flows)
    for stage, kind in stages.items():
        graph = open_graph(kind, folder, stage, manifest, device)
        if stage == "decoder":
            model.motion.decoder = DecoderStage(graph, num_feats)
        elif stage == "fmt":
            model.fmt = FMTStage(graph, model.fmt)
        elif stage == "audio":
            model.audio = AudioStage(graph)
        elif stage == "emotion":
            model.emotion = EmotionStage(graph)
        elif stage == "encoder":
            model.motion.encode_reference = _encoder_stage(graph)
        log.info("stage %s runs on %s", stage, kind)


def _encoder_stage(graph):
    @torch.no_grad()
    def encode_reference(image: torch.Tensor):
        s_r, r_s, *feats = graph(image=image)
        return s_r, None, r_s, feats
    return encode_reference
