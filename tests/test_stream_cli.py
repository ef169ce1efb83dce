"""`float-rt stream` and `float-rt bench-stream` end to end with the small config."""
import json
import math

import av
import numpy as np
from conftest import SMALL, write_audio

from server.cli import main
from float_rt.media import load_audio


def _stream(small_ckpt, ref, audio, out, *extra):
    return main(["stream", "--checkpoints", str(small_ckpt), "--config", str(SMALL), "--ref", str(ref),
                 "--audio", str(audio), "--out", str(out), *extra])


def _decode(path):
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        res = av.AudioResampler(format="flt", layout="mono", rate=16000)
        chunks = [o.to_ndarray()[0] for f in c.decode(audio=0) for o in res.resample(f)]
        start = float(c.streams.audio[0].start_time * c.streams.audio[0].time_base)
    return frames, np.concatenate(chunks), start


def test_stream_writes_synced_mp4_and_trace(small_ckpt, portrait_png, speech_wav, tmp_path, capsys):
    out, trace = tmp_path / "s.mp4", tmp_path / "t.npz"
    assert _stream(small_ckpt, portrait_png, speech_wav, out, "--trace", str(trace), "--chunk-frames", "7",
                   "--nfe", "3", "--no-crop") == 0
    speech = load_audio(speech_wav)
    frames, audio, start = _decode(out)
    assert len(frames) == math.ceil(len(speech) / 640) and frames[0].shape == (128, 128, 3)
    # The audio track is the input speech, placed at the video's clock (lip-sync offset ~ 0).
    n = min(len(audio), len(speech)) - 4000
    corr = [np.dot(audio[k:k + n], speech[:n]) if k >= 0 else np.dot(audio[:n], speech[-k:n - k])
            for k in range(-800, 801, 16)]
    lag_ms = (np.argmax(corr) * 16 - 800) / 16 + start * 1000
    assert abs(lag_ms) <= 40
    t = np.load(trace)
    assert list(t["pts"]) == list(range(len(frames))) and t["motion"].shape == (len(frames), 128)
    assert np.all(t["ready"] >= t["arrived"])
    printed = capsys.readouterr().out
    assert "algorithmic latency 440 ms" in printed  # chunk 7 + lookahead 4 frames


def test_stream_realtime_paces_frames(small_ckpt, portrait_png, speech_wav, tmp_path, capsys):
    clip = tmp_path / "clip.wav"
    write_audio(clip, load_audio(speech_wav)[:32000], 16000)
    out = tmp_path / "rt.mp4"
    assert _stream(small_ckpt, portrait_png, clip, out, "--realtime", "--no-crop") == 0
    frames, _, _ = _decode(out)
    assert len(frames) >= 0.9 * 50
    assert "latency audio arrived -> frame ready: p50" in capsys.readouterr().out


def test_stream_bad_input_is_one_clear_error(small_ckpt, portrait_png, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    assert _stream(small_ckpt, portrait_png, bad, tmp_path / "x.mp4") == 2
    assert capsys.readouterr().err.startswith("error:")
    assert main(["stream", "--checkpoints", str(small_ckpt), "--config", str(SMALL), "--ref", str(portrait_png),
                 "--audio", str(bad), "--out", "x.mp4", "--chunk-frames", "0"]) == 2


def test_bench_stream_reports_and_plots(small_ckpt, portrait_png, speech_wav, tmp_path):
    clip = tmp_path / "clip.wav"
    write_audio(clip, load_audio(speech_wav)[:24000], 16000)
    js, png = tmp_path / "b.json", tmp_path / "lat.png"
    assert main(["bench-stream", "--checkpoints", str(small_ckpt), "--config", str(SMALL), "--ref", str(portrait_png),
                 "--audio", str(clip), "--no-crop", "--sections", "features,nfe,offline,configs,sessions,latency",
                 "--json", str(js), "--plot", str(png)]) == 0
    r = json.loads(js.read_text())
    assert {row["left_ms"] for row in r["features"]} == {500, 1000, 2000, 4000}
    nfe = {row["nfe"]: row["motion_rel_err"] for row in r["nfe"]}
    assert nfe[10] == 0.0 and nfe[2] > nfe[6]
    assert r["configs"][0]["algorithmic_latency_ms"] == 360
    assert r["sessions"]["rows"][0]["sessions"] == 1
    assert r["latency"]["frames"] > 0
    assert 0 < r["offline"]["motion_rel_err"] < 1 and r["offline"]["frame_psnr_db"] > 10
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stream_takes_the_avatar_controls(small_ckpt, portrait_png, speech_wav, tmp_path, capsys):
    """`stream` is a door of the controls too: pasted back into a non-square photo at its size, a still
    head with motion_scale 0; a control the family cannot express is one error line."""
    import cv2
    photo = tmp_path / "wide.png"
    cv2.imwrite(str(photo), cv2.imread(str(portrait_png))[:381, :500])
    clip = tmp_path / "clip.wav"
    write_audio(clip, load_audio(speech_wav)[:16000], 16000)
    out = tmp_path / "pasted.mp4"
    assert _stream(small_ckpt, photo, clip, out, "--paste-back", "--motion-scale", "0") == 0
    frames, _, _ = _decode(out)
    assert len(frames) == 25 and frames[0].shape == (380, 500, 3)        # the photo's size, made even
    first = frames[0].astype(np.int16)
    assert max(np.abs(f.astype(np.int16) - first).mean() for f in frames) < 1.0   # still, up to the codec
    capsys.readouterr()
    assert main(["stream", "--checkpoints", str(small_ckpt), "--config", str(SMALL), "--ref", str(photo),
                 "--audio", str(clip), "--out", str(tmp_path / "x.mp4"), "--pose", "10,0,0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "float family" in err[0]
