#!/usr/bin/env python
"""GPU benchmark: build the engines, then per-stage ms, end-to-end fps and concurrent sessions, per family.

    python scripts/bench_gpu.py --checkpoints CKPT_DIR [--config float-512] [--out .cache/engines-float-512]
    python scripts/bench_gpu.py --checkpoints DITTO_DIR --config ditto [--out .cache/engines-ditto]

FLOAT (each step printed as it runs):
1. `export onnx` of the five stages (skipped when the folder already matches the weights);
2. `export trt` (fp16, fp32 where needed), when the tensorrt package is importable;
3. per-stage milliseconds on every backend available (torch CUDA fp32/fp16, onnxruntime CUDA, TensorRT);
4. offline end-to-end fps for one 10 s clip at NFE 10 (the paper: 41 fps on its GPU), per backend set;
5. streaming: N sessions batched in one engine, N doubling until a step no longer fits in one
   chunk of audio; prints the largest N served in real time (25 fps per session).

Ditto:
1. `export onnx` of its seven graphs (skipped when the folder matches the weights);
2. `export trt`, graph by graph: one TensorRT cannot build (its GridSample may not take the warp's 5-D
   volume) is reported and left to onnxruntime;
3. per-graph milliseconds at batch 1 (torch CUDA fp32/fp16 autocast, onnxruntime CUDA, TensorRT);
4. the renderer (warp + decoder) per frame at frame batches 1, 4, 16, torch fp32 and fp16 autocast;
5. the LMDM: one guided step (both predictions, one batched forward) and a whole window at the
   configured DDIM steps, with the real-time factor of a window (its new frames at 25 fps);
6. offline end to end (HuBERT on onnxruntime, windows, rendering) for a clip, in fps;
7. an estimate of concurrent real-time sessions from 4 and 5 (Ditto has no streaming engine yet).
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


def stage_ms(fn, device: torch.device, repeat: int = 10) -> float:
    """Median milliseconds of ``fn`` (CUDA synchronised)."""
    from float_rt.bench import median_time
    return median_time(fn, repeat, device) * 1e3


def cuda_time(fn, repeat=10) -> float:
    return stage_ms(fn, torch.device("cuda"), repeat)


def _log_row(name: str, row: dict) -> None:
    print(f"  {name:12s} " + "  ".join(f"{k} {v:8.2f}" for k, v in row.items()))


def bench_float(cfg, a) -> dict:
    from export.backends import fingerprint
    from export.graphs import graph_specs
    from export.onnx import export_onnx
    from float_rt.checkpoint import load_model
    from float_rt.pipeline import FloatPipeline, sampling_with
    from streaming.config import StreamConfig
    from streaming.engine import Engine

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
    return results


# ---------------------------------------------------------------- Ditto
def ditto_engines(model, cfg, out: Path, log=print) -> dict:
    """The exported folder for these weights (exported when missing or stale), with TensorRT engines
    where the tensorrt package is importable and TensorRT can build them."""
    from export.ditto_graphs import ditto_fingerprint, export_ditto_onnx
    manifest_path = out / "manifest.json"
    if (not manifest_path.is_file()
            or json.loads(manifest_path.read_text()).get("fingerprint") != ditto_fingerprint(model)):
        log("[1] exporting ONNX graphs")
        export_ditto_onnx(model, cfg.name, out, log)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        log("[2] tensorrt not installed: TensorRT rows skipped")
    else:
        from export.trt import build_engines
        if not all("trt" in g or "trt_error" in g for g in json.loads(manifest_path.read_text())["graphs"].values()):
            log("[2] building TensorRT engines")
            build_engines(out, keep_going=True, log_fn=log)
    return json.loads(manifest_path.read_text())


@torch.no_grad()
def ditto_stage_rows(model, out: Path, manifest: dict, device: torch.device, repeat: int = 10) -> dict:
    """Per graph at batch 1: ms on torch fp32 (and fp16 autocast on CUDA), onnxruntime, TensorRT."""
    from export.backends import OrtGraph
    from export.ditto_graphs import graph_specs
    rows = {}
    for spec in graph_specs(model, batch=1):
        inputs = spec.inputs
        row = {"torch fp32": stage_ms(lambda: spec.module(*inputs.values()), device, repeat)}
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                row["torch fp16 autocast"] = stage_ms(lambda: spec.module(*inputs.values()), device, repeat)
        entry = manifest["graphs"][spec.name]
        ort = OrtGraph(out / entry["onnx"], device)
        row["onnxruntime"] = stage_ms(lambda: ort(**inputs), device, repeat)
        if entry.get("trt"):
            from export.trt import TrtGraph
            trt = TrtGraph(out / entry["trt"], device)
            row["tensorrt"] = stage_ms(lambda: trt(**inputs), device, repeat)
        rows[spec.name] = row
        _log_row(spec.name, row)
    return rows


@torch.no_grad()
def ditto_render_rows(model, device: torch.device, batches=(1, 4, 16), repeat: int = 10) -> dict:
    """Warp + decoder (the renderer's per-frame work) in ms per frame, per frame batch."""
    from export.ditto_graphs import example_inputs
    rows = {}
    for n in batches:
        ex = example_inputs(model, frames=n)
        f_s, x_s, x_d = ex["f_s"], ex["x_s"], ex["x_d"]
        row = {"torch fp32": stage_ms(lambda: model.renderer.render(f_s, x_s, x_d), device, repeat) / n}
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                row["torch fp16 autocast"] = stage_ms(lambda: model.renderer.render(f_s, x_s, x_d), device,
                                                      repeat) / n
        rows[n] = row
        _log_row(f"batch {n}", row)
    return rows


@torch.no_grad()
def ditto_lmdm_rows(model, device: torch.device, repeat: int = 10, steps: int | None = None) -> dict:
    """One guided step (ms), one whole window at ``steps`` (default: the config's) and its real-time factor."""
    from export.ditto_graphs import example_inputs
    from float_rt.ditto.ddim import DDIMScheduler
    from float_rt.ditto.sampler import guided_prediction, sample_window
    cfg = model.cfg
    ex = example_inputs(model, frames=1)
    ctx = model.lmdm.audio_context(ex["cond"])
    t = ex["t"].long()
    weight = cfg.sampler.guidance_weight
    scheduler = DDIMScheduler(dataclasses.replace(cfg.sampler, steps=steps or cfg.sampler.steps))
    noises = torch.randn(scheduler.num_noises, *ex["x"].shape[1:], device=device)
    row = {"guided step ms": stage_ms(lambda: guided_prediction(model.lmdm, ex["x"], ex["cond_frame"], ctx, t, weight),
                                      device, repeat),
           "window ms": stage_ms(lambda: sample_window(model.lmdm, scheduler, ex["cond_frame"], ex["cond"], ex["x"],
                                                       noises), device, max(1, repeat // 5))}
    new_frames = cfg.windows.valid(cfg.lmdm.seq_len)
    row["window x real time"] = new_frames / cfg.fps / (row["window ms"] / 1e3)
    _log_row(f"{scheduler.options.steps} steps", row)
    return row


@torch.no_grad()
def ditto_offline_fps(model, seconds: float, steps: int | None = None) -> float:
    """Speech to frames for one clip (HuBERT, windows at ``steps``, rendering), frames per second of wall time."""
    from float_rt.ditto.generate import audio_features, clip_motion, encode_source, render_frames
    dev = model.device
    samples = (np.random.default_rng(0).standard_normal(int(seconds * model.cfg.sampling_rate)) * 0.1).astype(
        np.float32)
    size = model.cfg.source.crop_size
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    ref = encode_source(model, image, emotion=4)
    result = clip_motion(model, ref, audio_features(model, samples), steps=steps)
    n = sum(f.shape[0] for f in render_frames(model, ref, result.motion, result.d0, batch=16))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def realtime_sessions(render_ms_per_frame: dict, window_ms: float, new_frames: int, fps: float) -> int:
    """The largest batch N whose frames (N per 1/fps, rendered N at a time) and motion (one window per
    session every ``new_frames``) fit in real time."""
    best = 0
    for n, ms in sorted(render_ms_per_frame.items()):
        per_second = n * fps * (ms + window_ms / new_frames) / 1e3
        if per_second <= 1.0:
            best = n
    return best


def bench_ditto(cfg, a) -> dict:
    from float_rt.family import family_of
    dev = torch.device("cuda")
    model = family_of(cfg).load(cfg, Path(a.checkpoints), "cuda")
    manifest = ditto_engines(model, cfg, Path(a.out))
    results: dict = {"device": torch.cuda.get_device_name(0), "family": "ditto",
                     "trt_errors": {k: g["trt_error"] for k, g in manifest["graphs"].items() if "trt_error" in g}}
    print("[3] per-graph ms at batch 1 (median of 10)")
    results["stages"] = ditto_stage_rows(model, Path(a.out), manifest, dev)
    print("[4] renderer (warp + decoder) ms per frame")
    results["render_ms_per_frame"] = ditto_render_rows(model, dev)
    print("[5] LMDM")
    results["lmdm"] = ditto_lmdm_rows(model, dev)
    print(f"[6] offline end to end, {a.seconds:g} s of audio, {cfg.sampler.steps} steps")
    results["offline_fps"] = ditto_offline_fps(model, a.seconds)
    print(f"  {results['offline_fps']:7.1f} fps")
    new_frames = cfg.windows.valid(cfg.lmdm.seq_len)
    render = {n: r["torch fp32"] for n, r in results["render_ms_per_frame"].items()}
    results["sessions_estimate"] = realtime_sessions(render, results["lmdm"]["window ms"], new_frames, cfg.fps)
    print(f"[7] real-time sessions (estimate, torch fp32, no streaming engine yet): {results['sessions_estimate']}")
    return results


BENCHES = {"float": bench_float, "ditto": bench_ditto}

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", required=True)
    p.add_argument("--config", default="float-512", help="a packaged config name or a YAML file")
    p.add_argument("--out", default=None, help="engines folder (default .cache/engines-<config>)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from float_rt.config import load_config
    from float_rt.family import family_of
    from float_rt.resources import config_path
    cfg = load_config(config_path(a.config))
    fam = family_of(cfg)
    if fam.name not in BENCHES:
        raise SystemExit(f"no GPU benchmark for the {fam.name} family")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    a.out = Path(a.out or ROOT / ".cache" / f"engines-{cfg.name}")
    results = BENCHES[fam.name](cfg, a)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
