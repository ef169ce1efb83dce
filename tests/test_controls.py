"""The per-session controls (float_rt/controls.py) on the model side: their checks, what each family
can express, motion intensity, Ditto's pose / blinks / gaze, the attentive (listening) motion,
paste-back at a video size, and the `generate` options - real photo, real speech, recipe weights."""
import argparse
import math
import re

import av
import numpy as np
import pytest
import torch

from float_rt.controls import Controls, ControlsError, check_supported, controls_from_args, parse_size

FAMILY_CONFIGS = ["small", "ditto-tiny"]


# -- the dataclass -----------------------------------------------------------------------------------

def test_defaults_change_nothing_and_mapping_converts():
    assert Controls().validate().changed() == set()
    c = Controls.from_mapping({"paste_back": True, "video_size": "1280x720", "pose": [10, -5, 0],
                               "motion_scale": 0, "state": "listening"})
    assert c.video_size == (1280, 720) and c.pose == (10.0, -5.0, 0.0) and c.motion_scale == 0.0
    assert c.changed() == {"paste_back", "video_size", "pose", "motion_scale", "state"} and c.attentive
    assert Controls.from_mapping({"blink": False}, base=c).changed() == c.changed() | {"blink"}


@pytest.mark.parametrize("values, message", [
    ({"colour": 1}, "unknown control(s): colour"),
    ({"motion_scale": 2.5}, "motion_scale must be a number in 0..2"),
    ({"expression_scale": "1"}, "expression_scale must be a number"),
    ({"motion_scale": float("nan")}, "motion_scale must be a number"),
    ({"pose": [1, 2]}, "pose must be three numbers"),
    ({"pose": [50, 0, 0]}, "pose yaw must lie in -45..45"),
    ({"pose": [0, 0, -31]}, "pose roll must lie in -30..30"),
    ({"pose_mode": "absolute"}, "pose_mode must be one of offset, fixed"),
    ({"blink": "yes"}, "blink must be true or false"),
    ({"blink_rate": 0.5}, "blink_rate must be 1..60"),
    ({"blink": False, "blink_rate": 10}, "blink_rate needs blink on"),
    ({"state": "sleeping"}, "state must be one of speaking, listening, thinking, idle"),
    ({"paste_back": True, "video_size": "1281x720"}, "even sides"),
    ({"paste_back": True, "video_size": "2560x1440"}, "larger than a live frame"),
    ({"paste_back": True, "video_size": "wide"}, "WIDTHxHEIGHT"),
    ({"video_size": [640, 360]}, "video_size needs paste_back"),
])
def test_bad_values_are_one_line_errors(values, message):
    with pytest.raises(ControlsError, match=re.escape(message)) as err:
        Controls.from_mapping(values)
    assert "\n" not in str(err.value) and isinstance(err.value, ValueError)


def test_live_and_offline_size_limits():
    assert Controls(paste_back=True, video_size=(1080, 1920)).validate().video_size == (1080, 1920)
    assert Controls(paste_back=True, video_size=(2560, 1440)).validate(live=False)
    with pytest.raises(ControlsError, match="at most 4096"):
        Controls(paste_back=True, video_size=(5000, 1000)).validate(live=False)
    assert parse_size("640X360") == (640, 360)


ASKS = {"paste_back": True, "video_size": (640, 360), "motion_scale": 0.5, "expression_scale": 0.5,
        "pose": (5.0, 0.0, 0.0), "pose_mode": "fixed", "blink": False, "blink_rate": 20.0, "gaze_camera": True,
        "state": "listening"}


@pytest.mark.parametrize("family", ["float", "ditto"])
def test_each_family_says_what_it_can_express(family):
    from float_rt.family import family_named
    fam = family_named(family)
    supported = fam.supported_controls
    assert supported <= set(ASKS)
    for name, value in ASKS.items():
        values = {name: value, **({"paste_back": True} if name == "video_size" else {})}
        c = Controls.from_mapping(values)
        if name in supported:
            assert check_supported(c, supported, fam.name) is c
        else:
            with pytest.raises(ControlsError, match=f"the {family} family cannot express {name}"):
                check_supported(c, supported, fam.name)
    check_supported(Controls(), supported, fam.name)    # defaults never count as asking
    if family == "float":
        assert supported == {"paste_back", "video_size", "motion_scale", "state"}


