"""Loading the published layouts exactly; clear errors for anything else."""
import json
import shutil

import pytest
import torch

from conftest import DATA, ROOT


def _meta_state(entries):
    return {e.official: torch.empty(e.shape, device="meta") for e in entries}


def test_full_size_manifest_is_exactly_the_512_layout():
    from float_rt.checkpoint import _apply
    from float_rt.config import load_config
    from float_rt.keys import float_keys
    from float_rt.recipe import skeleton
    manifest = json.loads((DATA / "reference" / "float_pth_keys.json").read_text())
    model = skeleton(load_config(ROOT / "configs" / "float-512.yaml"))
    entries = float_keys(model)
    assert {e.official: list(e.shape) for e in entries} == manifest
    # Through the real loader's key/shape check: nothing missing, nothing extra.
    state = {k: torch.empty(v, device="meta") for k, v in manifest.items()}
    target = model.state_dict()
    assert _apply(entries, state, target, DATA) == []
    used = {e.ours for e in entries if e.ours}
    ours = {k for k in target if not k.startswith(("audio.wav2vec2.", "emotion."))}
    assert ours == used, "every non-wav2vec2 parameter of the model comes from float.pth"


def test_loads_demo_layout_and_reports_extra_keys(small_cfg, small_ckpt):
    from float_rt.checkpoint import load_model
    model, report = load_model(small_cfg.model, small_ckpt)
    assert report.ignored["wav2vec2-base-960h/model.safetensors"] == ["lm_head.bias", "lm_head.weight"]
    # The emotion folder is written as pytorch_model.bin, as published.
    assert (small_ckpt / "wav2vec-english-speech-emotion-recognition" / "pytorch_model.bin").is_file()
    assert not (small_ckpt / "wav2vec-english-speech-emotion-recognition" / "model.safetensors").exists()
    assert report.ignored["float.pth"] == []
    raw = torch.load(small_ckpt / "float.pth", weights_only=True)
    assert torch.equal(model.fmt.blocks[0].qkv.weight, raw["fmt.blocks.0.attn.qkv.weight"])
    assert torch.equal(model.motion.decoder.first.conv.weight, raw["motion_autoencoder.dec.conv1.conv.weight"][0])


def _copy(src, tmp_path):
    dst = tmp_path / "ck"
    shutil.copytree(src, dst)
    return dst


def test_missing_and_misshaped_keys_name_key_and_shapes(small_cfg, small_ckpt, tmp_path):
    from float_rt.checkpoint import load_model
    from float_rt.errors import CheckpointError
    ck = _copy(small_ckpt, tmp_path)
    state = torch.load(ck / "float.pth", weights_only=True)
    del state["fmt.c_embedder.bias"]
    state["fmt.decoder.linear.weight"] = torch.zeros(3, 3)
    state["something.else"] = torch.zeros(1)
    torch.save(state, ck / "float.pth")
    with pytest.raises(CheckpointError) as err:
        load_model(small_cfg.model, ck)
    msg = str(err.value)
    assert "missing key fmt.c_embedder.bias (expected shape [128])" in msg
    assert "key fmt.decoder.linear.weight: expected shape [128, 128], file has [3, 3]" in msg


def test_extra_keys_are_ignored_and_reported(small_cfg, small_ckpt, tmp_path):
    from float_rt.checkpoint import load_model
    ck = _copy(small_ckpt, tmp_path)
    state = torch.load(ck / "float.pth", weights_only=True)
    state["training.step"] = torch.zeros(1)
    torch.save(state, ck / "float.pth")
    _, report = load_model(small_cfg.model, ck)
    assert report.ignored["float.pth"] == ["training.step"]
    assert "training.step" in report.summary()


def test_wrong_folder_says_what_is_missing_and_the_layout(small_cfg, small_ckpt, tmp_path):
    from float_rt.checkpoint import load_model
    from float_rt.errors import CheckpointError
    ck = _copy(small_ckpt, tmp_path)
    shutil.rmtree(ck / "wav2vec2-base-960h")
    with pytest.raises(CheckpointError, match="wav2vec2-base-960h") as err:
        load_model(small_cfg.model, ck)
    assert "expected layout" in str(err.value)
    (ck / "float.pth").unlink()
    with pytest.raises(CheckpointError, match="float.pth not found"):
        load_model(small_cfg.model, ck)


def test_weight_norm_under_either_name(small_cfg, small_ckpt, small_model, tmp_path):
    """Legacy weight_g/weight_v (published) and torch parametrization names both load."""
    from safetensors.torch import load_file, save_file
    from float_rt.checkpoint import load_model
    ck = _copy(small_ckpt, tmp_path)
    path = ck / "wav2vec2-base-960h" / "model.safetensors"
    state = load_file(path)
    assert "wav2vec2.encoder.pos_conv_embed.conv.weight_g" in state
    renamed = {k.replace("conv.weight_g", "conv.parametrizations.weight.original0")
                .replace("conv.weight_v", "conv.parametrizations.weight.original1"): v for k, v in state.items()}
    save_file(renamed, path)
    model, _ = load_model(small_cfg.model, ck)
    a = dict(model.audio.state_dict())
    b = dict(small_model.audio.state_dict())
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_emotion_folder_from_bin_and_safetensors_agree(small_cfg, small_ckpt, small_model, tmp_path):
    from float_rt.checkpoint import convert, load_model
    out = convert(small_ckpt, tmp_path / "st")
    assert (out / "float.safetensors").is_file()
    assert (out / "wav2vec-english-speech-emotion-recognition" / "model.safetensors").is_file()
    model, _ = load_model(small_cfg.model, out)
    ref = small_model.state_dict()
    got = model.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_convert_cli(small_ckpt, tmp_path):
    from server.cli import main
    assert main(["convert", str(small_ckpt), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "wav2vec2-base-960h" / "config.json").is_file()
