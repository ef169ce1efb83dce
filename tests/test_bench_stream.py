"""`float-rt bench-stream` and `float-rt stream` on either family: the small FLOAT config and ditto-tiny,
both on recipe weights.  The figures depend on the machine; what is checked holds on any machine."""
import json
import math

import numpy as np
import pytest
import yaml
from conftest import SMALL, write_audio
from test_stream_cli import _decode
from unhurried import UNHURRIED

from float_rt.media import load_audio
from float_rt.resources import config_path
from server.cli import main

COMMON = ("steps", "sessions", "latency", "tts")


@pytest.fixture(params=["small", "ditto-tiny"])
def family_args(request):
    """(--config/--checkpoints arguments, family name) of each family's tiny config."""
    if request.param == "small":
        return ["--config", str(SMALL), "--checkpoints", str(request.getfixturevalue("small_ckpt"))], "float"
    return ["--config", "ditto-tiny", "--checkpoints", str(request.getfixturevalue("ditto_ckpt"))], "ditto"


@pytest.fixture(scope="module")
def unhurried_yaml(tmp_path_factory):
    """The packaged stream config with late frames waited for (a busy machine skips nothing)."""
    raw = yaml.safe_load(config_path("stream").read_text())
    raw["streaming"].update(UNHURRIED)
    path = tmp_path_factory.mktemp("stream") / "unhurried.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def one_second(tmp_path_factory, speech_wav):
    path = tmp_path_factory.mktemp("clip") / "one_second.wav"
    return write_audio(path, load_audio(speech_wav)[:16000], 16000)