# -- through each family's seam ------------------------------------------------------------------------

@pytest.fixture(scope="module", params=FAMILY_CONFIGS)
def seam(request, portrait_png, speech_wav, tmp_path_factory):
    """One window of speech motion (and one of silence) through the family seam, on recipe weights."""
    from float_rt.config import load_config
    from float_rt.family import family_of
    from float_rt.media import load_audio, load_image
    from float_rt.resources import config_path
    cfg = load_config(config_path(request.param))
    fam = family_of(cfg)
    folder = fam.check_layout(fam.write_demo_weights(cfg, tmp_path_factory.mktemp("ck")))
    model = fam.load(cfg, folder, "cpu")
    opts = argparse.Namespace(emo="happy", seed=1, steps=2, nfe=3)
    photo = load_image(portrait_png)
    ref = fam.encode_reference(model, photo, opts)
    speech = load_audio(speech_wav)
    length, _ = fam.window_span(model)
    speaking, _ = fam.window(model, ref, fam.new_carry(model, ref, opts), fam.audio_features(model, speech)[:length])
    silence = fam.audio_features(model, np.zeros_like(speech))[:length]
    quiet, _ = fam.window(model, ref, fam.new_carry(model, ref, opts), silence)
    speaking, quiet = _first(speaking, RENDERED), _first(quiet, RENDERED)     # rendering is the slow part
    return argparse.Namespace(fam=fam, model=model, ref=ref, photo=photo, opts=opts, speaking=speaking, quiet=quiet,
                              frames=fam.render(model, ref, speaking))


RENDERED = 12


def _first(motion, n):
    """The first n rows of a window's motion (a tensor, or Ditto's rows with their d0)."""
    from dataclasses import replace
    return replace(motion, rows=motion.rows[:n]) if hasattr(motion, "rows") else motion[:n]


def _rows(motion):
    return getattr(motion, "rows", motion)


def test_scale_one_is_todays_output_exactly(seam):
    same = seam.fam.control_motion(seam.model, seam.ref, seam.speaking, Controls(motion_scale=1.0), 0)
    assert same is seam.speaking and torch.equal(_rows(same), _rows(seam.speaking))
    assert np.array_equal(seam.fam.render(seam.model, seam.ref, same), seam.frames)


def test_scale_zero_gives_a_still_face_while_speech_plays(seam):
    ask = {"motion_scale": 0.0, "expression_scale": 0.0}
    still = Controls(**{k: v for k, v in ask.items() if k in seam.fam.supported_controls})
    motion = seam.fam.control_motion(seam.model, seam.ref, seam.speaking, still, 0)
    frames = seam.fam.render(seam.model, seam.ref, motion)
    assert len(frames) == len(seam.frames) == RENDERED
    assert np.abs(seam.frames.astype(int) - seam.frames[:1]).max() > 20        # the speech moves the face
    assert np.abs(frames.astype(int) - frames[:1]).max() <= 1                  # still within one grey level


def test_half_scale_lies_between(seam):
    half = _rows(seam.fam.control_motion(seam.model, seam.ref, seam.speaking, Controls(motion_scale=0.5), 0))
    rows = _rows(seam.speaking)
    assert not torch.equal(half, rows) and torch.isfinite(half).all()


def test_listening_motion_differs_from_silence_and_is_deterministic(seam):
    c = Controls(state="listening")
    a = seam.fam.control_motion(seam.model, seam.ref, seam.quiet, c, 100)
    b = seam.fam.control_motion(seam.model, seam.ref, seam.quiet, c, 100)
    assert torch.equal(_rows(a), _rows(b))
    quiet_frames = seam.fam.render(seam.model, seam.ref, seam.quiet)
    attentive = seam.fam.render(seam.model, seam.ref, a)
    assert np.abs(attentive.astype(np.float32) - quiet_frames).mean() > 1.0
    assert np.array_equal(attentive, seam.fam.render(seam.model, seam.ref, b))


