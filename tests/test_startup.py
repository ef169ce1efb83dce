"""Errors come at once: every argument and path error (and a busy port) is one `error:` line and
exit code 2, found before any heavy import (torch, transformers, PyAV, OpenCV, aiortc) or model load.

"At once" is checked as what the command did, not as a time: a busy machine makes every command
slower, but one that imports nothing heavy answers in a fraction of a second anywhere.
"""
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import ROOT

HEAVY = ("torch", "transformers", "av", "cv2", "aiortc", "onnxruntime", "huggingface_hub")

PROBE = """
import json, sys
from server.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


def run(*argv, env=None):
    e = {k: v for k, v in os.environ.items() if k not in ("FLOAT_RT_ACCEPT_LICENSE", "FLOAT_RT_TOKEN")}
    e.update(env or {})
    r = subprocess.run([sys.executable, "-c", PROBE, *map(str, argv)], cwd=ROOT, env=e, capture_output=True,
                       text=True, timeout=300)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    return out["rc"], out["heavy"], errors, r.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("startup")
    (d / "face.png").write_bytes(b"\x89PNG not really")          # exists: its content is checked later
    (d / "speech.wav").write_bytes(b"RIFF not really")
    (d / "empty").mkdir()
    return d


@pytest.mark.parametrize("case", ["ref", "audio", "no_folder", "wrong_folder", "config", "licence", "stream",
                                  "bench_stream_section", "serve_folder", "export_folder", "reference_case"])
def test_argument_errors_come_before_heavy_work(case, files, tmp_path):
    cache = {"FLOAT_RT_CACHE": str(tmp_path / "cache")}      # no downloaded weights to fall back on
    f = files
    argv, expect = {
        "ref": (["generate", "--checkpoints", f / "empty", "--ref", f / "nope.jpg", "--audio", f / "speech.wav",
                 "--out", tmp_path / "o.mp4"], "reference image (--ref) not found"),
        "audio": (["generate", "--checkpoints", f / "empty", "--ref", f / "face.png", "--audio", f / "nope.wav",
                   "--out", tmp_path / "o.mp4"], "audio file (--audio) not found"),
        "no_folder": (["generate", "--ref", f / "face.png", "--audio", f / "speech.wav", "--out", tmp_path / "o.mp4"],
                      "no checkpoint folder"),
        "wrong_folder": (["generate", "--checkpoints", f / "empty", "--ref", f / "face.png", "--audio",
                          f / "speech.wav", "--out", tmp_path / "o.mp4"], "float.pth not found"),
        "config": (["generate", "--config", "nonesuch", "--checkpoints", f / "empty", "--ref", f / "face.png",
                    "--audio", f / "speech.wav", "--out", tmp_path / "o.mp4"], "config not found: nonesuch"),
        "licence": (["download", "--dir", tmp_path / "dl"], "accept the licence"),
        "stream": (["stream", "--ref", f / "nope.jpg", "--audio", f / "speech.wav", "--out", tmp_path / "o.mp4"],
                   "reference image (--ref) not found"),
        "bench_stream_section": (["bench-stream", "--ref", f / "face.png", "--audio", f / "speech.wav",
                                  "--sections", "nonesuch"], "unknown section(s) nonesuch"),
        "serve_folder": (["serve", "--checkpoints", f / "nope", "--port", "0"], "checkpoint folder not found"),
        "export_folder": (["export", "onnx", "--checkpoints", f / "nope", "--out", tmp_path / "e"],
                          "checkpoint folder not found"),
        "reference_case": (["reference", f / "empty", "--out", tmp_path / "r.npz"], "config.json not found"),
    }[case]
    rc, heavy, errors, stderr = run(*argv, env=cache)
    assert rc == 2, stderr
    assert len(errors) == 1 and expect in errors[0], stderr
    assert "Traceback" not in stderr
    assert heavy == [], f"imported {heavy} before refusing"


def test_a_busy_port_is_one_line_before_the_model_loads(small_ckpt):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        for extra in ([], ["--workers", "2", "--max-sessions", "2"]):
            rc, heavy, errors, stderr = run("serve", "--checkpoints", small_ckpt, "--config", "small",
                                            "--port", port, *extra)
            assert rc == 2, stderr
            assert errors == [f"error: port {port} on 127.0.0.1 is already in use: stop what holds it, "
                              "or choose another with --port"], stderr
            assert "torch" not in heavy and "Traceback" not in stderr


def test_openmp_threads_sleep_when_waiting_unless_the_user_says_otherwise():
    """float_rt sets OMP_WAIT_POLICY=PASSIVE before torch loads (a busy core otherwise makes the
    model 2-3x slower); the commands load torch only after it."""
    probe = ("import os, sys; from server.cli import main; import torch; "
             "print(os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.stdout.split() == ["PASSIVE"], r.stderr
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                       capture_output=True, text=True, timeout=300)
    assert r.stdout.split() == ["ACTIVE"], r.stderr


def test_the_package_exports_what_it_says():
    import float_rt
    assert all(hasattr(float_rt, name) for name in float_rt.__all__)
