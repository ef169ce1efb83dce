"""The LivePortrait renderer (float_rt.liveportrait) against the official Ditto outputs of
shared/reference/ditto/cases/tiny, with recipe weights written from the case's key names."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from float_rt.errors import CheckpointError
from float_rt.liveportrait import (
    Renderer,
    RendererSizes,
    check_renderer_folder,
    exact_float32,
    load_renderer,
)
from float_rt.liveportrait.keys import FILES, STITCH_ENTRY, published_shapes
from float_rt.liveportrait.kinematics import (
    bins_to_degrees,
    drive_info,
    motion_from_vector,
    rotation_matrix,
    transform_keypoints,
)
from float_rt.liveportrait.loader import read_state

from conftest import DITTO_REF
from float_rt.liveportrait.recipe import (
    recipe_state,
    write_published_files,
    write_recipe_renderer,
)

REF = DITTO_REF
CASE = REF / "cases" / "tiny"


@pytest.fixture(autouse=True)
def _true_float32():
    with exact_float32():  # the tolerances assume no TF32 (matters on CUDA only)
        yield


def rel(ours, ref) -> float:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    assert np.isfinite(ours).all()
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def case():
    cfg = json.loads((CASE / "config.json").read_text())
    return {"sizes": RendererSizes.from_dict(cfg["sizes"]), "keys": json.loads((CASE / "keys.json").read_text()),
            "inputs": np.load(CASE / "inputs.npz"), "expected": np.load(CASE / "expected.npz"),
            "tol": json.loads((CASE / "tolerances.json").read_text())}


@pytest.fixture(scope="module")
def folder(case, tmp_path_factory):
    return write_published_files(tmp_path_factory.mktemp("lp_recipe"), case["keys"])


@pytest.fixture(scope="module")
def renderer(case, folder):
    model, report = load_renderer(folder, case["sizes"])
    assert not report.summary()
    return model


@pytest.fixture(scope="module")
def source(case, renderer):
    return renderer.source(torch.from_numpy(case["inputs"]["image"]))


def check(case, key, ours):
    err = rel(ours, case["expected"][key])
    assert err <= case["tol"][key], f"{key}: relative error {err:.3g} > {case['tol'][key]}"
    return err


# -- sizes, key tables, loader ------------------------------------------------------------------

@pytest.mark.parametrize("file", FILES)
def test_full_size_manifest(file):
    with torch.device("meta"):
        model = Renderer()
    manifest = json.loads((REF / "keys" / Path(file).with_suffix(".json").name).read_text())
    assert published_shapes(model)[file] == {k: tuple(v) for k, v in manifest.items()}


def test_tiny_table_is_the_case_keys(case):
    with torch.device("meta"):
        model = Renderer(case["sizes"])
    ours = published_shapes(model)
    for file in FILES:
        assert ours[file] == {k: tuple(v) for k, v in case["keys"][Path(file).name].items()}


def test_recipe_writer_matches_case_files(case, folder, tmp_path):
    write_recipe_renderer(tmp_path, case["sizes"])
    for file in FILES:
        a, b = read_state(tmp_path / file), read_state(folder / file)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    check_renderer_folder(tmp_path, case["sizes"])


def _copy_folder(folder, dst):
    for file in FILES:
        (dst / file).parent.mkdir(parents=True, exist_ok=True)
        (dst / file).write_bytes((folder / file).read_bytes())
    return dst


def test_missing_key_is_named(case, folder, tmp_path):
    _copy_folder(folder, tmp_path)
    path = tmp_path / "models/warp_network.pth"
    state = torch.load(path, weights_only=True)
    del state["third.conv.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"warp_network\.pth.*missing key third\.conv\.weight "
                                              r"\(expected shape \[32, 32, 3, 3\]\)"):
        check_renderer_folder(tmp_path, case["sizes"])


def test_misshaped_key_names_both_shapes(case, folder, tmp_path):
    _copy_folder(folder, tmp_path)
    path = tmp_path / "models/decoder.pth"
    state = torch.load(path, weights_only=True)
    state["up_1.conv_0.weight_v"] = torch.zeros(5)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"decoder\.pth.*key up_1\.conv_0\.weight_v: "
                                              r"expected shape \[288\], file has \[5\]"):
        load_renderer(tmp_path, case["sizes"])


def test_ddp_stitch_file_and_extra_keys(case, folder, tmp_path):
    _copy_folder(folder, tmp_path)
    path = tmp_path / "models/stitch_network.pth"
    inner = torch.load(path, weights_only=True)[STITCH_ENTRY]
    extra = {"module.mlp.0.weight": torch.zeros(1)}
    torch.save({STITCH_ENTRY: {f"module.{k}": v for k, v in inner.items()},
                "retarget_mouth": extra, "retarget_eye": extra}, path)
    path = tmp_path / "models/appearance_extractor.pth"
    state = torch.load(path, weights_only=True)
    torch.save({**state, "unused.weight": torch.zeros(2)}, path)
    model, report = load_renderer(tmp_path, case["sizes"])
    assert report.ignored["models/appearance_extractor.pth"] == ["unused.weight"]
    assert "unused.weight" in report.summary()
    assert torch.equal(model.stitch.layers[0].weight, inner["mlp.0.weight"])


def test_spectral_norm_fold_matches_torch():
    conv = torch.nn.Conv2d(6, 4, 3, padding=1)
    shapes = {"c.weight_orig": (4, 6, 3, 3), "c.weight_u": (4,), "c.weight_v": (54,), "c.bias": (4,)}
    state = recipe_state(shapes)
    torch.nn.utils.spectral_norm(conv)
    conv.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items()})
    conv.eval()
    x = torch.randn(1, 6, 5, 5, generator=torch.Generator().manual_seed(0))
    from float_rt.liveportrait.keys import PublishedKey
    from float_rt.liveportrait.loader import _translate
    entries = [PublishedKey(f"c.{k}", shapes[f"c.{k}"], "w", role) for k, role in
               (("weight_orig", "sn_orig"), ("weight_u", "sn_u"), ("weight_v", "sn_v"))]
    w = _translate(entries, state)["w"]
    with torch.no_grad():
        torch.testing.assert_close(torch.nn.functional.conv2d(x, w, state["c.bias"], padding=1), conv(x),
                                   rtol=1e-6, atol=1e-6)


# -- kinematics ---------------------------------------------------------------------------------

def test_rotation_and_degrees():
    flat = torch.zeros(1, 66)
    assert bins_to_degrees(flat).item() == pytest.approx(0.0, abs=1e-4)  # mean of the bins
    r = rotation_matrix(torch.tensor([10.0]), torch.tensor([-20.0]), torch.tensor([30.0]))
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3)[None], rtol=0, atol=1e-6)
    yaw90 = rotation_matrix(torch.zeros(1), torch.tensor([90.0]), torch.zeros(1))[0]
    # row vector x-axis @ R: yaw turns +x towards +z (R = Ry^T)
    torch.testing.assert_close(torch.tensor([1.0, 0, 0]) @ yaw90, torch.tensor([0.0, 0, -1]), rtol=0, atol=1e-6)
    v = torch.randn(3, 265, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(motion_from_vector(v).to_vector(), v)


# -- the tiny case ------------------------------------------------------------------------------

def test_source_outputs(case, source):
    info, x_s, f_s = source
    errs = {f"kp_{k}": check(case, f"kp_{k}", getattr(info, k)) for k in
            ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")}
    errs["x_s"] = check(case, "x_s", x_s)
    errs["f_s"] = check(case, "f_s", f_s)
    h, w = f_s.shape[-2:]
    errs["f_s_center"] = check(case, "f_s_center", f_s[..., h // 2 - 8:h // 2 + 8, w // 2 - 8:w // 2 + 8])
    print(errs)


def test_driving_keypoints(case, renderer, source):
    info, x_s, _ = source
    motion, d0 = torch.from_numpy(case["expected"]["motion"]), torch.from_numpy(case["expected"]["d0"])
    pre = transform_keypoints(drive_info(info, motion, d0))
    e1 = check(case, "x_d_prestitch", pre)
    e2 = check(case, "x_d", renderer.drive(info, x_s, motion, d0))
    print({"x_d_prestitch": e1, "x_d": e2})



def _center(frames):
    h, w = frames.shape[1:3]
    return frames[:, h // 2 - 16:h // 2 + 16, w // 2 - 16:w // 2 + 16, :]


def test_warp_and_frames(case, renderer, source):
    from float_rt.liveportrait.decoder import to_frames
    exp = case["expected"]
    idx = exp["frame_index"]
    assert idx.tolist() == [0, 17, 33, 62]  # config.json full_frames
    _, x_s, f_s = source
    with torch.no_grad():
        f_3d = renderer.warp(f_s, x_s, torch.from_numpy(exp["x_d"][idx]))
        frames = to_frames(renderer.decoder(f_3d))
    errs = {"f_3d": check(case, "f_3d", f_3d), "frames": check(case, "frames", frames)}
    err = rel(_center(frames), exp["frames_center"][idx])
    assert err <= case["tol"]["frames_center"]
    errs["frames_center(frame_index)"] = err
    print(errs)


@pytest.mark.slow
def test_frames_center_all(case, renderer, source):
    """Every rendered frame of the clip (63 warps + decodes, about 30 s on two cores)."""
    exp = case["expected"]
    _, x_s, f_s = source
    x_d = torch.from_numpy(exp["x_d"])
    out = []
    for start in range(0, len(x_d), 8):
        out.append(_center(renderer.render(f_s, x_s, x_d[start:start + 8])))
    print({"frames_center": check(case, "frames_center", torch.cat(out))})
