"""Streaming commands of ``float-rt``: stream (a file through a live session) and bench-stream."""
from __future__ import annotations

from pathlib import Path

from float_rt.cli import (CONFIG_HELP, add_backend_args, add_checkpoints_arg, checkpoints_arg, load_config_arg,
                          readable_file, with_backends)
from float_rt.config import EMOTIONS
from float_rt.errors import FloatRTError
from float_rt.resources import DEFAULT_MODEL_CONFIG, config_path


def engine_from_args(a):
    """The engine the arguments describe; every argument and path is checked before the heavy imports."""
    from .config import load_stream_config
    cfg = with_backends(load_config_arg(a.config), a)
    readable_file(a.ref, "reference image (--ref)")
    readable_file(a.audio, "audio file (--audio)")
    try:
        scfg = load_stream_config(config_path(a.stream_config), chunk_frames=a.chunk_frames,
                                  lookahead_ms=a.lookahead_ms, left_context_ms=a.left_context_ms, nfe=a.nfe)
    except (OSError, ValueError) as exc:
        raise FloatRTError(str(exc)) from exc
    ckpt = checkpoints_arg(a.checkpoints)
    from .engine import Engine
    return cfg, ckpt, Engine.from_checkpoints(ckpt, cfg, scfg, a.device)


def cmd_stream(a) -> None:
    cfg, _, engine = engine_from_args(a)
    import asyncio

    import numpy as np
    from tqdm.auto import tqdm

    from float_rt.media import load_audio, load_image, prepare_reference

    from .run import stream_file
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
    from .config import SECTIONS
    sections = a.sections.split(",") if a.sections else list(SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise FloatRTError(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    cfg, ckpt, engine = engine_from_args(a)
    import torch

    from float_rt.bench import write_json
    from float_rt.media import load_audio, load_image, prepare_reference

    from .bench import StreamBench, run
    if a.threads:
        torch.set_num_threads(a.threads)
    image = prepare_reference(load_image(a.ref), cfg.model.input_size, crop=not a.no_crop)
    samples = load_audio(a.audio, cfg.model.sampling_rate)
    print(f"bench-stream: {cfg.name} on {engine.device}, {len(samples) / cfg.model.sampling_rate:.2f} s of audio, "
          f"chunk {engine.stream_cfg.chunk_frames} frames, lookahead {engine.stream_cfg.lookahead_ms} ms, "
          f"left context {engine.stream_cfg.left_context_ms} ms, nfe {engine.stream_cfg.nfe}")
    if (Path(ckpt) / "RECIPE_WEIGHTS.txt").exists():
        print("note: recipe weights - feature/motion deviations are structural only (window geometry), "
              "not those of the trained model")
    bench = StreamBench(engine, image, samples, engine.feature_extractor, a.emo)
    res = run(bench, sections, a.plot)
    if a.json:
        write_json(res, a.json)
        print(f"wrote {a.json}")


def _stream_args(p) -> None:
    add_checkpoints_arg(p)
    p.add_argument("--config", default=DEFAULT_MODEL_CONFIG, help=CONFIG_HELP)
    p.add_argument("--stream-config", default="stream", help="a packaged config (stream) or a YAML file")
    p.add_argument("--ref", required=True, help="reference portrait image")
    p.add_argument("--audio", required=True, help="speech file (any format PyAV reads)")
    p.add_argument("--chunk-frames", type=int, default=None, help="frames committed per step (1..50)")
    p.add_argument("--lookahead-ms", type=int, default=None)
    p.add_argument("--left-context-ms", type=int, default=None)
    p.add_argument("--nfe", type=int, default=None, help="Euler grid points per step")
    p.add_argument("--no-crop", action="store_true")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    add_backend_args(p)


def add_commands(sub) -> None:
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
