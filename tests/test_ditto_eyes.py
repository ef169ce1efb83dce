"""The source photo's eye measures (``float_rt.ditto.eyes``): MediaPipe's detector decoding and
suppression, the mesh region and its way back, the measures themselves, and the model through
``encode_source`` (the demo folder's stand-ins, ``eye_stubs.py``)."""
from __future__ import annotations

import logging
import math
import shutil

import cv2
import numpy as np
import pytest
import torch

from float_rt.ditto import eyes
from float_rt.ditto.eye_stubs import mesh_template

# ---- detector ------------------------------------------------------------------------------------------------


def test_anchors_of_the_short_range_detector():
    a = eyes.ANCHORS
    assert a.shape == (896, 2)
    # 16 x 16 cells of stride 8, two anchors each, row by row; then 8 x 8 cells of stride 16, six each
    assert np.allclose(a[0], [1 / 32, 1 / 32]) and np.allclose(a[1], a[0]) and np.allclose(a[2], [3 / 32, 1 / 32])
    assert np.allclose(a[32], [1 / 32, 3 / 32])
    assert np.allclose(a[512:518], [1 / 16, 1 / 16]) and np.allclose(a[518], [3 / 16, 1 / 16])
    assert np.allclose(a[-1], [15 / 16, 15 / 16])


def _raw_for(anchor: int, box, keypoints) -> np.ndarray:
    """Regressors that encode ``box`` (x0, y0, x1, y1, detector px) and 6 keypoints (in [0, 1]) at ``anchor``."""
    x0, y0, x1, y1 = box
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) / eyes.DETECTOR_SIZE
    raw = np.concatenate([(centre - eyes.ANCHORS[anchor]), [(x1 - x0) / eyes.DETECTOR_SIZE,
                                                             (y1 - y0) / eyes.DETECTOR_SIZE],
                          (np.asarray(keypoints) - eyes.ANCHORS[anchor]).reshape(-1)])
    return raw * eyes.DETECTOR_SIZE


def test_decode_recovers_boxes_and_keypoints_and_keeps_scores_from_one_half():
    regressors = np.zeros((896, 16))
    logits = np.full(896, -30.0)
    kp = np.linspace(0.2, 0.8, 12).reshape(6, 2)
    regressors[700] = _raw_for(700, (30, 20, 90, 100), kp)
    logits[700] = 0.0                       # score exactly 0.5: kept
    regressors[10] = _raw_for(10, (0, 0, 10, 10), kp)
    logits[10] = -0.01                      # just under: dropped
    dets = eyes.decode(regressors.astype(np.float32), logits.astype(np.float32))
    assert dets.shape == (1, 17)
    assert np.allclose(dets[0, :4], [30, 20, 90, 100], atol=1e-4)
    assert np.allclose(dets[0, 4:16], kp.reshape(-1), atol=1e-6) and dets[0, 16] == pytest.approx(0.5)


def test_overlapping_detections_are_blended_by_score():
    a = np.r_[[10, 10, 50, 50], np.full(12, 0.2), 0.9]
    b = np.r_[[14, 12, 54, 52], np.full(12, 0.4), 0.6]          # IoU ~0.75 with a
    far = np.r_[[80, 80, 120, 120], np.full(12, 0.7), 0.8]
    faces = eyes.blend_overlaps(np.stack([b, far, a]))
    assert len(faces) == 2
    best, other = faces
    assert np.allclose(best[:16], (0.9 * a[:16] + 0.6 * b[:16]) / 1.5) and best[16] == pytest.approx(0.75)
    assert np.allclose(other, far)
    assert eyes.blend_overlaps(np.zeros((0, 17))) == []


# ---- region ------------------------------------------------------------------------------------------------

def _face(eye_a, eye_b, box=(40, 40, 88, 88)):
    """A detection on the 128-px grid with its two eye keypoints (in [0, 1])."""
    return np.r_[box, eye_a, eye_b, np.zeros(8), 1.0]


def test_region_square_around_the_box_and_level_eyes_give_no_turn():
    r = eyes.Region.around(_face((0.4, 0.45), (0.6, 0.45), box=(40, 30, 80, 90)), 256)
    assert (r.cx, r.cy) == (120.0, 120.0)
    assert r.side == pytest.approx(60 * 2 * eyes.REGION_SCALE)     # the longer side, in image pixels
    assert r.angle == 0.0


@pytest.mark.parametrize("tilt", [-0.5, 0.3, 2.5])
def test_the_region_is_cut_upright(tilt):
    """The two eye keypoints (red, green dots) on a line tilted by ``tilt``: in the mesh input they lie
    level, the first one on the left."""
    image = np.zeros((256, 256, 3), np.uint8)
    centre, half = np.array([128.0, 128.0]), 30.0
    d = half * np.array([math.cos(tilt), math.sin(tilt)])
    first, second = centre - d, centre + d
    for p, colour in ((first, (255, 0, 0)), (second, (0, 255, 0))):
        cv2.circle(image, (int(round(p[0])), int(round(p[1]))), 4, colour, -1)
    patch = eyes.cut_region(image, eyes.Region.around(_face(first / 256, second / 256), 256)).astype(float)
    grid = np.arange(eyes.MESH_SIZE)
    (x0, y0), (x1, y1) = [(np.average(grid, weights=patch[..., c].sum(0)), np.average(grid, weights=patch[..., c].sum(1)))
                          for c in (0, 1)]
    assert x0 < x1 and abs(y0 - y1) < 1.0


