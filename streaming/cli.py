"""Streaming commands of ``float-rt``: stream (a file through a live session) and bench-stream.

Both run on any model family's engine.  What only one family reads (FLOAT's window geometry
and backends, its deviation-from-offline sections) is listed per family here and refused, in
one line and before any model loads, when asked of another.
"""
from __future__ import annotations

import math
from pathlib import Path

from float_rt.cli import (CONFIG_HELP, add_backend_args, add_checkpoints_arg, add_control_args, checkpoints_arg,
                          load_config_arg, readable_file, with_backends)
from float_rt.errors import FloatRTError
from float_rt.family import FAMILIES, family_named, family_of
from float_rt.resources import DEFAULT_MODEL_CONFIG, config_path

BACKEND_OPTIONS = ("engines", "backend", "precision")
# bench-stream sections: the family-free ones run on any engine; the others need one family's model
# (``Family.stream_bench_sections``), as the stream-config overrides a family reads are its own
# (``Family.stream_options``): another family refuses them.
COMMON_SECTIONS = ("steps", "sessions", "latency", "tts")
FAMILY_OBJECTS = tuple(family_named(n) for n in FAMILIES)
ALL_STREAM_OPTIONS = tuple(sorted({o for f in FAMILY_OBJECTS for o in f.stream_options}))
ALL_SECTIONS = COMMON_SECTIONS + tuple(s for f in FAMILY_OBJECTS for s in f.stream_bench_sections)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def family_sections(family: str) -> tuple[str, ...]:
    """The bench-stream sections an engine of ``family`` has (the default list)."""
    return family_named(family).stream_bench_sections + COMMON_SECTIONS


def check_family_args(cfg, a) -> None:
    """Options of another family and an emotion this family lacks: one clear error, before any load."""
    fam = family_of(cfg)
    for dest in ALL_STREAM_OPTIONS:
        if dest not in fam.stream_options and getattr(a, dest, None) is not None:
            raise FloatRTError(f"{_flag(dest)} is not an option of the {fam.name} family "
                               f"(its live sessions commit their own windows)")
    if not hasattr(cfg, "backends"):
        for dest in BACKEND_OPTIONS:
            if getattr(a, dest, None):
                raise FloatRTError(f"{_flag(dest)} is not an option of the {fam.name} family")
    emo = getattr(a, "emo", None)
    if emo is not None and emo.lower() not in (e.lower() for e in fam.emotions):
        raise FloatRTError(f"unknown emotion {emo!r} for the {fam.name} family; choose from {', '.join(fam.emotions)}")


def engine_from_args(a):
    """The engine the arguments describe; every argument and path is checked before the heavy imports."""
    from .config import load_stream_config
    cfg = load_config_arg(a.config)
    check_family_args(cfg, a)
    if hasattr(cfg, "backends"):
        cfg = with_backends(cfg, a)
    readable_file(a.ref, "reference image (--ref)")
    readable_file(a.audio, "audio file (--audio)")
    overrides = {k: getattr(a, k) for k in ALL_STREAM_OPTIONS if getattr(a, k, None) is not None}
    try:
        scfg = load_stream_config(config_path(a.stream_config), **overrides)
    except (OSError, ValueError) as exc:
        raise FloatRTError(str(exc)) from exc
    ckpt = checkpoints_arg(a.checkpoints, family_of(cfg))
    if hasattr(a, "motion_scale"):          # stream's avatar controls: checked before the model loads
        from float_rt.controls import check_supported, controls_from_args
        fam = family_of(cfg)
        a.controls = check_supported(controls_from_args(a), fam.supported_controls, fam.name)
        if a.controls.paste_back and a.no_crop:
            raise FloatRTError("--paste-back needs the face crop (leave out --no-crop)")
    from .engine import Engine
    return cfg, ckpt, Engine.from_checkpoints(ckpt, cfg, scfg, a.device)


def _inputs(engine, a, with_photo: bool = False):
    """The prepared portrait and the speech at the engine's rate (and the photo itself)."""
    from float_rt.media import load_audio, load_image
    photo = load_image(a.ref)
    out = engine.prepare(photo, crop=not a.no_crop), load_audio(a.audio, engine.sampling_rate)
    return (*out, photo) if with_photo else out


def cmd_stream(a) -> None:
    _, _, engine = engine_from_args(a)
    import asyncio

    import numpy as np
    from tqdm.auto import tqdm

    from .run import stream_file
    image, samples, photo = _inputs(engine, a, with_photo=True)
    total = math.ceil(len(samples) / engine.live.samples_per_frame)
    with tqdm(total=total, desc="streaming", unit="frame") as bar:
        res = asyncio.run(stream_file(engine, image, samples, a.out, realtime=a.realtime, trace=a.trace,
                                      progress=bar.update, emotion=a.emo, controls=a.controls, photo=photo))
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


