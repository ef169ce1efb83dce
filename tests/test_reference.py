"""The proof standard: official FLOAT outputs on recipe weights (shared/reference)."""
import json

import numpy as np
import pytest
import torch

from conftest import DATA

CASE = DATA / "reference" / "tiny"


@pytest.fixture(scope="module")
def tiny_outputs():
    from float_rt.reference import run_case
    return run_case(CASE, expected_keys=list(np.load(CASE / "expected.npz").files) + ["input_values"])


def test_every_expected_key_within_tolerance(tiny_outputs):
    from float_rt.reference import compare
    expected = dict(np.load(CASE / "expected.npz"))
    result = compare(tiny_outputs, expected)
    assert set(result) == set(expected) - {"frame_index"}
    bad = {k: v for k, v in result.items() if not v[2]}
    assert not bad, f"keys off the official outputs: {bad}"


def test_preprocessing_matches_case_input_values(tiny_outputs):
    iv = np.load(CASE / "inputs.npz")["input_values"]
    assert np.allclose(tiny_outputs["input_values"], iv, atol=1e-5)


def test_relative_error_rejects_nan_and_shape_mismatch():
    from float_rt.reference import relative_error
    ref = np.ones((2, 3))
    assert np.isnan(relative_error(np.full((2, 3), np.nan), ref))
    assert relative_error(np.ones((3, 2)), ref) == float("inf")
    assert relative_error(ref * 1.001, ref) == pytest.approx(1e-3, rel=1e-6)


def test_recipe_layout_matches_case_keys():
    from float_rt.config import config_from_official
    from float_rt.keys import float_keys, hf_keys
    from float_rt.recipe import skeleton
    raw = json.loads((CASE / "config.json").read_text())
    keys = json.loads((CASE / "keys.json").read_text())
    model = skeleton(config_from_official(raw["float"], raw["audio_encoder"], raw["emotion_encoder"]))
    ours = {e.official: list(e.shape) for e in float_keys(model)}
    assert ours == keys["float_checkpoint"]
    assert {e.official: list(e.shape) for e in hf_keys(model, "emotion")} == keys["emotion_encoder"]
    audio = {e.official: list(e.shape) for e in hf_keys(model, "audio")}
    # The CTC head of wav2vec2-base-960h is in the folder but not used by FLOAT.
    assert audio == {k: v for k, v in keys["audio_encoder"].items() if not k.startswith("lm_head.")}


def test_seeded_window_noise_is_the_official_x0():
    from float_rt.sampler import WindowNoise
    x0 = np.load(CASE / "inputs.npz")["x0"]
    noise = WindowNoise((1, 50, 512), seed=15, fixed=True)
    assert torch.equal(noise.next(), torch.from_numpy(x0))
    assert torch.equal(noise.next(), torch.from_numpy(x0))  # same draw every window


def test_reference_cli_writes_all_keys(tmp_path):
    from server.cli import main
    out = tmp_path / "ours.npz"
    assert main(["reference", str(CASE), "--out", str(out)]) == 0
    written = set(np.load(out).files)
    assert set(np.load(CASE / "expected.npz").files) <= written
