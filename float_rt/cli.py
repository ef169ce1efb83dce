"""Model-level commands of ``float-rt``: generate, download, demo-weights, reference, convert, bench.

Each layer registers its own commands with ``add_commands``; ``server.cli`` puts them
together into the one ``float-rt`` program, so the command line sits above the layers it
drives and nothing here imports upward.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import EMOTIONS, FloatConfig
from .errors import FloatRTError
from .family import DEFAULT_FAMILY, check_generate_options, family_named, family_of, family_of_case, require
from .resources import DEFAULT_MODEL_CONFIG, config_path, default_checkpoints, resolve_checkpoints

CONFIG_HELP = "a packaged config (float-512, small, ditto, ditto-tiny) or a YAML file"
# Every family's emotion labels (FLOAT's 7 and Ditto's 8, any case); each family checks its own.
EMOTION_CHOICES = (*EMOTIONS, "contempt")


def add_control_args(p) -> None:
    """The avatar controls (float_rt/controls.py) as options of ``generate`` and ``stream``."""
    p.add_argument("--paste-back", action="store_true",
                   help="put the animated crop back into the photo (output at the photo's size, or --video-size)")
    p.add_argument("--video-size", default=None, metavar="WxH",
                   help="with --paste-back: the photo scaled to cover WxH (even) and cut around the face")
    p.add_argument("--motion-scale", type=float, default=None,
                   help="0..2, default 1: head motion relative to the photo (FLOAT: the whole motion)")
    p.add_argument("--expression-scale", type=float, default=None, help="Ditto: 0..2, default 1: lips and eyes")
    p.add_argument("--pose", default=None, metavar="YAW,PITCH,ROLL",
                   help="Ditto: head pose in degrees (yaw -45..45, pitch and roll -30..30)")
    p.add_argument("--pose-mode", choices=("offset", "fixed"), default=None,
                   help="Ditto: --pose is added to the generated pose (offset, default) or held (fixed)")
    p.add_argument("--no-blink", action="store_true", help="Ditto: eyes held open as in the photo")
    p.add_argument("--blink-rate", type=float, default=None, metavar="PER_MINUTE",
                   help="Ditto: synthesised blinks, 1..60 a minute (default: the model's own)")
    p.add_argument("--gaze-camera", action="store_true", help="Ditto: eyes turned towards the camera")
    p.add_argument("--state", choices=("speaking", "listening", "thinking", "idle"), default=None,
                   help="listening/thinking: attentive motion instead of the speech's (default speaking)")


def load_config_arg(name, command: str = "engine"):
    """The model config named by --config; its family must support ``command`` (default: the
    live engine, which stream, serve and export drive)."""
    from .config import load_config
    try:
        cfg = load_config(config_path(name))
    except (OSError, ValueError) as exc:
        raise FloatRTError(str(exc)) from exc
    require(family_of(cfg), command)
    return cfg


def with_backends(cfg: FloatConfig, a) -> FloatConfig:
    """--engines DIR and --backend STAGE=KIND override the config's backends section."""
    extra = {}
    for item in getattr(a, "backend", None) or []:
        stage, _, kind = item.partition("=")
        if not kind:
            raise FloatRTError(f"--backend takes STAGE=KIND (e.g. decoder=onnxruntime), got {item!r}")
        extra[stage] = kind
    if getattr(a, "engines", None):
        extra["engines"] = a.engines
    if getattr(a, "precision", None):
        extra["precision"] = a.precision
    cfg.backends = {**cfg.backends, **extra}
    return cfg


def add_backend_args(p) -> None:
    p.add_argument("--engines", default=None, help="folder from `float-rt export onnx` (and `export trt`)")
    p.add_argument("--backend", action="append", default=None, metavar="STAGE=KIND",
                   help="encoder|decoder|fmt|audio|emotion = torch|onnxruntime|tensorrt (repeatable)")
    add_precision_arg(p)


def add_precision_arg(p) -> None:
    p.add_argument("--precision", choices=("fp32", "fast"), default=None,
                   help="FLOAT: fast runs the FMT's block linears as bf16 products (measured error ~6e-3; "
                        "needs AVX-512 bf16, AMX or a CUDA GPU, else fp32 with a warning); default fp32 "
                        "or the config's backends.precision")


def add_checkpoints_arg(p, required: bool = False) -> None:
    p.add_argument("--checkpoints", required=required, default=None,
                   help="folder in the official checkpoints/ layout" +
                        ("" if required else f" (default: the downloaded one, {default_checkpoints()})"))


