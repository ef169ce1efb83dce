"""``float-rt`` command line."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import EMOTIONS
from .errors import FloatRTError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIGS / "float-512.yaml"
DEFAULT_STREAM_CONFIG = CONFIGS / "stream.yaml"


def _config(path):
    from .config import load_config
    try:
        return load_config(path)
    except (OSError, ValueError) as exc:
        raise FloatRTError(str(exc)) from exc


def _with_backends(cfg, a):
    """--engines DIR and --backend STAGE=KIND override the config's backends section."""
    extra = {}
    for item in getattr(a, "backend", None) or []:
        stage, _, kind = item.partition("=")
        if not kind:
            raise FloatRTError(f"--backend takes STAGE=KIND (e.g. decoder=onnxruntime), got {item!r}")
        extra[stage] = kind
    if getattr(a, "engines", None):
        extra["engines"] = a.engines
    cfg.backends = {**cfg.backends, **extra}
    return cfg


def _backend_args(p) -> None:
    p.add_argument("--engines", default=None, help="folder from `float-rt export onnx` (and `export trt`)")
    p.add_argument("--backend", action="append", default=None, metavar="STAGE=KIND",
                   help="encoder|decoder|fmt|audio|emotion = torch|onnxruntime|tensorrt (repeatable)")


def cmd_generate(a) -> None:
    from .media import load_audio, load_image, prepare_reference
    from .pipeline import FloatPipeline, sampling_with

    cfg = _with_backends(_config(a.config), a)
    img = load_image(a.ref)
    samples = load_audio(a.audio, cfg.model.sampling_rate)
    image = prepare_reference(img, cfg.model.input_size, crop=not a.no_crop)
    pipe = FloatPipeline.from_checkpoints(a.checkpoints, cfg, a.device, decode_batch=a.decode_batch)
    sampling = sampling_with(cfg.sampling, emotion=a.emo, a_cfg_scale=a.a_cfg_scale,
                             e_cfg_scale=a.e_cfg_scale, nfe=a.nfe, seed=a.seed)
    n = pipe.generate(image, samples, a.out, sampling)
    print(f"wrote {a.out}: {n} frames at {cfg.model.fps:g} fps, {len(samples) / cfg.model.sampling_rate:.2f} s of audio")


def cmd_demo_weights(a) -> None:
    from tqdm.auto import tqdm

    from .recipe import write_recipe_checkpoints
    cfg = _config(a.config)
    out = write_recipe_checkpoints(cfg, a.out, progress=lambda it: tqdm(it, desc="writing", unit="file"))
    print(f"wrote recipe weights for {cfg.name} to {out}\n"
          "note: these are deterministic stand-in weights - every output will be noise, not a face.")


def cmd_reference(a) -> None:
    import numpy as np

    from .reference import compare, run_case
    ours = run_case(a.case_dir)
    np.savez(a.out, **ours)
    print(f"wrote {a.out} ({', '.join(sorted(ours))})")
    expected = Path(a.case_dir) / "expected.npz"
    if expected.is_file():
        failed = 0
        for key, (err, tol, ok) in compare(ours, dict(np.load(expected))).items():
            failed += not ok
            print(f"  {key:12s} rel.err {err:.2e}  tol {tol:.0e}  {'ok' if ok else 'FAIL'}")
        if failed:
            raise SystemExit(1)


def cmd_convert(a) -> None:
    from .checkpoint import convert
    print(f"wrote {convert(a.ckpt_dir, a.out)}")


def cmd_bench(a) -> None:
    import torch

    from .bench import run_bench, write_json
    from .pipeline import FloatPipeline
    cfg = _config(a.config)
    if a.threads:
        torch.set_num_threads(a.threads)
    pipe = FloatPipeline.from_checkpoints(a.checkpoints, cfg, a.device, decode_batch=a.decode_batch)
    res = run_bench(pipe, cfg, repeat=a.repeat, decode_batch=a.decode_batch, e2e_seconds=a.seconds)
    if a.json:
        write_json(res, a.json)


