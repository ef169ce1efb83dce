"""`float-rt generate` end to end with the small config, and its bad-input handling."""
import math
import subprocess
import sys

import av
import numpy as np
import pytest

from conftest import SMALL, write_audio
from server.cli import main


def _generate(small_ckpt, ref, audio, out, *extra):
    return main(["generate", "--checkpoints", str(small_ckpt), "--config", str(SMALL), "--ref", str(ref),
                 "--audio", str(audio), "--out", str(out), *extra])


def test_generate_writes_playable_mp4_with_audio(small_ckpt, portrait_png, speech_wav, tmp_path):
    out = tmp_path / "new" / "folder" / "out.mp4"  # missing folders are created
    assert _generate(small_ckpt, portrait_png, speech_wav, out, "--emo", "happy", "--nfe", "4") == 0
    with av.open(str(speech_wav)) as c:
        s = c.streams.audio[0]
        duration = sum(f.samples for f in c.decode(s)) / s.sample_rate
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == math.ceil(duration * 25)
    assert frames[0].shape == (128, 128, 3)
    assert np.std(np.stack(frames).astype(np.float32)) > 1.0  # not a blank video


def test_generate_is_deterministic_and_follows_options(small_ckpt, small_cfg, portrait_png, speech_wav):
    import torch
    from float_rt.media import load_audio, load_image, prepare_reference
    from float_rt.pipeline import FloatPipeline, sampling_with
    pipe = FloatPipeline.from_checkpoints(small_ckpt, small_cfg, "cpu")
    ref = pipe.encode_reference(prepare_reference(load_image(portrait_png), 128))
    iv = pipe.input_values(load_audio(speech_wav))
    base = sampling_with(small_cfg.sampling, nfe=3)
    m1 = pipe.sample(ref, iv, base)
    assert torch.equal(m1, pipe.sample(ref, iv, base))
    assert not torch.allclose(m1, pipe.sample(ref, iv, sampling_with(base, seed=99)))
    assert not torch.allclose(m1, pipe.sample(ref, iv, sampling_with(base, emotion="sad", e_cfg_scale=2.0)))


@pytest.mark.parametrize("case", ["not_image", "empty_audio", "nan_audio", "cuda", "no_face", "bad_out"])
def test_bad_input_is_one_line_and_exit_2(small_ckpt, portrait_png, speech_wav, tmp_path, capsys, case):
    ref, audio, extra = portrait_png, speech_wav, []
    if case == "not_image":
        ref = tmp_path / "x.jpg"
        ref.write_text("hello")
    elif case == "empty_audio":
        audio = write_audio(tmp_path / "e.wav", np.zeros((1, 0)), 16000)
    elif case == "nan_audio":
        audio = write_audio(tmp_path / "n.wav", np.full((1, 4000), np.nan), 16000)
    elif case == "cuda":
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        extra = ["--device", "cuda"]
    elif case == "no_face":
        import cv2
        ref = tmp_path / "grey.png"
        cv2.imwrite(str(ref), np.full((200, 200, 3), 90, np.uint8))
    out = tmp_path / "o.mp4"
    if case == "bad_out":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "o.mp4"  # a parent that is a file
    code = _generate(small_ckpt, ref, audio, out, *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [err[0]] and err[0].startswith("error: ")  # one line, before any work starts
    assert not out.exists()


def test_unknown_emotion_is_rejected_by_the_cli(small_ckpt, portrait_png, speech_wav, tmp_path):
    r = subprocess.run([sys.executable, "-m", "server.cli", "generate", "--checkpoints", str(small_ckpt),
                        "--ref", str(portrait_png), "--audio", str(speech_wav), "--out", str(tmp_path / "o.mp4"),
                        "--emo", "bored"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice: 'bored'" in r.stderr


def test_silent_audio_generates_with_a_warning(small_ckpt, portrait_png, tmp_path, caplog):
    audio = write_audio(tmp_path / "s.wav", np.zeros((1, 16000)), 16000)
    assert _generate(small_ckpt, portrait_png, audio, tmp_path / "o.mp4", "--nfe", "2") == 0
    assert [r.message for r in caplog.records].count(f"{audio} is silent: the avatar will only make idle motion") == 1


def test_demo_weights_cli_says_output_is_noise(tmp_path, capsys):
    assert main(["demo-weights", "--config", str(SMALL), "--out", str(tmp_path / "ck")]) == 0
    assert "noise" in capsys.readouterr().out
    assert (tmp_path / "ck" / "float.pth").is_file()