def test_bench_stream_family_free_sections(family_args, portrait_png, one_second, unhurried_yaml, tmp_path, capsys):
    args, family = family_args
    js, png = tmp_path / "b.json", tmp_path / "lat.png"
    assert main(["bench-stream", *args, "--ref", str(portrait_png), "--audio", str(one_second),
                 "--stream-config", str(unhurried_yaml), "--sections", ",".join(COMMON), "--session-counts", "1,2",
                 "--session-steps", "2", "--replies", "1", "--json", str(js), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert f"({family}) on cpu" in printed
    for name in COMMON:
        assert f"[{name}]" in printed
    r = json.loads(js.read_text())
    assert set(r) == set(COMMON)

    st = r["steps"]
    alg = st["algorithmic_latency_ms"]
    assert alg > 0 and (family != "float" or alg == 360)     # FLOAT: chunk 5 + lookahead 4 frames
    assert st["frames"] == 25 and st["frames_per_step"] > 0
    assert st["step_audio_ms"] == st["frames_per_step"] * 40
    assert st["total_ms"] > 0 and st["total_median_ms"] > 0 and st["rtf"] > 0
    assert all(st[f"{k}_ms"] >= 0 for k in ("audio", "emotion", "sample", "decode"))
    assert st["sample_ms"] > 0 and st["decode_ms"] > 0

    se = r["sessions"]
    rows = se["rows"]
    assert [row["sessions"] for row in rows] in ([1], [1, 2])
    for row in rows:
        assert row["step_ms"] > 0 and row["frames_per_step"] > 0
        assert row["step_audio_ms"] == pytest.approx(row["frames_per_step"] * 40)
        assert row["realtime"] == (row["step_ms"] <= row["step_audio_ms"])
    assert se["max_realtime_sessions"] == max([row["sessions"] for row in rows if row["realtime"]], default=0)

    lat = r["latency"]
    assert lat["frames"] >= 25 and lat["dropped"] == 0 and lat["latency_p50_ms"] > 0
    assert lat["latency_p95_ms"] >= lat["latency_p50_ms"] and lat["algorithmic_ms"] == alg
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    tts = r["tts"]
    assert tts["replies"] == 1 and tts["reply_s"] == 1.0 and tts["algorithmic_ms"] == alg
    assert 0 <= tts["voice_onset_ms"] < 1000
    row = tts["rows"][0]     # late frames are waited for: the reply's voiced frames are all shown
    assert 0 < row["ready_ms"] <= row["shown_ms"] and row["reply_frame"] >= 0
    assert tts["first_voiced_shown_ms"] == row["shown_ms"]


def test_bench_stream_default_sections_are_the_familys():
    from streaming.cli import COMMON_SECTIONS, family_sections
    assert family_sections("ditto") == COMMON_SECTIONS == COMMON
    assert family_sections("float") == ("features", "nfe", "offline", "configs", *COMMON)


@pytest.mark.parametrize("section", ["features", "nfe", "offline", "configs"])
def test_float_only_section_asked_of_ditto_is_one_clear_error(section, portrait_png, speech_wav, ditto_ckpt, capsys):
    assert main(["bench-stream", "--config", "ditto-tiny", "--checkpoints", str(ditto_ckpt), "--ref",
                 str(portrait_png), "--audio", str(speech_wav), "--sections", f"steps,{section}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and section in err[0]
    assert "ditto family has: steps, sessions, latency, tts" in err[0]


def test_bench_stream_unknown_section(portrait_png, speech_wav, small_ckpt, capsys):
    assert main(["bench-stream", "--config", str(SMALL), "--checkpoints", str(small_ckpt), "--ref",
                 str(portrait_png), "--audio", str(speech_wav), "--sections", "steps,bogus"]) == 2
    assert "unknown section(s) bogus" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--nfe", "3"], ["--chunk-frames", "7"], ["--lookahead-ms", "80"],
                                    ["--left-context-ms", "500"], ["--backend", "decoder=onnxruntime"]])
def test_float_options_refused_for_ditto(option, portrait_png, speech_wav, ditto_ckpt, tmp_path, capsys):
    for cmd in (["stream", "--out", str(tmp_path / "x.mp4")], ["bench-stream"]):
        assert main([*cmd, "--config", "ditto-tiny", "--checkpoints", str(ditto_ckpt), "--ref", str(portrait_png),
                     "--audio", str(speech_wav), *option]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {option[0]} is not an option of the ditto family"
                       + (" (its live sessions commit their own windows)" if option[0] != "--backend" else "")]
    assert not (tmp_path / "x.mp4").exists()


def test_stream_emotion_checked_against_the_family(portrait_png, speech_wav, small_ckpt, ditto_ckpt, tmp_path,
                                                   capsys):
    assert main(["stream", "--config", str(SMALL), "--checkpoints", str(small_ckpt), "--ref", str(portrait_png),
                 "--audio", str(speech_wav), "--out", str(tmp_path / "x.mp4"), "--emo", "contempt"]) == 2
    err = capsys.readouterr().err
    assert "unknown emotion 'contempt' for the float family" in err
    assert main(["stream", "--config", "ditto-tiny", "--checkpoints", str(ditto_ckpt), "--ref", str(portrait_png),
                 "--audio", str(speech_wav), "--out", str(tmp_path / "x.mp4"), "--emo", "joy"]) == 2
    assert "choose from Angry, Disgust" in capsys.readouterr().err


def test_stream_ditto_writes_mp4_with_speech(ditto_ckpt, portrait_png, speech_wav, tmp_path, capsys):
    clip = write_audio(tmp_path / "clip.wav", load_audio(speech_wav)[:19000], 16000)
    out = tmp_path / "d.mp4"
    assert main(["stream", "--config", "ditto-tiny", "--checkpoints", str(ditto_ckpt), "--ref", str(portrait_png),
                 "--audio", str(clip), "--out", str(out), "--emo", "HAPPY"]) == 0
    speech = load_audio(clip)
    frames, audio, start = _decode(out)
    assert len(frames) == math.ceil(len(speech) / 16000 * 25) == 30
    assert frames[0].shape[0] == frames[0].shape[1] and frames[0].shape[2] == 3
    # The audio track is the input speech at the video's clock.
    n = min(len(audio), len(speech)) - 2000
    corr = [np.dot(audio[k:k + n], speech[:n]) if k >= 0 else np.dot(audio[:n], speech[-k:n - k])
            for k in range(-800, 801, 16)]
    lag_ms = (np.argmax(corr) * 16 - 800) / 16 + start * 1000
    assert abs(lag_ms) <= 40
    printed = capsys.readouterr().out
    assert f"wrote {out}: 30 frames" in printed and "algorithmic latency" in printed


@pytest.mark.parametrize("argv, expect", [
    (["stream", "--out", "o.mp4", "--nfe", "3"], "--nfe is not an option of the ditto family"),
    (["bench-stream", "--sections", "offline"], "the ditto family has: steps, sessions, latency, tts"),
    (["bench-stream", "--emo", "bored"], "unknown emotion 'bored' for the ditto family"),
])
def test_ditto_refusals_come_before_heavy_imports(argv, expect, portrait_png, speech_wav, tmp_path):
    from test_startup import run
    rc, heavy, errors, stderr = run(*argv, "--config", "ditto-tiny", "--checkpoints", tmp_path / "none",
                                    "--ref", portrait_png, "--audio", speech_wav)
    assert rc == 2 and len(errors) == 1 and expect in errors[0], stderr
    assert heavy == [], f"imported {heavy} before refusing"
