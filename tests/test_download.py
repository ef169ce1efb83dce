"""`float-rt download` against a loopback stand-in of the Hugging Face Hub (tests/hub.py).

The repo it serves is recipe weights in the published layout, with extra files that must not
be fetched and a `config.json` edited the way a mirror's uploader might.
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch

from conftest import ROOT, write_audio
from hub import FakeHub

REPO = "someone/float-mirror"


@pytest.fixture(scope="module")
def repo_folder(small_ckpt, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub") / "repo"
    shutil.copytree(small_ckpt, folder)
    cfg_path = folder / "wav2vec2-base-960h" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    # A hand-edited mirror config: irrelevant fields dropped, mistyped and added. transformers'
    # strict config class would refuse `layerdrop: null`; we only read what the network needs.
    for key in ("architectures", "vocab_size", "mask_time_prob"):
        cfg.pop(key, None)
    cfg.update(layerdrop=None, uploaded_by="someone", _comment="edited by hand")
    cfg_path.write_text(json.dumps(cfg, indent=1))
    # A training-only tensor makes float.pth span several of huggingface_hub's 10 MB write chunks,
    # so that a cut mid-file leaves whole chunks on disk to resume from (the real file is 2.4 GB).
    state = torch.load(folder / "float.pth", weights_only=True)
    state["ema.padding"] = torch.zeros(6 * 2**20)
    torch.save(state, folder / "float.pth")
    # Files of a real repo that the folder does not need.
    (folder / "README.md").write_text("# mirror\n")
    (folder / "wav2vec2-base-960h" / "tf_model.h5").write_bytes(b"\0" * 1000)
    w2v = folder / "wav2vec2-base-960h"
    shutil.copy(w2v / "model.safetensors", w2v / "pytorch_model.bin")
    return folder


def float_rt(args, env, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, **kw)


def hub_env(tmp_path, endpoint, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "FLOAT_RT_"))}
    env.update({"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home"),
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5",
                "FLOAT_RT_CACHE": str(tmp_path / "cache"), **extra})
    return env


def wanted(folder):
    return {"float.pth", "wav2vec2-base-960h/config.json", "wav2vec2-base-960h/preprocessor_config.json",
            "wav2vec2-base-960h/model.safetensors", "wav2vec-english-speech-emotion-recognition/config.json",
            "wav2vec-english-speech-emotion-recognition/preprocessor_config.json",
            "wav2vec-english-speech-emotion-recognition/pytorch_model.bin"}


def downloaded(dest):
    return {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and p.name != ".download.json"}


def test_download_fetches_the_layout_and_checks_it(repo_folder, tmp_path):
    dest = tmp_path / "ck"
    with FakeHub(REPO, repo_folder) as hub:
        # TQDM_POSITION=-1: huggingface_hub draws its bars even without a terminal.
        r = float_rt(["download", "--repo", REPO, "--dir", str(dest), "--config", "small"],
                     hub_env(tmp_path, hub.url, FLOAT_RT_ACCEPT_LICENSE="1", TQDM_POSITION="-1"))
    assert r.returncode == 0, r.stderr
    assert "float.pth: 100%" in r.stderr                       # progress bars
    assert "CC BY-NC-ND 4.0" in r.stdout
    assert downloaded(dest) == wanted(repo_folder)      # no README, tf_model.h5 or second weights file
    for f in wanted(repo_folder):
        assert (dest / f).read_bytes() == (repo_folder / f).read_bytes()
    assert "loader's key and shape check" in r.stdout
    assert "float.pth:" in r.stdout and "tensors match small" in r.stdout
    assert "1 unused ignored (ema.padding)" in r.stdout
    assert "2 unused ignored (lm_head.bias, lm_head.weight)" in r.stdout
    assert "labels angry, disgust, fear, happy, neutral, sad, surprise" in r.stdout


def test_download_resumes_a_cut_connection(repo_folder, tmp_path):
    dest = tmp_path / "ck"
    size = (repo_folder / "float.pth").stat().st_size
    with FakeHub(REPO, repo_folder) as hub:
        hub.cut["float.pth"] = 1
        r = float_rt(["download", "--repo", REPO, "--dir", str(dest), "--config", "small", "--accept-license"],
                     hub_env(tmp_path, hub.url))
        ranges = hub.ranges("float.pth")
    assert r.returncode == 0, r.stderr
    assert ranges[0] is None and len(ranges) == 2
    start = int(ranges[1].removeprefix("bytes=").rstrip("-"))  # the second GET continues the first
    assert 0 < start <= size // 2
    assert (dest / "float.pth").read_bytes() == (repo_folder / "float.pth").read_bytes()


def test_interrupted_download_leaves_no_complete_looking_file_and_resumes(repo_folder, tmp_path):
    dest = tmp_path / "ck"
    size = (repo_folder / "float.pth").stat().st_size
    with FakeHub(REPO, repo_folder) as hub:
        hub.stall.add("float.pth")
        env = hub_env(tmp_path, hub.url, HF_HUB_DOWNLOAD_TIMEOUT="120")
        p = subprocess.Popen([sys.executable, "-m", "server.cli", "download", "--repo", REPO, "--dir", str(dest),
                              "--config", "small", "--accept-license"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        part = dest / ".partial" / f"{hashlib.sha256((repo_folder / 'float.pth').read_bytes()).hexdigest()}.part"
        end = time.monotonic() + 60
        while time.monotonic() < end and not (part.is_file() and part.stat().st_size):
            time.sleep(0.1)
        p.send_signal(signal.SIGKILL)          # the machine goes away mid-file
        p.wait()
        kept = [part.stat().st_size]
        assert 0 < kept[0] <= size // 2
        assert not (dest / "float.pth").exists()
        hub.stall.clear()
        hub.release.set()
        r = float_rt(["download", "--repo", REPO, "--dir", str(dest), "--config", "small", "--accept-license"], env)
        ranges = hub.ranges("float.pth")
    assert r.returncode == 0, r.stderr
    assert ranges[-1] == f"bytes={kept[0]}-"
    assert "resuming float.pth" in r.stdout
    assert not (dest / ".partial").exists()
    assert (dest / "float.pth").read_bytes() == (repo_folder / "float.pth").read_bytes()


def test_repo_missing_a_file_is_refused_before_downloading(repo_folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(repo_folder, broken)
    (broken / "wav2vec-english-speech-emotion-recognition" / "pytorch_model.bin").unlink()
    dest = tmp_path / "ck"
    with FakeHub(REPO, broken) as hub:
        r = float_rt(["download", "--repo", REPO, "--dir", str(dest), "--accept-license"], hub_env(tmp_path, hub.url))
        gets = [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert "wav2vec-english-speech-emotion-recognition/model.safetensors or pytorch_model.bin" in err[0]
    assert gets == [] and downloaded(dest) == set()


def test_no_server_is_one_clear_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # closed again: nothing listens there
    r = float_rt(["download", "--dir", str(tmp_path / "ck"), "--accept-license"],
                 hub_env(tmp_path, f"http://127.0.0.1:{port}"))
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert err[0].startswith("error: cannot download yuvraj108c/float@main") and "network" in err[0]


def test_licence_must_be_accepted(repo_folder, tmp_path):
    with FakeHub(REPO, repo_folder) as hub:
        r = float_rt(["download", "--repo", REPO, "--dir", str(tmp_path / "ck")], hub_env(tmp_path, hub.url))
        requests = list(hub.requests)
    assert r.returncode == 2
    assert "CC BY-NC-ND 4.0" in r.stdout and "non-commercial" in r.stdout
    assert "--accept-license" in r.stderr and "FLOAT_RT_ACCEPT_LICENSE=1" in r.stderr
    assert requests == [] and not (tmp_path / "ck").exists()


def test_commands_use_the_downloaded_folder(repo_folder, tmp_path, portrait_png, speech_wav):
    with FakeHub(REPO, repo_folder) as hub:
        env = hub_env(tmp_path, hub.url)
        missing = float_rt(["generate", "--config", "small", "--ref", str(portrait_png), "--audio", str(speech_wav),
                            "--out", str(tmp_path / "x.mp4")], env)
        assert missing.returncode == 2
        assert "float-rt download --accept-license" in missing.stderr and "CC BY-NC-ND" in missing.stderr
        r = float_rt(["download", "--repo", REPO, "--config", "small", "--accept-license"], env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cache" / "checkpoints" / "float.pth").is_file()
    out = tmp_path / "out.mp4"
    g = float_rt(["generate", "--config", "small", "--ref", str(portrait_png), "--audio", str(speech_wav),
                  "--out", str(out), "--nfe", "3"], env)
    assert g.returncode == 0, g.stderr
    assert out.stat().st_size > 1000
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--config", "small", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = None
        end = time.monotonic() + 120
        while time.monotonic() < end and server.poll() is None and health is None:
            try:
                health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read())
            except OSError:
                time.sleep(0.3)
        assert health is not None, server.stdout.read() if server.poll() is not None else "no answer"
        assert health["status"] == "ok" and health["model"] == "small"
    finally:
        server.terminate()
        server.wait(30)


# -- the Ditto family: the same downloader, its own files, licences and check ---------------------

DITTO_REPO = "digital-avatar/ditto-talkinghead"
DITTO_FILES = {f"ditto_pytorch/models/{n}.pth" for n in ("appearance_extractor", "motion_extractor", "warp_network",
                                                         "decoder", "stitch_network", "lmdm_v0.4_hubert")} | \
              {"ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx"} | \
              {"ditto_onnx/blaze_face.onnx", "ditto_onnx/face_mesh.onnx"}     # the eye measures' models


@pytest.fixture(scope="module")
def ditto_repo(tmp_path_factory):
    """ditto-tiny recipe files laid out as the published repo, with the repo's other folders (TensorRT
    engines, ONNX graphs, pickled configs) that the family must not fetch, and a stitching file as
    LivePortrait saved it (DDP `module.` prefixes, mouth and eye retargeting entries)."""
    from float_rt.config import load_config
    from float_rt.ditto.weights import write_demo_folder
    from float_rt.resources import config_path
    folder = tmp_path_factory.mktemp("hub") / "ditto"
    write_demo_folder(load_config(config_path("ditto-tiny")), folder)
    (folder / "RECIPE_WEIGHTS.txt").unlink()
    stitch = folder / "ditto_pytorch/models/stitch_network.pth"
    state = torch.load(stitch, weights_only=True)["retarget_shoulder"]
    torch.save({"retarget_shoulder": {f"module.{k}": v for k, v in state.items()},
                "retarget_mouth": {"module.mlp.0.weight": torch.zeros(4, 2)}}, stitch)
    (folder / "README.md").write_text("# ditto\n")
    for extra in ("ditto_trt_Ampere_Plus/decoder_fp16.engine", "ditto_onnx/lmdm_v0.4_hubert.onnx",
                  "ditto_cfg/v0.4_hubert_cfg_pytorch.pkl"):
        (folder / extra).parent.mkdir(parents=True, exist_ok=True)
        (folder / extra).write_bytes(b"\0" * 2000)
    return folder


def test_ditto_download_fetches_its_files_prints_licences_and_checks(ditto_repo, tmp_path, portrait_png):
    env = hub_env(tmp_path, "")
    with FakeHub(DITTO_REPO, ditto_repo) as hub:
        env["HF_ENDPOINT"] = hub.url
        hub.cut["ditto_pytorch/models/lmdm_v0.4_hubert.pth"] = 1   # a cut connection is continued
        r = float_rt(["download", "--config", "ditto-tiny"], env)   # default repo and folder, no --accept-license
        ranges = hub.ranges("ditto_pytorch/models/lmdm_v0.4_hubert.pth")
    assert r.returncode == 0, r.stderr
    assert "Apache-2.0" in r.stdout and "MIT" in r.stdout and "MediaPipe" in r.stdout and "CC BY-NC-ND" not in r.stdout
    dest = tmp_path / "cache" / "ditto"
    assert downloaded(dest) == DITTO_FILES
    for f in DITTO_FILES:
        assert (dest / f).read_bytes() == (ditto_repo / f).read_bytes()
    assert len(ranges) == 2 and ranges[0] is None    # fetched again after the cut (resumed if past a write chunk)
    assert "loaders' key and shape checks" in r.stdout
    assert r.stdout.count("keys match ditto-tiny") == 6 and r.stdout.count("onnxruntime loads it") == 3
    # generate finds the downloaded folder when --checkpoints is left out
    audio = tmp_path / "a.wav"
    write_audio(audio, 0.1 * np.sin(np.arange(8000, dtype=np.float32) / 9)[None], 16000)
    g = float_rt(["generate", "--config", "ditto-tiny", "--ref", str(portrait_png), "--audio", str(audio),
                  "--out", str(tmp_path / "o.mp4"), "--steps", "2"], env)
    assert g.returncode == 0, g.stderr
    assert (tmp_path / "o.mp4").stat().st_size > 1000


def test_ditto_without_files_says_how_to_get_them(tmp_path, portrait_png, speech_wav):
    r = float_rt(["generate", "--config", "ditto", "--ref", str(portrait_png), "--audio", str(speech_wav),
                  "--out", str(tmp_path / "o.mp4")], hub_env(tmp_path, "http://127.0.0.1:9"))
    assert r.returncode == 2
    assert "float-rt download --config ditto" in r.stderr and "Apache-2.0" in r.stderr


def test_ditto_repo_missing_a_file_is_refused(ditto_repo, tmp_path):
    partial = tmp_path / "repo"
    shutil.copytree(ditto_repo, partial)
    (partial / "ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx").unlink()
    with FakeHub(DITTO_REPO, partial) as hub:
        r = float_rt(["download", "--config", "ditto-tiny", "--dir", str(tmp_path / "ck")], hub_env(tmp_path, hub.url))
        gets = [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]
    assert r.returncode == 2 and gets == []
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "is not a Ditto repo: it has no ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx" \
        in err[0]