def test_mesh_points_map_back_to_where_they_were_cut_from():
    region = eyes.Region(cx=140.0, cy=110.0, side=150.0, angle=0.7)
    m = cv2.getPerspectiveTransform(region.corners().astype(np.float32),
                                    np.array([[0, 0], [256, 0], [256, 256], [0, 256]], np.float32))
    gen = np.random.default_rng(0)
    image_points = gen.uniform(80, 180, (20, 2))
    in_patch = cv2.perspectiveTransform(image_points[None].astype(np.float64), m)[0]
    z = gen.uniform(-20, 20, (20, 1))
    back = region.to_image(np.concatenate([in_patch, z], 1))
    assert np.allclose(back[:, :2], image_points, atol=1e-6)
    assert np.allclose(back[:, 2:], z / 256 * region.side)           # depth scaled as the width


# ---- measures ------------------------------------------------------------------------------------------------

def test_open_eyes_and_a_centred_iris():
    opens, balls = eyes.eye_measures(mesh_template())
    assert np.allclose(opens, 3 * 12 / 30)          # three 12-px eyelid gaps over a 30-px eye
    assert np.allclose(balls, 0)


@pytest.mark.parametrize("move", ["outward", "inward", "up"])
def test_iris_offsets_by_direction(move):
    """An iris moved by d: towards the outer corner, along the eye's own direction u, gives 0; towards
    the nose -2*d*u; up (-y) the unit offset minus u, times d."""
    d = 3.0
    points = mesh_template().astype(np.float64)
    expected = []
    for eye in (eyes.LEFT, eyes.RIGHT):
        outer, inner = points[eye["corners"][0]], points[eye["corners"][1]]
        u = (outer - inner) / np.linalg.norm(outer - inner)
        step = {"outward": d * u, "inward": -d * u, "up": np.array([0.0, -d, 0.0])}[move]
        points[eye["iris"]] = (outer + inner) / 2 + step
        expected.append({"outward": 0 * u, "inward": -2 * d * u, "up": (np.array([0, -1.0, 0]) - u) * d}[move])
    _, ball = eyes.eye_measures(points)
    assert np.allclose(ball, np.stack(expected, -1).reshape(6), atol=1e-5)     # (x_L, x_R, y_L, y_R, z_L, z_R)


# ---- through the model -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crop(portrait_png, ditto_cfg):
    from float_rt.ditto.generate import face_crop
    from float_rt.media import load_image
    img = load_image(portrait_png)
    return face_crop(ditto_cfg, img).cut(img)


def test_the_stand_in_models_measure_a_photo_and_find_no_face_in_a_blank(ditto_ckpt, crop):
    measurer = eyes.EyeMeasurer.from_folder(ditto_ckpt)
    assert measurer is not None
    opens, balls = measurer.measure(crop)
    assert np.allclose(opens, 1.2, atol=1e-4) and np.allclose(balls, 0, atol=1e-4)
    assert measurer.measure(np.full((256, 256, 3), 90, np.uint8)) is None


def test_encode_source_uses_the_measures_else_the_neutral_values(ditto_cfg, ditto_ckpt, crop, tmp_path, caplog):
    from float_rt.ditto.generate import crop_tensor, encode_source, load_ditto
    model = load_ditto(ditto_cfg, ditto_ckpt)
    assert model.eyes is not None
    measured = encode_source(model, crop_tensor(crop), 4).condition
    assert torch.allclose(measured.eye_open, torch.full((2,), 1.2), atol=1e-4)
    given = encode_source(model, crop_tensor(crop), 4, eye_open=(0.5, 0.6)).condition   # reference cases
    assert given.eye_open.tolist() == pytest.approx([0.5, 0.6])
    with caplog.at_level(logging.WARNING):
        blank = encode_source(model, crop_tensor(np.full_like(crop, 90)), 4).condition
    assert "finds no face in the crop" in caplog.text
    assert blank.eye_open.tolist() == pytest.approx(list(ditto_cfg.source.eye_open))
    # a folder without the two files: neutral values, said once at load
    bare = tmp_path / "bare"
    shutil.copytree(ditto_ckpt, bare, ignore=shutil.ignore_patterns("ditto_onnx"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model = load_ditto(ditto_cfg, bare)
    assert model.eyes is None and "eye measures are neutral values" in caplog.text
    neutral = encode_source(model, crop_tensor(crop), 4).condition
    assert neutral.eye_open.tolist() == pytest.approx(list(ditto_cfg.source.eye_open))
    assert neutral.eye_ball.tolist() == pytest.approx(list(ditto_cfg.source.eye_ball))


def test_the_eyes_are_measured_on_the_crop_at_512_px(ditto_engine, portrait_png):
    """As the official code: the eyes on the 512-px crop, the extractors on the same square at 256."""
    from float_rt.media import load_image
    photo = load_image(portrait_png)
    for crop in (True, False):
        prepared = ditto_engine.prepare(photo, crop=crop)
        assert prepared.face.shape == (1, 3, 256, 256) and prepared.eyes.shape == (512, 512, 3)
        small = cv2.resize(prepared.eyes, (256, 256), interpolation=cv2.INTER_AREA).astype(float)
        face = prepared.face[0].permute(1, 2, 0).numpy() * 255
        assert np.abs(small - face).mean() < 3.0          # the same square of the photo
    session = ditto_engine.open_session(prepared)
    try:
        assert np.allclose(session.ref.condition.eye_open.numpy(), 1.2, atol=1e-4)    # the stand-in's open eyes
    finally:
        session.close()