def _engine(a):
    from streaming.config import load_stream_config
    from streaming.engine import Engine
    cfg = _with_backends(_config(a.config), a)
    try:
        scfg = load_stream_config(a.stream_config, chunk_frames=a.chunk_frames, lookahead_ms=a.lookahead_ms,
                                  left_context_ms=a.left_context_ms, nfe=a.nfe)
    except (OSError, ValueError) as exc:
        raise FloatRTError(str(exc)) from exc
    return cfg, Engine.from_checkpoints(a.checkpoints, cfg, scfg, a.device)


def cmd_stream(a) -> None:
    import asyncio

    import numpy as np
    from tqdm.auto import tqdm

    from streaming.run import stream_file

    from .media import load_audio, load_image, prepare_reference
    cfg, engine = _engine(a)
    image = prepare_reference(load_image(a.ref), cfg.model.input_size, crop=not a.no_crop)
    samples = load_audio(a.audio, cfg.model.sampling_rate)
    total = engine.model.num_frames(len(samples))
    with tqdm(total=total, desc="streaming", unit="frame") as bar:
        res = asyncio.run(stream_file(engine, image, samples, a.out, realtime=a.realtime, trace=a.trace,
                                      progress=bar.update, emotion=a.emo))
    lat = res.latency_ms
    print(f"wrote {a.out}: {res.frames} frames for {res.audio_s:.2f} s of audio in {res.wall_s:.2f} s "
          f"(real-time factor {res.wall_s / res.audio_s:.2f}{', paced' if a.realtime else ''})")
    print(f"algorithmic latency {res.algorithmic_ms:.0f} ms; compute {res.step_ms:.1f} ms per step")
    if lat.size and a.realtime:
        print(f"latency audio arrived -> frame ready: p50 {np.percentile(lat, 50):.0f} ms, "
              f"p95 {np.percentile(lat, 95):.0f} ms, max {lat.max():.0f} ms")
    if a.realtime:
        print(f"duplicated frames {res.duplicated}, dropped frames {res.dropped}")
    if a.trace:
        print(f"trace: {a.trace}")