def readable_file(path, what: str) -> Path:
    """An input file that exists and can be opened, checked before any heavy import."""
    path = Path(path)
    if not path.exists():
        raise FloatRTError(f"{what} not found: {path}")
    if not path.is_file():
        raise FloatRTError(f"{what} is not a file: {path}")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise FloatRTError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return path


def checkpoints_arg(given, fam=None) -> Path:
    """The checkpoint folder (given, or the family's downloaded one), its layout checked by file names."""
    fam = fam or family_named(DEFAULT_FAMILY)
    return fam.check_layout(resolve_checkpoints(given, fam.default_checkpoints(), fam.no_checkpoints))


def cmd_generate(a) -> None:
    # Everything the user can get wrong is checked first, in well under a second; torch, PyAV,
    # OpenCV and transformers load only after.
    cfg = load_config_arg(a.config, "generate")
    fam = family_of(cfg)
    check_generate_options(fam, a)   # another family's options, an emotion it lacks
    from .controls import controls_from_args
    controls_from_args(a)            # bad control values: one line, before any heavy import
    readable_file(a.ref, "reference image (--ref)")
    readable_file(a.audio, "audio file (--audio)")
    ckpt = checkpoints_arg(a.checkpoints, fam)
    n = fam.generate(cfg, ckpt, a)
    print(f"wrote {a.out}: {n} frames at 25 fps")   # both families' video rate


def cmd_download(a) -> None:
    from .licence import accepted
    cfg = load_config_arg(a.config, "download")
    fam = family_of(cfg)
    print(fam.licence)
    if fam.licence_needs_acceptance and not accepted(a.accept_license):
        raise FloatRTError("not downloading: accept the licence with --accept-license (or FLOAT_RT_ACCEPT_LICENSE=1)")
    dest = Path(a.dir) if a.dir else fam.default_checkpoints()
    if dest.exists() and not dest.is_dir():
        raise FloatRTError(f"--dir {dest} exists and is not a folder")
    fam.download(a.repo or fam.default_repo, a.revision, dest, cfg, str(a.config))
    print(f"ready: {dest}" + ("" if a.dir else " (used when --checkpoints is left out)"))


def cmd_demo_weights(a) -> None:
    cfg = load_config_arg(a.config, "demo-weights")
    out = family_of(cfg).write_demo_weights(cfg, Path(a.out))
    print(f"wrote recipe weights for {cfg.name} to {out}\n"
          "note: these are deterministic stand-in weights - every output will be noise, not a face.")


def cmd_reference(a) -> None:
    import json
    case = Path(a.case_dir)
    for name in ("config.json", "inputs.npz"):
        readable_file(case / name, f"reference case file {name}")
    try:
        raw = json.loads((case / "config.json").read_text())
        tolerances = json.loads((case / "tolerances.json").read_text()) if (case / "tolerances.json").is_file() \
            else None
    except ValueError as exc:
        raise FloatRTError(f"{case}: unreadable JSON: {exc}") from exc
    fam = require(family_of_case(raw, str(case / "config.json")), "reference")
    import numpy as np

    from .reference import compare
    ours = fam.run_case(case)
    np.savez(a.out, **ours)
    print(f"wrote {a.out} ({', '.join(sorted(ours))})")
    expected = case / "expected.npz"
    if expected.is_file():
        ref = dict(np.load(expected))
        failed = 0
        for key, (err, tol, ok) in compare(ours, ref, tolerances).items():
            failed += not ok
            print(f"  {key:20s} rel.err {err:.2e}  tol {tol:.0e}  {'ok' if ok else 'FAIL'}")
        if "frame_index" in ref:   # indices are compared for equality
            same = "frame_index" in ours and np.array_equal(ours["frame_index"], ref["frame_index"])
            failed += not same
            print(f"  {'frame_index':20s} {'equal' if same else 'DIFFERENT'}")
        if failed:
            raise SystemExit(1)


def cmd_convert(a) -> None:
    checkpoints_arg(a.ckpt_dir)
    from .checkpoint import convert
    print(f"wrote {convert(a.ckpt_dir, a.out)}")


