"""The Ditto family through the commands: configs, the family seam, `reference` on the shared tiny
case, `demo-weights`, and `generate` on a real photo and real speech (ditto-tiny recipe weights)."""
import json
import math
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest
import torch

from conftest import DITTO_REF, ROOT, write_audio
from server.cli import main

CASE = DITTO_REF / "cases" / "tiny"


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("ditto_tiny")
    assert main(["demo-weights", "--config", "ditto-tiny", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def photo(portrait_png, tmp_path_factory):
    """The real portrait cut to an odd, non-square size (the video must be even-sized)."""
    img = cv2.imread(str(portrait_png))[:381, :500]
    path = tmp_path_factory.mktemp("photo") / "portrait.png"
    cv2.imwrite(str(path), img)
    return path


def _duration(path) -> float:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        return sum(f.samples for f in c.decode(s)) / s.sample_rate


def _video(path):
    with av.open(str(path)) as c:
        names = [s.codec_context.name for s in c.streams]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return names, frames


def _generate(ckpt, ref, audio, out, *extra):
    return main(["generate", "--config", "ditto-tiny", "--checkpoints", str(ckpt), "--ref", str(ref),
                 "--audio", str(audio), "--out", str(out), "--steps", "4", *extra])


# -- configs and the seam --------------------------------------------------------------------------

def test_tiny_config_is_the_case_and_ditto_the_published_sizes():
    from float_rt.ditto.config import DittoConfig, LMDMSizes
    from float_rt.ditto.reference import case_config
    from float_rt.liveportrait.sizes import RendererSizes
    from float_rt.config import load_config
    from float_rt.resources import config_path
    tiny, full = load_config(config_path("ditto-tiny")), load_config(config_path("ditto"))
    case = case_config(json.loads((CASE / "config.json").read_text()))
    assert isinstance(tiny, DittoConfig) and tiny.family == full.family == "ditto"
    assert (tiny.renderer, tiny.lmdm, tiny.windows, tiny.sampler) == (case.renderer, case.lmdm, case.windows,
                                                                       case.sampler)
    assert (full.renderer, full.lmdm) == (RendererSizes(), LMDMSizes())
    assert (full.source.crop_scale, full.source.crop_vy) == (2.3, -0.125)


def test_family_lookup_and_light_config_loading():
    from float_rt.ditto.layout import FILES, LMDM_PATH
    from float_rt.family import family_named, family_of
    from float_rt.liveportrait.keys import FILES as RENDERER_FILES
    from float_rt.ditto.loader import LMDM_FILE
    assert set(FILES) == {*RENDERER_FILES, LMDM_PATH, "aux_models/hubert_streaming_fix_kv.onnx"}
    assert LMDM_PATH.endswith(LMDM_FILE)
    assert family_of(object()).name == "float" and family_named("ditto").name == "ditto"
    with pytest.raises(ValueError, match="unknown model family 'nope'"):
        family_named("nope")
    # Loading a config and checking a folder happen before torch is imported.
    code = ("import sys; from float_rt.config import load_config; from float_rt.resources import config_path; "
            "from float_rt.family import family_of; c = load_config(config_path('ditto')); "
            "family_of(c).check_layout.__call__; print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_unknown_section_names_the_file(tmp_path):
    from float_rt.config import load_config
    bad = tmp_path / "d.yaml"
    bad.write_text((ROOT / "configs" / "ditto-tiny.yaml").read_text() + "extra: 1\n")
    with pytest.raises(ValueError, match=r"d\.yaml: unknown section\(s\) of a ditto config: extra"):
        load_config(bad)


def test_window_seam_reproduces_the_offline_rows(tiny_ckpt):
    """Windows driven one at a time through Family.window hand out the rows of the offline loop
    (same noises, same order): equal to its fused sequence, and on the expression dims (which the
    final whole-clip smoothing leaves alone) equal to offline_motion's output."""
    import argparse

    from float_rt.config import load_config
    from float_rt.ditto.condition import build_condition
    from float_rt.ditto.generate import encode_source
    from float_rt.ditto.motion import SMOOTHED_DIMS
    from float_rt.ditto.sampler import sample_window
    from float_rt.ditto.windows import OfflineTrace, offline_motion
    from float_rt.family import family_named
    from float_rt.resources import config_path
    fam = family_named("ditto")
    cfg = load_config(config_path("ditto-tiny"))
    model = fam.load(cfg, tiny_ckpt, "cpu")
    ref = encode_source(model, torch.from_numpy(np.load(CASE / "inputs.npz")["image"]), 4)
    features = torch.randn(75, 1024, generator=torch.Generator().manual_seed(3))
    carry = fam.new_carry(model, ref, argparse.Namespace(steps=3, seed=5, emo=None))
    (L, step), rows = fam.window_span(model), []
    for start in range(0, len(features), step):
        motion, carry = fam.window(model, ref, carry, features[start:start + L])
        rows.append(motion.rows)
    handed = torch.cat(rows)
    # the offline loop with the noises drawn in the seam's order: step noises, then one x_T per window
    gen = torch.Generator().manual_seed(5)
    steps = torch.randn((carry.scheduler.num_noises, L, 265), generator=gen)
    starts = [torch.randn((1, L, 265), generator=gen) for _ in rows]

    def sample(w, cond_frame, window_cond):
        return sample_window(model.lmdm, carry.scheduler, cond_frame[None], window_cond[None], starts[w], steps)[0]

    trace = OfflineTrace()
    offline = offline_motion(build_condition(features, ref.condition), ref.motion, cfg.windows, L, sample, trace)
    assert len(trace.windows) == len(rows) == 3
    assert handed.shape[0] == carry.windows.result.shape[0] - cfg.windows.fuse_length(L) == 40 + 30 + 30 - 10
    assert torch.equal(handed[:75, SMOOTHED_DIMS:], offline[:, SMOOTHED_DIMS:])     # offline is cut to 75 rows
    assert torch.equal(motion.d0, carry.windows.result[0:1])
    frames = fam.render(model, ref, type(motion)(handed[:3], motion.d0))
    assert frames.shape == (3, 256, 256, 3) and frames.dtype == np.uint8


# -- reference -----------------------------------------------------------------------------------

def test_reference_cli_every_key_within_the_case_tolerances(tmp_path, capsys):
    from float_rt.reference import compare
    out = tmp_path / "ours.npz"
    assert main(["reference", str(CASE), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    ours, expected = dict(np.load(out)), dict(np.load(CASE / "expected.npz"))
    assert set(ours) == set(expected)
    assert np.array_equal(ours["frame_index"], expected["frame_index"]) and "frame_index          equal" in printed
    result = compare(ours, expected, json.loads((CASE / "tolerances.json").read_text()))
    assert set(result) == set(expected) - {"frame_index"}
    bad = {k: v for k, v in result.items() if not v[2]}
    assert not bad, f"keys off the official outputs: {bad}"
    assert "FAIL" not in printed and printed.count(" ok") == len(result)


# -- demo weights ----------------------------------------------------------------------------------

def test_demo_weights_layout_and_loaders(tiny_ckpt):
    from float_rt.config import load_config
    from float_rt.ditto.hubert import HubertRunner
    from float_rt.ditto.weights import check_folder
    from float_rt.resources import config_path
    files = sorted(p.relative_to(tiny_ckpt).as_posix() for p in tiny_ckpt.rglob("*") if p.is_file())
    assert files == sorted(["RECIPE_WEIGHTS.txt", "ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx",
                            *(f"ditto_pytorch/models/{n}.pth" for n in (
                                "appearance_extractor", "motion_extractor", "warp_network", "decoder",
                                "stitch_network", "lmdm_v0.4_hubert")),
                            "ditto_onnx/blaze_face.onnx", "ditto_onnx/face_mesh.onnx"])
    runner = HubertRunner(tiny_ckpt / "ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx")
    (inp,) = runner.session.get_inputs()
    assert (inp.name, inp.shape, inp.type) == ("input_values", [1, 6480], "tensor(float)")
    assert runner(np.zeros(6480, np.float32)).shape == (20, 1024)
    # the eye models' stand-ins take and give what the official code feeds and reads
    from float_rt.ditto.eyes import EyeMeasurer
    eyes = EyeMeasurer.from_folder(tiny_ckpt)
    for session, size, outputs in ((eyes.detector, 128, [[1, 896, 16], [1, 896, 1]]),
                                   (eyes.mesh, 256, [[1, 1, 1, 1434], [1, 1, 1, 1], [1, 1, 1, 1]])):
        (inp,) = session.get_inputs()
        assert (inp.name, inp.shape, inp.type) == ("input", [1, size, size, 3], "tensor(float)")
        assert [o.shape for o in session.get_outputs()] == outputs
    lines = check_folder(load_config(config_path("ditto-tiny")), tiny_ckpt, "ditto-tiny")
    assert len(lines) == 9 and all("ditto-tiny" in ln or "onnxruntime" in ln for ln in lines)


# -- generate ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pasted(tiny_ckpt, photo, speech_wav, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "pasted.mp4"
    assert _generate(tiny_ckpt, photo, speech_wav, out, "--paste-back", "--emo", "happy", "--seed", "3") == 0
    return out


def test_generate_frames_and_audio(tiny_ckpt, photo, speech_wav, tmp_path):
    out = tmp_path / "new" / "crop.mp4"
    assert _generate(tiny_ckpt, photo, speech_wav, out, "--emo", "contempt") == 0
    names, frames = _video(out)
    assert names == ["h264", "aac"]
    assert len(frames) == math.ceil(_duration(speech_wav) * 25)
    assert frames[0].shape == (256, 256, 3)
    assert abs(_duration(out) - _duration(speech_wav)) < 0.1    # the speech is the video's sound
    assert np.std(np.stack(frames).astype(np.float32)) > 1.0


def test_paste_back_is_the_photo_outside_the_mask():
    """Before the codec: exactly the photo's pixels wherever the feathered mask is 0."""
    from float_rt.media import PasteBack, SquareCrop
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (101, 150, 3), dtype=np.uint8)
    paste = PasteBack(img, SquareCrop(40, -10, 70, 64), 32, colour_match=False)   # the frame's own colour
    out = paste(np.full((32, 32, 3), 255, np.uint8))
    assert out.shape == (100, 150, 3)
    mask = paste.mask[..., 0]
    assert np.array_equal(out[mask == 0], img[:100][mask == 0]) and (mask == 0).mean() > 0.6
    assert (out[mask == 1] == 255).all() and (mask == 1).sum() > 500


def test_paste_back_video_keeps_the_photo_outside_the_crop(pasted, photo, speech_wav, tmp_path):
    from float_rt.config import load_config
    from float_rt.ditto.generate import face_crop
    from float_rt.media import PasteBack, VideoWriter, load_image
    from float_rt.resources import config_path
    names, frames = _video(pasted)
    img = load_image(photo)
    assert names == ["h264", "aac"] and len(frames) == math.ceil(_duration(speech_wav) * 25)
    assert frames[0].shape == (380, 500, 3)                          # the photo's size, made even
    mask = PasteBack(img, face_crop(load_config(config_path("ditto-tiny")), img), 256).mask[..., 0]
    far = cv2.dilate((mask > 0).astype(np.uint8), np.ones((17, 17), np.uint8)) == 0
    assert far.mean() > 0.5 and (mask > 0.99).sum() > 10000
    photo_px = img[:380, :500]
    # what the codec alone does to the photo (H.264, yuv420p): the bound for "the photo's pixels"
    with VideoWriter(tmp_path / "photo.mp4", 25, (500, 380)) as w:
        w.write(photo_px[None])
    codec = np.abs(_video(tmp_path / "photo.mp4")[1][0].astype(np.float32) - photo_px)[far].mean()
    for f in (frames[0], frames[len(frames) // 2]):
        diff = np.abs(f.astype(np.float32) - photo_px)
        assert diff[far].mean() <= codec                                      # codec rounding only
        assert diff[mask > 0.99].mean() > 10 * codec                          # the animated crop is there


def test_silent_audio_warns_and_generates(tiny_ckpt, photo, tmp_path, caplog):
    audio = write_audio(tmp_path / "s.wav", np.zeros((1, 8000)), 16000)
    assert _generate(tiny_ckpt, photo, audio, tmp_path / "o.mp4") == 0
    assert [r.message for r in caplog.records].count(f"{audio} is silent: the avatar will only make idle motion") == 1
    assert len(_video(tmp_path / "o.mp4")[1]) == 13


@pytest.mark.parametrize("case", ["no_face", "not_image", "missing_image", "nan_audio", "empty_audio",
                                  "missing_onnx", "broken_onnx", "float_option", "float_emotion", "no_folder"])
def test_bad_input_is_one_line_and_exit_2(tiny_ckpt, photo, speech_wav, tmp_path, capsys, case):
    import shutil
    ckpt, ref, audio, extra = tiny_ckpt, photo, speech_wav, []
    if case == "no_face":
        ref = tmp_path / "grey.png"
        cv2.imwrite(str(ref), np.full((200, 200, 3), 90, np.uint8))
    elif case == "not_image":
        ref = tmp_path / "x.jpg"
        ref.write_text("hello")
    elif case == "missing_image":
        ref = tmp_path / "nothing.png"
    elif case == "nan_audio":
        audio = write_audio(tmp_path / "n.wav", np.full((1, 4000), np.nan), 16000)
    elif case == "empty_audio":
        audio = write_audio(tmp_path / "e.wav", np.zeros((1, 0)), 16000)
    elif case in ("missing_onnx", "broken_onnx"):
        ckpt = tmp_path / "ck"
        shutil.copytree(tiny_ckpt, ckpt)
        onnx = ckpt / "ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx"
        onnx.unlink() if case == "missing_onnx" else onnx.write_bytes(b"not a model")
    elif case == "float_option":
        extra = ["--nfe", "4"]
    elif case == "float_emotion":
        code = main(["generate", "--config", "small", "--checkpoints", str(tiny_ckpt), "--ref", str(ref), "--audio",
                     str(audio), "--out", str(tmp_path / "o.mp4"), "--emo", "contempt"])
    elif case == "no_folder":
        ckpt = tmp_path / "absent"
    out = tmp_path / "o.mp4"
    if case != "float_emotion":
        code = _generate(ckpt, ref, audio, out, *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists()
    if case == "missing_onnx":
        assert "hubert_streaming_fix_kv.onnx not found" in err[0]


def test_reference_runs_an_online_case(tmp_path):
    """No online case ships; this one is the tiny case switched to the published online settings
    (overlap 30 of 40 -> valid 10, fuse 10; 10 steps; the conditioning frame reset to the source
    every window keeping dims 0..201), with the stand-in HuBERT's real outputs recorded for it.
    Checked: it runs through the live window loop with the official online bookkeeping."""
    import shutil

    from float_rt.ditto import hubert
    from float_rt.ditto.recipe import hubert_stub_weights
    from float_rt.ditto.reference import run_ditto_case
    case = tmp_path / "online"
    case.mkdir()
    shutil.copy(CASE / "keys.json", case)
    raw = json.loads((CASE / "config.json").read_text())
    raw["setup_kwargs"].update(online_mode=True, overlap_v2=30, sampling_timesteps=10, fix_kp_cond=1,
                               fix_kp_cond_dim=[0, 202])
    raw.update(render_frames=[0, 40], full_frames=[3])
    (case / "config.json").write_text(json.dumps(raw))
    inputs = dict(np.load(CASE / "inputs.npz"))
    silence, _ = hubert.offline_chunks(np.zeros(30 * hubert.HOP, np.float32))
    chunks = np.concatenate([silence, np.stack(hubert.online_chunks(inputs["waveform"]))])
    runner = hubert.HubertRunner(hubert.write_stub_onnx(tmp_path / "stub.onnx", *hubert_stub_weights()))
    inputs["hubert_chunk_out"] = np.stack([runner(c) for c in chunks])
    gen = torch.Generator().manual_seed(0)
    inputs["noise_steps"] = torch.randn((9, 40, 265), generator=gen).numpy()
    inputs["noise_init"] = torch.randn((12, 40, 265), generator=gen).numpy()
    np.savez(case / "inputs.npz", **inputs)
    out = run_ditto_case(case)
    assert np.array_equal(out["hubert_chunks"], chunks) and len(silence) == 6
    assert out["aud_feat"].shape == (30 + 5 * (len(chunks) - 6), 1024)
    w = out["lmdm_windows"].shape[0]
    assert out["aud_cond_windows"].shape == (w, 40, 1103) and out["kp_cond_windows"].shape == (w, 265)
    # every window after the first emits 10 rows (the last: its real rows), covering the whole stream
    assert out["motion"].shape[0] >= 63 and out["d0"].shape == (1, 265)
    first = out["lmdm_windows"][0]      # d0: row 0 of the first window after its smoothing (dims < 202)
    assert np.array_equal(out["d0"][0, 202:], first[0, 202:])
    assert np.allclose(out["d0"][0, :202], first[:2, :202].mean(0), rtol=0, atol=1e-6)
    assert out["frames_center"].shape == (2, 32, 32, 3) and out["frames"].shape == (1, 256, 256, 3)
    assert np.isfinite(out["x_d"]).all() and out["x_d"].shape == (out["motion"].shape[0], 21, 3)
    # the conditioning frame is the source on dims 202.. from the second window on (fix_kp_cond 1)
    source = out["kp_cond_windows"][0]
    assert np.array_equal(out["kp_cond_windows"][1:, 202:], np.broadcast_to(source[202:], (w - 1, 63)))


@pytest.mark.parametrize("case", ["missing_onnx", "missing_ref", "float_option"])
def test_ditto_input_errors_come_before_heavy_imports(tiny_ckpt, photo, speech_wav, tmp_path, case):
    import shutil

    from test_startup import run     # the probe of tests/test_startup.py: exit code, heavy modules, errors
    ckpt, ref, extra = tiny_ckpt, photo, []
    if case == "missing_onnx":
        ckpt = tmp_path / "ck"
        shutil.copytree(tiny_ckpt, ckpt)
        (ckpt / "ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx").unlink()
    elif case == "missing_ref":
        ref = tmp_path / "none.png"
    else:
        extra = ["--no-crop"]
    rc, heavy, errors, _ = run("generate", "--config", "ditto", "--checkpoints", ckpt, "--ref", ref, "--audio",
                               speech_wav, "--out", tmp_path / "o.mp4", *extra)
    assert rc == 2 and heavy == [] and len(errors) == 1, errors

