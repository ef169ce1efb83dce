"""The family seam (float_rt/family.py), the same calls for every family: load from the recipe
folder, encode the real photo, features of real speech, windows of motion with their carry, render."""
import argparse

import numpy as np
import pytest

from float_rt.config import load_config
from float_rt.family import FAMILIES, family_named, family_of
from float_rt.resources import config_path


@pytest.mark.parametrize("config", ["small", "ditto-tiny"])
def test_windows_through_the_seam(config, portrait_png, speech_wav, tmp_path):
    from float_rt.media import load_audio, load_image
    cfg = load_config(config_path(config))
    fam = family_of(cfg)
    folder = fam.check_layout(fam.write_demo_weights(cfg, tmp_path / "ck"))
    model = fam.load(cfg, folder, "cpu")
    opts = argparse.Namespace(emo="happy", seed=1, steps=2, nfe=3)
    ref = fam.encode_reference(model, load_image(portrait_png), opts)
    features = fam.audio_features(model, load_audio(speech_wav))
    assert features.ndim == 2 and features.shape[0] == 94          # ceil(3.74 s x 25) rows, time first
    length, step = fam.window_span(model)
    carry, rows = fam.new_carry(model, ref, opts), 0
    for start in range(0, 2 * step, step):
        motion, carry = fam.window(model, ref, carry, features[start:start + length])
        frames = fam.render(model, ref, motion)
        assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3 and len(frames) > 0
        rows += len(frames)
    assert rows >= step    # the rows two windows commit


def test_every_family_is_registered_and_complete():
    from float_rt.family import Family
    members = [m for m in vars(Family) if not m.startswith("_")] + list(Family.__annotations__)
    for name in FAMILIES:
        fam = family_named(name)
        assert fam.name == name
        assert all(hasattr(fam, m) for m in members), [m for m in members if not hasattr(fam, m)]
        assert {"generate", "download", "demo-weights", "reference"} <= fam.commands