def cmd_bench(a) -> None:
    import json
    cfg = load_config_arg(a.config, "bench")
    fam = family_of(cfg)
    if a.precision and "precision" not in fam.generate_options:
        raise FloatRTError(f"--precision is not an option of the {fam.name} family")
    if a.checkpoints or fam.bench_reads_weights:
        checkpoints_arg(a.checkpoints, fam)
    official = None
    if a.official:
        try:
            official = json.loads(Path(a.official).read_text().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError) as exc:
            raise FloatRTError(f"cannot read {a.official}: {exc}") from exc

    from .bench import write_json
    from .cpu import use_threads
    use_threads(override=a.threads or None)     # the cores this process may use, or --threads
    res = fam.bench(cfg, a, official)
    if a.busy_core:
        from .cpu import busy_core
        print("\nthe same with one core kept busy by another process:")
        with busy_core():
            busy = fam.bench(cfg, a, None)
        res["busy"] = {k: v for k, v in busy.items()
                       if (isinstance(v, (int, float)) and not isinstance(v, bool)) or k == "rows"}
        for key, idle in res.items():
            if isinstance(idle, float) and isinstance(res["busy"].get(key), float) and idle > 0:
                print(f"  {key}: idle {idle:.4g}, one core busy {res['busy'][key]:.4g} (x{res['busy'][key] / idle:.2f})")
    if a.json:
        write_json(res, a.json)


def add_commands(sub) -> None:
    g = sub.add_parser("generate", help="offline: portrait + speech -> mp4")
    add_checkpoints_arg(g)
    g.add_argument("--ref", required=True, help="reference portrait image")
    g.add_argument("--audio", required=True, help="speech (wav, mp3, m4a, ogg, ...; any rate)")
    g.add_argument("--out", required=True, help="output .mp4")
    g.add_argument("--config", default=DEFAULT_MODEL_CONFIG, help=CONFIG_HELP)
    g.add_argument("--emo", type=str.lower, choices=EMOTION_CHOICES, default=None,
                   help="fixed emotion (FLOAT: default predicted from speech; Ditto: its 8 labels incl. contempt, "
                        "default neutral)")
    g.add_argument("--a-cfg-scale", type=float, default=None, help="FLOAT")
    g.add_argument("--e-cfg-scale", type=float, default=None, help="FLOAT")
    g.add_argument("--nfe", type=int, default=None, help="FLOAT: Euler grid points (nfe-1 evaluations per window)")
    g.add_argument("--steps", type=int, default=None, help="Ditto: DDIM sampling steps (default 50)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--no-crop", action="store_true", help="FLOAT: use the image as it is (no face crop)")
    add_control_args(g)
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    g.add_argument("--decode-batch", type=int, default=None, help="FLOAT: frames decoded per batch (8)")
    add_backend_args(g)
    g.set_defaults(func=cmd_generate)

    dl = sub.add_parser("download", help="fetch the published checkpoints (Hugging Face) and check them")
    dl.add_argument("--dir", default=None, help=f"target folder (default: {default_checkpoints()}; "
                                                "Ditto: its ditto/ sibling)")
    dl.add_argument("--repo", default=None, help="Hugging Face repo (default: yuvraj108c/float; Ditto: "
                                                 "digital-avatar/ditto-talkinghead); HF_ENDPOINT selects a mirror")
    dl.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    dl.add_argument("--accept-license", action="store_true",
                    help="accept FLOAT's CC BY-NC-ND 4.0 licence (non-commercial); or FLOAT_RT_ACCEPT_LICENSE=1. "
                         "Not needed for Ditto (Apache-2.0 and MIT)")
    dl.add_argument("--config", default=DEFAULT_MODEL_CONFIG, help="config the weights are checked against")
    dl.set_defaults(func=cmd_download)

    d = sub.add_parser("demo-weights", help="write recipe weights in the official layout")
    d.add_argument("--config", default=DEFAULT_MODEL_CONFIG, help=CONFIG_HELP)
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
    b.add_argument("--config", default=DEFAULT_MODEL_CONFIG, help=CONFIG_HELP)
    add_checkpoints_arg(b)
    b.add_argument("--device", default="cpu")
    b.add_argument("--json", default=None)
    b.add_argument("--repeat", type=int, default=3)
    b.add_argument("--decode-frames", type=int, default=5, help="frames a streaming step decodes (its chunk)")
    b.add_argument("--seconds", type=float, default=2.0, help="audio length of the end-to-end run")
    add_precision_arg(b)
    b.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (default: the cores this process may use: affinity, cgroup quota)")
    b.add_argument("--official", default=None, help="JSON from shared/tools/official-bench, run right before: "
                                                    "prints the same-run ratios")
    b.add_argument("--busy-core", action="store_true",
                   help="run the rows again with one core kept busy by another process; the JSON holds them "
                        "under `busy` with the same names")
    b.set_defaults(func=cmd_bench)


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse and run one command; a FloatRTError is one ``error:`` line and exit code 2."""
    args = parser.parse_args(argv)
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
