"""`float-rt export onnx`: write a family's stage graphs, check each against PyTorch, write a manifest."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from float_rt.errors import FloatRTError
from float_rt.model import FloatModel
from float_rt.reference import relative_error

from .backends import MANIFEST, OrtGraph, fingerprint
from .graphs import GraphSpec, graph_specs

OPSET = 18   # FLOAT's graphs: grid_sample needs >= 16; LayerNorm is a single op from 17


def export_graph(spec: GraphSpec, path: Path) -> None:
    with warnings.catch_warnings(), torch.enable_grad():
        # Tracer warnings about Python scalars are expected.  Gradients on while tracing: the CPU fast paths
        # (oneDNN-packed linears, folded batch norms) stand aside then, so the graph holds the plain ops.
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter handles the dynamic batch / length axes directly.
        torch.onnx.export((spec.traced or spec.module).eval(), tuple(spec.inputs.values()), str(path),
                          input_names=list(spec.inputs), output_names=spec.outputs,
                          dynamic_axes=spec.dynamic, opset_version=spec.opset, dynamo=False)


def graph_errors(spec: GraphSpec, path: Path, device: torch.device,
                 inputs: dict | None = None) -> tuple[float, float]:
    """onnxruntime against PyTorch (on ``inputs`` or the examples), worst output:
    (||ort - torch|| / ||torch||, max |ort - torch| / max |torch|)."""
    inputs = inputs or spec.inputs
    with torch.no_grad():
        ref = spec.module(*inputs.values())
    ref = ref if isinstance(ref, (tuple, list)) else [ref]
    got = OrtGraph(path, device)(**inputs)
    rel = max(relative_error(g, r) for g, r in zip(got, ref))
    peak = max(float((g.double().cpu() - r.double().cpu()).abs().max() / r.double().abs().max().clamp_min(1e-12))
               for g, r in zip(got, ref))
    return rel, peak


def check_graph(spec: GraphSpec, path: Path, device: torch.device, inputs: dict | None = None) -> float:
    """Largest relative error of the onnxruntime outputs against PyTorch (on ``inputs`` or the examples)."""
    return graph_errors(spec, path, device, inputs)[0]


def varied_inputs(spec: GraphSpec) -> dict[str, torch.Tensor]:
    """Other sizes along the dynamic axes than the export examples (proves they are dynamic)."""
    if spec.make is not None:
        batch = max((x.shape[0] for k, x in spec.inputs.items() if 0 in spec.dynamic.get(k, {})), default=1)
        return spec.make(batch + 1, 1)
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


def export_specs(specs: list[GraphSpec], out: str | Path, header: dict, log=print) -> dict:
    """Export, check (example inputs and other sizes) and list every graph in ``out/manifest.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = next(iter(specs[0].inputs.values())).device
    manifest = {"format": 1, **header, "opset": max(s.opset for s in specs), "torch": torch.__version__,
                "graphs": {}}
    for spec in specs:
        path = out / f"{spec.name}.onnx"
        t = time.perf_counter()
        export_graph(spec, path)
        err, peak = graph_errors(spec, path, device)
        err2, peak2 = graph_errors(spec, path, device, varied_inputs(spec))
        manifest["graphs"][spec.name] = {
            "onnx": path.name, "opset": spec.opset, "inputs": {k: list(v.shape) for k, v in spec.inputs.items()},
            "outputs": spec.outputs, "dynamic": {k: {str(a): n for a, n in d.items()} for k, d in spec.dynamic.items()},
            "rel_err": max(err, err2), "max_err": max(peak, peak2)}
        if not np.isfinite(max(err, err2)):
            raise FloatRTError(f"the exported {spec.name} graph gives non-finite outputs in onnxruntime")
        log(f"  {spec.name:10s} {path.stat().st_size / 2**20:8.1f} MB  opset {spec.opset}  rel.err vs torch {err:.1e} "
            f"(other sizes {err2:.1e}, max {max(peak, peak2):.1e})  {time.perf_counter() - t:.1f} s")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def export_onnx(model: FloatModel, config_name: str, out: str | Path, log=print) -> dict:
    """FLOAT's five graphs."""
    return export_specs(graph_specs(model), out, {"config": config_name, "fingerprint": fingerprint(model)}, log)