def test_listening_changes_the_emotion_condition_and_back(seam):
    fam, model, ref, opts = seam.fam, seam.model, seam.ref, seam.opts
    carry = fam.new_carry(model, ref, opts)
    listening = fam.state_inputs(model, ref, carry, Controls(state="thinking"), opts)
    back = fam.state_inputs(model, *listening, Controls(), opts)

    def emotion(inputs):       # Ditto keeps the emotion in the reference's condition, FLOAT in the carry
        r, c = inputs
        return r.condition.emotion if hasattr(r, "condition") else c.we.reshape(-1)
    assert not torch.equal(emotion(listening), emotion((ref, carry)))
    assert torch.equal(emotion(back), emotion((ref, carry)))
    mild = emotion(listening)
    assert math.isclose(float(mild.sum()), 1.0, rel_tol=1e-6) and 0.5 < float(mild.max()) < 0.9


def test_paster_of_the_family_puts_frames_into_the_photo(seam):
    paster = seam.fam.paster(seam.model, seam.ref, seam.photo, Controls(paste_back=True, video_size=(640, 360)))
    out = paster(seam.frames[0])
    assert out.shape == (360, 640, 3) and out.dtype == np.uint8
    mask = paster.mask[..., 0]
    assert np.array_equal(out[mask == 0], paster.photo[mask == 0]) and (mask == 1).sum() > 1000
    assert seam.fam.paster(seam.model, seam.ref, seam.photo, Controls()) is None


# -- Ditto's pose, blinks and gaze (pure functions) ------------------------------------------------

def _source(yaw=0.0, pitch=0.0, roll=0.0, seed=0):
    from float_rt.ditto.controls import degrees_to_bins
    from float_rt.liveportrait.kinematics import MotionInfo
    g = torch.Generator().manual_seed(seed)
    ang = {k: degrees_to_bins(torch.tensor([v])) + 0.1 * torch.randn(1, 66, generator=g)
           for k, v in (("yaw", yaw), ("pitch", pitch), ("roll", roll))}
    return MotionInfo(scale=torch.ones(1, 1), t=0.01 * torch.randn(1, 3, generator=g),
                      exp=0.01 * torch.randn(1, 63, generator=g), kp=0.3 * torch.randn(1, 63, generator=g), **ang)


def _motion(n=30, seed=1):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, 265, generator=g)
    rows[:, 202:] *= 0.01
    return rows, rows[0:1].clone()


def test_degrees_to_bins_has_the_asked_expectation():
    from float_rt.ditto.controls import degrees_to_bins
    from float_rt.liveportrait.kinematics import bins_to_degrees
    deg = torch.tensor([-97.5, -30.0, -0.7, 0.0, 12.34, 45.0, 97.5])
    assert torch.allclose(bins_to_degrees(degrees_to_bins(deg)), deg, atol=1e-4)


@pytest.mark.parametrize("mode", ["fixed", "offset"])
def test_pose_gives_the_asked_angles_in_the_keypoint_transform(mode):
    from float_rt.ditto.controls import control_rows, driven_degrees
    from float_rt.liveportrait.kinematics import bins_to_degrees, drive_info, rotation_matrix, transform_keypoints
    source, (rows, d0) = _source(yaw=8, pitch=-4, roll=2), _motion()
    out = control_rows(rows, d0, source, Controls(pose=(20.0, -10.0, 5.0), pose_mode=mode), 0)
    info = drive_info(source, out, d0)
    got = torch.stack([bins_to_degrees(info.yaw), bins_to_degrees(info.pitch), bins_to_degrees(info.roll)], 1)
    before = driven_degrees(rows, d0, source)[:, [1, 0, 2]]                    # yaw, pitch, roll
    want = torch.tensor([20.0, -10.0, 5.0]) + (before if mode == "offset" else 0)
    assert torch.allclose(got, want.expand_as(got), atol=1e-3)
    # the keypoints are those of that rotation, the rest of the head state unchanged
    kp = transform_keypoints(info)
    rot = rotation_matrix(want[:, 1] if mode == "offset" else want[1].expand(30),
                          want[:, 0] if mode == "offset" else want[0].expand(30),
                          want[:, 2] if mode == "offset" else want[2].expand(30))
    ref = (source.kp.reshape(1, 21, 3) @ rot + info.exp.reshape(-1, 21, 3)) * info.scale[:, :, None]
    ref[..., :2] += info.t[:, None, :2]
    assert torch.allclose(kp, ref, atol=1e-5)
    assert torch.equal(out[:, 199:], rows[:, 199:])


