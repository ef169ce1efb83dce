"""`float-rt export onnx`: write the five stage graphs, check each against PyTorch, write a manifest."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch

from float_rt.model import FloatModel
from float_rt.reference import relative_error

from .backends import MANIFEST, OrtGraph, fingerprint
from .graphs import GraphSpec, graph_specs

OPSET = 18   # grid_sample needs >= 16; LayerNorm is a single op from 17


def export_graph(spec: GraphSpec, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # tracer warnings about Python scalars in the model
        # The TorchScript-based exporter handles the dynamic batch / length axes directly.
        torch.onnx.export(spec.module.eval(), tuple(spec.inputs.values()), str(path),
                          input_names=list(spec.inputs), output_names=spec.outputs,
                          dynamic_axes=spec.dynamic, opset_version=OPSET, dynamo=False)


def check_graph(spec: GraphSpec, path: Path, device: torch.device, inputs: dict | None = None) -> float:
    """Largest relative error of the onnxruntime outputs against PyTorch (on ``inputs`` or the examples)."""
    inputs = inputs or spec.inputs
    with torch.no_grad():
        ref = spec.module(*inputs.values())
    ref = ref if isinstance(ref, (tuple, list)) else [ref]
    got = OrtGraph(path, device)(**inputs)
    return max(relative_error(g, r) for g, r in zip(got, ref))


def varied_inputs(spec: GraphSpec) -> dict[str, torch.Tensor]:
    """Other sizes along the dynamic axes than the export examples (proves they are dynamic)."""
    out = {}
    for name, x in spec.inputs.items():
        shape = list(x.shape)
        for axis in spec.dynamic.get(name, {}):
            shape[axis] = shape[axis] + (1 if axis == 0 else 640 * 7)
        if name.startswith("feat_") or name == "t":
            out[name] = x      # the flow time, and reference features kept at batch 1 (broadcast)
        elif name == "image":
            out[name] = torch.randn(shape, device=x.device).clamp(-1, 1)
        elif name == "we":
            out[name] = torch.softmax(torch.randn(shape, device=x.device), -1)
        else:
            out[name] = torch.randn(shape, device=x.device)
    return out


def export_onnx(model: FloatModel, config_name: str, out: str | Path, log=print) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = model.device
    manifest = {"format": 1, "config": config_name, "fingerprint": fingerprint(model), "opset": OPSET,
                "torch": torch.__version__, "graphs": {}}
    for spec in graph_specs(model):
        path = out / f"{spec.name}.onnx"
        t = time.perf_counter()
        export_graph(spec, path)
        err = check_graph(spec, path, device)
        err2 = check_graph(spec, path, device, varied_inputs(spec))
        manifest["graphs"][spec.name] = {
            "onnx": path.name, "inputs": {k: list(v.shape) for k, v in spec.inputs.items()},
            "outputs": spec.outputs, "dynamic": {k: {str(a): n for a, n in d.items()} for k, d in spec.dynamic.items()},
            "rel_err": max(err, err2)}
        log(f"  {spec.name:8s} {path.stat().st_size / 2**20:8.1f} MB  rel.err vs torch {err:.1e} "
            f"(other sizes {err2:.1e})  {time.perf_counter() - t:.1f} s")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest
