#!/usr/bin/env python
"""GPU benchmark at 512 px: build the engines, then per-stage ms, end-to-end fps and concurrent sessions.

    python scripts/bench_gpu.py --checkpoints CKPT_DIR [--config float-512] [--out .cache/engines-512]

Steps (each printed as it runs):
1. `export onnx` of the five stages (skipped when the folder already matches the weights);
2. `export trt` (fp16, fp32 where needed), when the tensorrt package is importable;
3. per-stage milliseconds on every backend available (torch CUDA fp32/fp16, onnxruntime CUDA, TensorRT);
4. offline end-to-end fps for one 10 s clip at NFE 10 (the paper: 41 fps on its GPU), per backend set;
5. streaming: N sessions batched in one engine, N doubling until a step no longer fits in one
   chunk of audio; prints the largest N served in real time (25 fps per session).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cuda_time(fn, repeat=10) -> float:
    from float_rt.bench import median_time
    return median_time(fn, repeat, torch.device("cuda")) * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", required=True)
    p.add_argument("--config", default="float-512", help="a packaged config name or a YAML file")
    p.add_argument("--out", default=str(ROOT / ".cache" / "engines-512"))
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")

    from export.backends import fingerprint
    from export.graphs import graph_specs
    from export.onnx import export_onnx
    from float_rt.checkpoint import load_model
    from float_rt.config import load_config
    from float_rt.pipeline import FloatPipeline, sampling_with
    from streaming.config import StreamConfig
    from streaming.engine import Engine

    from float_rt.resources import config_path
    cfg = load_config(config_path(a.config))
    dev = torch.device("cuda")
    model, _ = load_model(cfg.model, a.checkpoints, dev)
    out = Path(a.out)
    manifest_path = out / "manifest.json"
    if not manifest_path.is_file() or json.loads(manifest_path.read_text()).get("fingerprint") != fingerprint(model):
        print("[1] exporting ONNX graphs")
        export_onnx(model, cfg.name, out)
    have_trt = True
    try:
        import tensorrt  # noqa: F401
        from export.trt import TrtGraph, build_engines
        if not all("trt" in g for g in json.loads(manifest_path.read_text())["graphs"].values()):
            print("[2] building TensorRT engines")
            build_engines(out)
    except ImportError:
        have_trt = False
        print("[2] tensorrt not installed: TensorRT rows skipped")
    manifest = json.loads(manifest_path.read_text())
    results: dict = {"device": torch.cuda.get_device_name(0), "stages": {}, "offline": {}, "sessions": {}}

    print("[3] per-stage ms (median of 10)")
    from export.backends import OrtGraph
    for spec in graph_specs(model, batch=1):
        inputs = {k: v.to(dev) for k, v in spec.inputs.items()}
        row = {}
        with torch.no_grad():
            row["torch fp32"] = cuda_time(lambda: spec.module(*inputs.values()))
            with torch.autocast("cuda", dtype=torch.float16):
                row["torch fp16 autocast"] = cuda_time(lambda: spec.module(*inputs.values()))
        ort = OrtGraph(out / manifest["graphs"][spec.name]["onnx"], dev)
        row["onnxruntime"] = cuda_time(lambda: ort(**inputs))
        if have_trt:
            trt = TrtGraph(out / manifest["graphs"][spec.name]["trt"], dev)
            row["tensorrt"] = cuda_time(lambda: trt(**inputs))
        results["stages"][spec.name] = row
        print(f"  {spec.name:8s} " + "  ".join(f"{k} {v:7.2f}" for k, v in row.items()))

    print(f"[4] offline end to end, {a.seconds:g} s of audio, nfe 10")
    samples = (np.random.default_rng(0).standard_normal(int(a.seconds * 16000)) * 0.1).astype(np.float32)
    image = torch.rand(1, 3, cfg.model.input_size, cfg.model.input_size) * 2 - 1
    sets = {"torch": {}}
    if have_trt:
        sets["tensorrt (decoder, fmt)"] = {"decoder": "tensorrt", "fmt": "tensorrt", "engines": str(out)}
    for label, backends in sets.items():
        c = dataclasses.replace(cfg, backends=backends)
        pipe = FloatPipeline.from_checkpoints(a.checkpoints, c, "cuda", decode_batch=16)
        iv = pipe.input_values(samples)
        torch.cuda.synchronize()
        t = time.perf_counter()
        r = pipe.encode_reference(image)
        motion = pipe.sample(r, iv, sampling_with(cfg.sampling, nfe=10, emotion="neutral"))
        n = sum(f.shape[0] for f in pipe.decode(r, motion))
        torch.cuda.synchronize()
        fps = n / (time.perf_counter() - t)
        results["offline"][label] = fps
        print(f"  {label:28s} {fps:7.1f} fps")

    print("[5] concurrent real-time sessions (streaming defaults)")
    for label, backends in sets.items():
        engine = Engine.from_checkpoints(a.checkpoints, dataclasses.replace(cfg, backends=backends), StreamConfig(),
                                         "cuda")
        chunk_s = engine.stream_cfg.chunk_frames / cfg.model.fps
        best, n = 0, 1
        while n <= 256:
            sessions = [engine.open_session(image, engine.default_options(emotion="neutral")) for _ in range(n)]
            for s in sessions:
                s.push_audio(samples, 16000)
            engine.step()
            for s in sessions:
                s.take_frames()
            times = []
            for _ in range(5):
                torch.cuda.synchronize()
                t = time.perf_counter()
                engine.step()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
                for s in sessions:
                    s.take_frames()
            for s in sessions:
                s.close()
            step = statistics.median(times)
            print(f"  {label:28s} N={n:4d}  step {step * 1e3:7.1f} ms (chunk {chunk_s * 1e3:.0f} ms)")
            if step > chunk_s:
                break
            best, n = n, n * 2
        results["sessions"][label] = best
        print(f"  {label:28s} sessions in real time: >= {best}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