def cmd_bench_stream(a) -> None:
    import torch

    from streaming.bench import SECTIONS, StreamBench, run

    from .bench import write_json
    from .media import load_audio, load_image, prepare_reference
    if a.threads:
        torch.set_num_threads(a.threads)
    sections = a.sections.split(",") if a.sections else list(SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise FloatRTError(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    cfg, engine = _engine(a)
    image = prepare_reference(load_image(a.ref), cfg.model.input_size, crop=not a.no_crop)
    samples = load_audio(a.audio, cfg.model.sampling_rate)
    print(f"bench-stream: {cfg.name} on {engine.device}, {len(samples) / cfg.model.sampling_rate:.2f} s of audio, "
          f"chunk {engine.stream_cfg.chunk_frames} frames, lookahead {engine.stream_cfg.lookahead_ms} ms, "
          f"left context {engine.stream_cfg.left_context_ms} ms, nfe {engine.stream_cfg.nfe}")
    if (Path(a.checkpoints) / "RECIPE_WEIGHTS.txt").exists():
        print("note: recipe weights - feature/motion deviations are structural only (window geometry), "
              "not those of the trained model")
    bench = StreamBench(engine, image, samples, engine.feature_extractor, a.emo)
    res = run(bench, sections, a.plot)
    if a.json:
        write_json(res, a.json)
        print(f"wrote {a.json}")


def cmd_export_onnx(a) -> None:
    from export.onnx import export_onnx

    from .checkpoint import load_model
    from .pipeline import resolve_device
    cfg = _config(a.config)
    model, _ = load_model(cfg.model, a.checkpoints, resolve_device(a.device))
    print(f"exporting {cfg.name} to {a.out} (each graph checked against PyTorch with onnxruntime)")
    export_onnx(model, cfg.name, a.out)
    print(f"wrote {a.out}; use it with --engines {a.out} --backend decoder=onnxruntime ...")


def cmd_export_trt(a) -> None:
    from export.trt import build_engines
    print(f"building TensorRT engines from {a.onnx} ({'fp32' if a.fp32 else 'fp16, fp32 where needed'})")
    build_engines(a.onnx, fp16=not a.fp32, max_sessions=a.max_sessions, max_frames=a.max_frames)


def cmd_bench_backends(a) -> None:
    import torch

    from export.bench import bench_backends

    from .bench import write_json
    from .checkpoint import load_model
    from .pipeline import resolve_device
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = _config(a.config)
    model, _ = load_model(cfg.model, a.checkpoints, resolve_device(a.device))
    res = bench_backends(model, a.engines, repeat=a.repeat)
    if a.json:
        write_json(res, a.json)


def cmd_serve(a) -> None:
    from server.app import run
    from server.config import load_server_config
    try:
        cfg = load_server_config(a.server_config, host=a.host, port=a.port, config=a.config, checkpoints=a.checkpoints,
                                 stream_config=a.stream_config, device=a.device, max_sessions=a.max_sessions,
                                 token=a.token or None, allowed_origins=a.allowed_origin or None,
                                 ice_hosts=a.ice_host or None, video_codec=a.video_codec,
                                 video_bitrate=a.video_bitrate, demo=a.demo or None)
    except (OSError, ValueError) as exc:
        raise FloatRTError(str(exc)) from exc
    run(cfg)


def _stream_args(p, plot: bool = False) -> None:
    p.add_argument("--checkpoints", required=True, help="folder in the official checkpoints/ layout")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--stream-config", default=str(DEFAULT_STREAM_CONFIG))
    p.add_argument("--ref", required=True, help="reference portrait image")
    p.add_argument("--audio", required=True, help="speech file (any format PyAV reads)")
    p.add_argument("--chunk-frames", type=int, default=None, help="frames committed per step (1..50)")
    p.add_argument("--lookahead-ms", type=int, default=None)
    p.add_argument("--left-context-ms", type=int, default=None)
    p.add_argument("--nfe", type=int, default=None, help="Euler grid points per step")
    p.add_argument("--no-crop", action="store_true")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    _backend_args(p)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="float-rt", description="FLOAT-RT: audio-driven talking avatars")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="offline: portrait + speech -> mp4")
    g.add_argument("--checkpoints", required=True, help="folder in the official checkpoints/ layout")
    g.add_argument("--ref", required=True, help="reference portrait image")
    g.add_argument("--audio", required=True, help="speech (wav, mp3, m4a, ogg, ...; any rate)")
    g.add_argument("--out", required=True, help="output .mp4")
    g.add_argument("--config", default=str(DEFAULT_CONFIG))
    g.add_argument("--emo", choices=EMOTIONS, default=None, help="fixed emotion (default: predicted from speech)")
    g.add_argument("--a-cfg-scale", type=float, default=None)
    g.add_argument("--e-cfg-scale", type=float, default=None)
    g.add_argument("--nfe", type=int, default=None, help="Euler grid points (nfe-1 evaluations per window)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--no-crop", action="store_true", help="use the image as it is (no face crop)")
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    g.add_argument("--decode-batch", type=int, default=8)
    _backend_args(g)
    g.set_defaults(func=cmd_generate)

    d = sub.add_parser("demo-weights", help="write recipe weights in the official layout")
    d.add_argument("--config", default=str(DEFAULT_CONFIG))
    d.add_argument("--out", required=True)
    d.set_defaults(func=cmd_demo_weights)

    r = sub.add_parser("reference", help="run a reference case and compare with its expected.npz")
    r.add_argument("case_dir")
    r.add_argument("--out", required=True)
    r.set_defaults(func=cmd_reference)

    c = sub.add_parser("convert", help="rewrite a checkpoint folder as safetensors")
    c.add_argument("ckpt_dir")
    c.add_argument("out")
    c.set_defaults(func=cmd_convert)

    b = sub.add_parser("bench", help="per-stage speed")
    b.add_argument("--config", default=str(DEFAULT_CONFIG))
    b.add_argument("--checkpoints", required=True)
    b.add_argument("--device", default="cpu")
    b.add_argument("--json", default=None)
    b.add_argument("--repeat", type=int, default=3)
    b.add_argument("--decode-batch", type=int, default=4)
    b.add_argument("--seconds", type=float, default=2.0, help="audio length of the end-to-end run")
    b.add_argument("--threads", type=int, default=0)
    b.set_defaults(func=cmd_bench)

    st = sub.add_parser("stream", help="feed an audio file through a live session -> mp4 + latency figures")
    _stream_args(st)
    st.add_argument("--out", required=True, help="output .mp4")
    st.add_argument("--emo", choices=EMOTIONS, default=None, help="fixed emotion (default: predicted)")
    st.add_argument("--realtime", action="store_true", help="feed audio at real-time pace, frames on the clock")
    st.add_argument("--trace", default=None, help="write per-frame pts/arrival/ready/motion to this .npz")
    st.set_defaults(func=cmd_stream)

    bs = sub.add_parser("bench-stream", help="streaming latency, compute, sessions and deviation from offline")
    _stream_args(bs)
    bs.add_argument("--emo", choices=EMOTIONS, default="neutral", help="emotion for the deviation runs")
    bs.add_argument("--sections", default=None, help="comma list of: features,nfe,offline,configs,sessions,latency")
    bs.add_argument("--plot", default="stream_latency.png", help="PNG of latency over time")
    bs.add_argument("--json", default=None)
    bs.add_argument("--threads", type=int, default=0)
    bs.set_defaults(func=cmd_bench_stream)

    ex = sub.add_parser("export", help="ONNX graphs and TensorRT engines of every stage")
    exs = ex.add_subparsers(dest="target", required=True)
    eo = exs.add_parser("onnx", help="export the five stage graphs and check them against PyTorch")
    eo.add_argument("--checkpoints", required=True)
    eo.add_argument("--config", default=str(DEFAULT_CONFIG))
    eo.add_argument("--out", required=True, help="engines folder")
    eo.add_argument("--device", default="cpu")
    eo.set_defaults(func=cmd_export_onnx)
    et = exs.add_parser("trt", help="build TensorRT engines (CUDA) from an exported folder")
    et.add_argument("--onnx", required=True, help="engines folder written by `export onnx`")
    et.add_argument("--fp32", action="store_true", help="fp32 engines (default fp16, fp32 where needed)")
    et.add_argument("--max-sessions", type=int, default=8)
    et.add_argument("--max-frames", type=int, default=16)
    et.set_defaults(func=cmd_export_trt)

    bb = sub.add_parser("bench-backends", help="decoder and FMT on every path side by side (speed and error)")
    bb.add_argument("--checkpoints", required=True)
    bb.add_argument("--config", default=str(DEFAULT_CONFIG))
    bb.add_argument("--engines", default=None, help="exported folder: adds the onnxruntime rows")
    bb.add_argument("--device", default="cpu")
    bb.add_argument("--repeat", type=int, default=3)
    bb.add_argument("--threads", type=int, default=0)
    bb.add_argument("--json", default=None)
    bb.set_defaults(func=cmd_bench_backends)

    sv = sub.add_parser("serve", help="WebRTC avatar server with the demo page (http://127.0.0.1:8080/)")
    sv.add_argument("--demo", action="store_true",
                    help="serve the small config on recipe weights written to a cache folder (no download)")
    sv.add_argument("--checkpoints", default=None, help="folder in the official checkpoints/ layout")
    sv.add_argument("--config", default=None, help="model config (default configs/float-512.yaml)")
    sv.add_argument("--stream-config", default=None)
    sv.add_argument("--server-config", default=str(CONFIGS / "server.yaml"))
    sv.add_argument("--host", default=None, help="default 127.0.0.1")
    sv.add_argument("--port", type=int, default=None, help="default 8080 (0: any free port)")
    sv.add_argument("--device", default=None)
    sv.add_argument("--max-sessions", type=int, default=None)
    sv.add_argument("--token", default=None, help="clients must present this token")
    sv.add_argument("--allowed-origin", action="append", default=None, help="allowed page origin (repeatable)")
    sv.add_argument("--ice-host", action="append", default=None,
                    help="ICE host candidate address to offer (repeatable; e.g. 127.0.0.1)")
    sv.add_argument("--video-codec", choices=["vp8", "h264"], default=None)
    sv.add_argument("--video-bitrate", type=int, default=None)
    sv.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    try:
        args.func(args)
    except FloatRTError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        for line in str(exc).splitlines()[1:]:
            print(f"  {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