def bench_sections(a, family: str) -> list[str]:
    """The sections asked for (default: all the family has); unknown or another family's: an error."""
    have = family_sections(family)
    if not a.sections:
        return list(have)
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in ALL_SECTIONS]
    if unknown:
        raise FloatRTError(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(ALL_SECTIONS)}")
    other = [s for s in sections if s not in have]
    if other:
        raise FloatRTError(f"section(s) {', '.join(other)} need another family's model; "
                           f"the {family} family has: {', '.join(have)}")
    return sections


def cmd_bench_stream(a) -> None:
    cfg = load_config_arg(a.config)
    sections = bench_sections(a, family_of(cfg).name)
    if a.replies < 1 or a.session_steps < 1:
        raise FloatRTError("--replies and --session-steps must be >= 1")
    try:
        counts = [int(n) for n in a.session_counts.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise FloatRTError(f"--session-counts takes a comma list of session counts >= 1, got {a.session_counts!r}")
    cfg, ckpt, engine = engine_from_args(a)
    import torch

    from float_rt.bench import write_json

    from .bench import StreamBench, run
    if a.threads:
        torch.set_num_threads(a.threads)
    image, samples = _inputs(engine, a)
    bench = StreamBench(engine, image, samples, a.emo)
    opts = bench.options()
    own = ", ".join(f"{k} {getattr(opts, k)}" for k in sorted(engine.live.option_names))
    print(f"bench-stream: {engine.name} ({engine.family}) on {engine.device}, "
          f"{len(samples) / engine.sampling_rate:.2f} s of audio; options: {own}; "
          f"algorithmic latency {engine.live.algorithmic_latency_ms(opts):.0f} ms")
    if (Path(ckpt) / "RECIPE_WEIGHTS.txt").exists():
        print("note: recipe weights - costs are the architecture's; feature/motion deviations are structural "
              "only (window geometry), not those of the trained model")
    res = run(bench, sections, a.plot, a.replies, counts, a.session_steps)
    if a.json:
        write_json(res, a.json)
        print(f"wrote {a.json}")


def _stream_args(p) -> None:
    add_checkpoints_arg(p)
    p.add_argument("--config", default=DEFAULT_MODEL_CONFIG, help=CONFIG_HELP)
    p.add_argument("--stream-config", default="stream", help="a packaged config (stream) or a YAML file")
    p.add_argument("--ref", required=True, help="reference portrait image")
    p.add_argument("--audio", required=True, help="speech file (any format PyAV reads)")
    p.add_argument("--chunk-frames", type=int, default=None, help="FLOAT: frames committed per step (1..50)")
    p.add_argument("--lookahead-ms", type=int, default=None, help="FLOAT: audio seen ahead of a step's frames")
    p.add_argument("--left-context-ms", type=int, default=None, help="FLOAT: audio seen before a step's frames")
    p.add_argument("--nfe", type=int, default=None, help="FLOAT: Euler grid points per step")
    p.add_argument("--no-crop", action="store_true", help="use the image as it is (no face crop)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    add_backend_args(p)


EMO_HELP = "fixed emotion, one of the family's labels in any case (default: FLOAT predicts it, Ditto the config's)"


def add_commands(sub) -> None:
    st = sub.add_parser("stream", help="feed an audio file through a live session -> mp4 + latency figures")
    _stream_args(st)
    st.add_argument("--out", required=True, help="output .mp4")
    st.add_argument("--emo", default=None, help=EMO_HELP)
    st.add_argument("--realtime", action="store_true", help="feed audio at real-time pace, frames on the clock")
    st.add_argument("--trace", default=None, help="write per-frame pts/arrival/ready/motion to this .npz")
    add_control_args(st)
    st.set_defaults(func=cmd_stream)

    bs = sub.add_parser("bench-stream", help="streaming cost per step, latency, sessions served, TTS to first "
                                             "voiced frame (FLOAT: and the deviation from offline)")
    _stream_args(bs)
    bs.add_argument("--emo", default=None, help=EMO_HELP + "; FLOAT's deviation sections default to neutral")
    bs.add_argument("--sections", default=None,
                    help=f"comma list of: {', '.join(COMMON_SECTIONS)} (any family); "
                         + "; ".join(f"{', '.join(f.stream_bench_sections)} ({f.name})" for f in FAMILY_OBJECTS
                                     if f.stream_bench_sections)
                         + " (default: all the family has)")
    bs.add_argument("--replies", type=int, default=3, help="tts: TTS replies pushed (the median is reported)")
    bs.add_argument("--session-counts", default="1,2,3,4,6,8,16",
                    help="sessions: the session counts tried, in order, until one is not served in real time")
    bs.add_argument("--session-steps", type=int, default=6, help="sessions: steps timed per count (after 2 warm-up)")
    bs.add_argument("--plot", default="stream_latency.png", help="PNG of latency over time")
    bs.add_argument("--json", default=None)
    bs.add_argument("--threads", type=int, default=0)
    bs.set_defaults(func=cmd_bench_stream)