def test_blinks_close_the_eyes_and_reopen():
    from float_rt.ditto.controls import EXP0, blink_closure, control_rows
    from float_rt.liveportrait.kinematics import drive_info, transform_keypoints
    source, (rows, d0) = _source(), _motion(n=80)
    closure = blink_closure(0, 80, rate=30.0)                         # one blink every 50 frames
    peak = int(closure.argmax())
    assert closure[peak] > 0.95 and closure[0] == 0 and closure[peak - 5] == 0 and closure[peak + 6] == 0
    out = control_rows(rows, d0, source, Controls(blink_rate=30.0), 0)
    kp = transform_keypoints(drive_info(source, out, d0))
    open_kp = transform_keypoints(drive_info(source, control_rows(rows, d0, source, Controls(blink=False), 0), d0))
    gap = (kp[:, 11, 1] - kp[:, 13, 1]) - (open_kp[:, 11, 1] - open_kp[:, 13, 1])   # eyelids closing
    assert abs(gap[peak]) > 0.02 and torch.allclose(gap[[0, peak - 5, peak + 6]], torch.zeros(3), atol=1e-6)
    # held eyes: the photo's eye expression on every frame, whatever the model generated
    still_head = torch.cat([d0[:, :202].expand(80, -1), rows[:, 202:]], dim=1)     # no head turn: no gaze shift
    held = drive_info(source, control_rows(still_head, d0, source, Controls(blink=False), 0), d0)
    eyes = [3 * k + a for k in (11, 13, 15, 16, 18) for a in range(3)]
    assert torch.allclose(held.exp[:, eyes], source.exp[:, eyes].expand(80, -1), atol=1e-6)
    assert not torch.equal(out[:, EXP0:], rows[:, EXP0:])


def test_blink_rate_and_windows_that_join():
    from float_rt.ditto.controls import blink_closure
    minute = blink_closure(0, 25 * 60, rate=20.0)
    peaks = ((minute[1:-1] > minute[:-2]) & (minute[1:-1] >= minute[2:]) & (minute[1:-1] > 0.5)).sum()
    assert abs(int(peaks) - 20) <= 1
    parts = torch.cat([blink_closure(s, 37, rate=20.0) for s in range(0, 25 * 60, 37)])[:25 * 60]
    assert torch.equal(parts, minute)


def test_gaze_to_the_camera_changes_the_eyes_of_a_turned_photo():
    from float_rt.ditto.controls import EXP0, EYE_COORDS, control_rows
    rows, d0 = _motion()
    turned, frontal = _source(yaw=20, pitch=-10), _source(yaw=0, pitch=0)
    out = control_rows(rows, d0, turned, Controls(gaze_camera=True), 0)
    moved = (out - rows)[:, EXP0:]
    assert moved.abs().max() > 1e-3 and set(torch.nonzero(moved.abs().sum(0)).flatten().tolist()) <= set(EYE_COORDS)
    assert (control_rows(rows, d0, frontal, Controls(gaze_camera=True), 0) - rows).abs().max() < 2e-4


