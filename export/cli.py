"""Export commands of ``float-rt``: export onnx, export trt, bench-backends."""
from __future__ import annotations

from float_rt.cli import CONFIG_HELP, add_checkpoints_arg, checkpoints_arg, load_config_arg
from float_rt.resources import DEFAULT_MODEL_CONFIG


def _model(a):
    cfg = load_config_arg(a.config)
    ckpt = checkpoints_arg(a.checkpoints)
    from float_rt.checkpoint import load_model
    from float_rt.pipeline import resolve_device
    model, _ = load_model(cfg.model, ckpt, resolve_device(a.device))
    return cfg, model


def cmd_export_onnx(a) -> None:
    cfg, model = _model(a)
    from .onnx import export_onnx
    print(f"exporting {cfg.name} to {a.out} (each graph checked against PyTorch with onnxruntime)")
    export_onnx(model, cfg.name, a.out)
    print(f"wrote {a.out}; use it with --engines {a.out} --backend decoder=onnxruntime ...")


def cmd_export_trt(a) -> None:
    from .trt import build_engines
    print(f"building TensorRT engines from {a.onnx} ({'fp32' if a.fp32 else 'fp16, fp32 where needed'})")
    build_engines(a.onnx, fp16=not a.fp32, max_sessions=a.max_sessions, max_frames=a.max_frames)


def cmd_bench_backends(a) -> None:
    _, model = _model(a)
    import torch

    from float_rt.bench import write_json

    from .bench import bench_backends
    if a.threads:
        torch.set_num_threads(a.threads)
    res = bench_backends(model, a.engines, repeat=a.repeat)
    if a.json:
        write_json(res, a.json)


def add_commands(sub) -> None:
    ex = sub.add_parser("export", help="ONNX graphs and TensorRT engines of every stage")
    exs = ex.add_subparsers(dest="target", required=True)
    eo = exs.add_parser("onnx", help="export the five stage graphs and check them against PyTorch")
    add_checkpoints_arg(eo)
    eo.add_argument("--config", default=DEFAULT_MODEL_CONFIG, help=CONFIG_HELP)
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
    add_checkpoints_arg(bb)
    bb.add_argument("--config", default=DEFAULT_MODEL_CONFIG, help=CONFIG_HELP)
    bb.add_argument("--engines", default=None, help="exported folder: adds the onnxruntime rows")
    bb.add_argument("--device", default="cpu")
    bb.add_argument("--repeat", type=int, default=3)
    bb.add_argument("--threads", type=int, default=0)
    bb.add_argument("--json", default=None)
    bb.set_defaults(func=cmd_bench_backends)
