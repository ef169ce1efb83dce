"""Export commands of ``float-rt``: export onnx, export trt, bench-backends."""
from __future__ import annotations

from pathlib import Path

from float_rt.cli import CONFIG_HELP, add_checkpoints_arg, checkpoints_arg, load_config_arg
from float_rt.errors import FloatRTError
from float_rt.family import family_of
from float_rt.resources import DEFAULT_MODEL_CONFIG


def _float_model(cfg, ckpt: Path, device: str):
    from float_rt.checkpoint import load_model
    from float_rt.pipeline import resolve_device
    return load_model(cfg.model, ckpt, resolve_device(device))[0]


def _model(a):
    cfg = load_config_arg(a.config)
    return cfg, _float_model(cfg, checkpoints_arg(a.checkpoints), a.device)


def _float_onnx(cfg, ckpt: Path, a) -> str:
    from .onnx import export_onnx
    export_onnx(_float_model(cfg, ckpt, a.device), cfg.name, a.out)
    return f"use it with --engines {a.out} --backend decoder=onnxruntime ..."


def _ditto_onnx(cfg, ckpt: Path, a) -> str:
    from .ditto_graphs import export_ditto_onnx
    export_ditto_onnx(family_of(cfg).load(cfg, ckpt, a.device), cfg.name, a.out)
    return f"run them in onnxruntime, or build TensorRT engines with: float-rt export trt --onnx {a.out}"


# The families export knows how to write graphs for: family name -> loads the model, writes and checks them.
ONNX_EXPORTS = {"float": _float_onnx, "ditto": _ditto_onnx}


def _export_config(name):
    """The config, its family able to export."""
    cfg = load_config_arg(name, "export")
    fam = family_of(cfg)
    if fam.name not in ONNX_EXPORTS:
        raise FloatRTError(f"`float-rt export onnx` has no graphs for the {fam.name} family")
    return cfg, fam


def cmd_export_onnx(a) -> None:
    cfg, fam = _export_config(a.config)
    ckpt = checkpoints_arg(a.checkpoints, fam)
    if Path(a.out).exists() and not Path(a.out).is_dir():
        raise FloatRTError(f"--out {a.out} is a file, not a folder")
    print(f"exporting {cfg.name} to {a.out} (each graph checked against PyTorch with onnxruntime)")
    hint = ONNX_EXPORTS[fam.name](cfg, ckpt, a)
    print(f"wrote {a.out}; {hint}")


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
    eo = exs.add_parser("onnx", help="export the stage graphs (FLOAT 5, Ditto 7) and check them against PyTorch")
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