def test_attentive_pose_nods_smoothly():
    from float_rt.ditto.controls import attentive_pose
    p = attentive_pose(0, 250)
    assert torch.equal(torch.cat([attentive_pose(0, 100), attentive_pose(100, 150)]), p)
    assert p[:, 1].max() > 2.5 and p[:, 1].min() == 0 and p[:, 0].abs().max() <= 1.5
    assert (p[1:] - p[:-1]).abs().max() < 0.5                       # smooth: under half a degree a frame


def test_float_scale_moves_along_the_displacement():
    from float_rt.float_controls import control_motion, scale_motion
    g = torch.Generator().manual_seed(0)
    m, r_s = torch.randn(5, 16, generator=g), torch.randn(1, 16, generator=g)
    assert scale_motion(m, r_s, 1.0) is m
    assert torch.equal(scale_motion(m, r_s, 0.0), r_s.expand(5, -1))
    assert torch.allclose(scale_motion(m, r_s, 0.5) - r_s, (m - r_s) / 2)
    assert torch.allclose(control_motion(m, r_s, Controls(state="listening")) - r_s, 0.6 * (m - r_s))


# -- paste-back at a video size -----------------------------------------------------------------------

def test_paster_non_square_photo_keeps_the_photo_outside_the_mask():
    from float_rt.media import FramePaster, SquareCrop
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    crop = SquareCrop(200, 40, 160, 64)
    for size in [(640, 360), (300, 300), (1000, 600)]:
        p = FramePaster(photo, crop, 64, size, colour_match=False)
        out = p(np.full((64, 64, 3), 7, np.uint8))
        mask = p.mask[..., 0]
        assert out.shape == (size[1], size[0], 3) and p.photo.shape == out.shape
        assert np.array_equal(out[mask == 0], p.photo[mask == 0]) and (mask == 0).mean() > 0.3
        assert (out[mask == 1] == 7).all() and (mask == 1).sum() > 100
    # the photo's own size (odd sides cut), and the live limit for a large photo
    assert FramePaster(photo[:299, :499], crop, 64, limit=None).photo.shape == (298, 498, 3)
    big = np.zeros((3000, 2000, 3), np.uint8)
    assert (FramePaster(big, SquareCrop(800, 800, 400, 64), 64).w, FramePaster(big, SquareCrop(800, 800, 400, 64),
                                                                                 64).h) == (1080, 1620)


def test_paste_into_touches_only_the_box_and_reuses_the_buffer():
    from float_rt.media import FramePaster, SquareCrop
    photo = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    p = FramePaster(photo, SquareCrop(100, 50, 80, 32), 32, limit=None)
    buf = p.new_frame()
    outside = buf.copy()
    x0, y0, x1, y1 = p.box
    frame = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert p.paste_into(frame, buf) is buf
    outside[y0:y1, x0:x1] = buf[y0:y1, x0:x1]
    assert np.array_equal(buf, outside) and np.array_equal(buf, p(frame))


def test_colour_at_the_seam_follows_the_photo():
    """A renderer that brightens the face by 20 levels: with colour matching the pasted face lands
    on the photo's colour (no halo at the feathered edge); without it the shift stays."""
    import skimage.data

    from float_rt.media import FramePaster, SquareCrop
    photo = skimage.data.astronaut()
    crop = SquareCrop(124, 4, 253, 256)
    frame = np.clip(crop.cut(photo).astype(int) + 20, 0, 255).astype(np.uint8)
    for match, low, high in [(True, 0, 3), (False, 15, 25)]:
        p = FramePaster(photo, crop, 256, (640, 480), colour_match=match)
        out = p(frame)
        face = p.mask[..., 0] > 0.99
        err = np.abs(out.astype(np.float32) - p.photo)[face].mean()
        assert low <= err <= high, (match, err)
        assert np.array_equal(out[p.mask[..., 0] == 0], p.photo[p.mask[..., 0] == 0])


# -- `generate` ---------------------------------------------------------------------------------------

def _video(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    from server.cli import main
    out = {}
    for config in FAMILY_CONFIGS:
        out[config] = tmp_path_factory.mktemp(config)
        assert main(["demo-weights", "--config", config, "--out", str(out[config])]) == 0
    return out


def _generate(config, ckpts, ref, audio, out, *extra):
    from server.cli import main
    fast = ["--nfe", "3"] if config == "small" else ["--steps", "2"]
    return main(["generate", "--config", config, "--checkpoints", str(ckpts[config]), "--ref", str(ref),
                 "--audio", str(audio), "--out", str(out), *fast, *extra])


@pytest.fixture(scope="module")
def short_speech(speech_wav, tmp_path_factory):
    """The first 1.2 s of the speech (30 frames): enough to move the face, quick to render."""
    from conftest import write_audio

    from float_rt.media import load_audio
    return write_audio(tmp_path_factory.mktemp("short") / "short.wav", load_audio(speech_wav)[None, :19200], 16000)


@pytest.mark.parametrize("config", FAMILY_CONFIGS)
def test_generate_still_head_pasted_at_a_size(config, ckpts, portrait_png, short_speech, tmp_path):
    moving, still = tmp_path / "moving.mp4", tmp_path / "still.mp4"
    sized = ["--paste-back", "--video-size", "320x240"]
    assert _generate(config, ckpts, portrait_png, short_speech, moving, *sized) == 0
    extra = ["--motion-scale", "0"] + (["--expression-scale", "0"] if config != "small" else [])
    assert _generate(config, ckpts, portrait_png, short_speech, still, *sized, *extra) == 0
    frames, ref = _video(still).astype(np.float32), _video(moving).astype(np.float32)
    assert frames.shape == ref.shape == (30, 240, 320, 3)
    assert np.abs(ref - ref[:1]).mean(axis=(1, 2, 3)).max() > 2.0             # speech moves the face
    assert np.abs(frames - frames[:1]).mean(axis=(1, 2, 3)).max() < 0.5      # codec noise only


def test_generate_ditto_pose_blinks_gaze(ckpts, portrait_png, short_speech, tmp_path):
    out = tmp_path / "posed.mp4"
    assert _generate("ditto-tiny", ckpts, portrait_png, short_speech, out, "--pose", "10,-5,0", "--pose-mode",
                     "fixed", "--blink-rate", "20", "--gaze-camera", "--expression-scale", "0.5") == 0
    assert len(_video(out)) == 30


@pytest.mark.parametrize("config, extra, message", [
    ("small", ["--pose", "10,0,0"], "--pose is not an option of the float family"),
    ("small", ["--no-blink"], "--no-blink is not an option of the float family"),
    ("small", ["--expression-scale", "0.5"], "--expression-scale is not an option of the float family"),
    ("small", ["--paste-back", "--no-crop"], "--paste-back needs the face crop"),
    ("ditto-tiny", ["--nfe", "3"], "--nfe is not an option of the ditto family"),
    ("ditto-tiny", ["--motion-scale", "3"], "motion_scale must be a number in 0..2"),
    ("ditto-tiny", ["--pose", "10,0"], "pose must be YAW,PITCH,ROLL"),
    ("small", ["--video-size", "320x240"], "video_size needs paste_back"),
    ("small", ["--paste-back", "--video-size", "321x240"], "even sides"),
])
def test_bad_control_options_are_one_line(config, extra, message, ckpts, portrait_png, speech_wav, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert _generate(config, ckpts, portrait_png, speech_wav, out, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_controls_from_generate_args():
    a = argparse.Namespace(paste_back=True, video_size="640x360", motion_scale=0.5, expression_scale=None,
                           pose="1,2,3", pose_mode="fixed", no_blink=False, blink_rate=12.0, gaze_camera=True)
    assert controls_from_args(a) == Controls(paste_back=True, video_size=(640, 360), motion_scale=0.5,
                                             pose=(1.0, 2.0, 3.0), pose_mode="fixed", blink_rate=12.0,
                                             gaze_camera=True)
    assert controls_from_args(argparse.Namespace()) == Controls()
