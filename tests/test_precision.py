"""The `fast` precision mode (float_rt/precision.py): bf16 products in the FMT's blocks within 1e-2
of fp32, everything else really fp32, fp32 the unchanged default, and a fp32 fallback (with a
warning) where the CPU has no bf16.  bf16 products are exact functions of their inputs on any CPU
(emulated where there is no hardware), so the errors checked here hold everywhere."""
import copy
import json
import logging

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import DATA, SMALL

CASE = DATA / "reference" / "tiny"


def guided_inputs(m, seed=0):
    from float_rt.sampler import Conditions
    gen = torch.Generator().manual_seed(seed)
    n, p = m.num_frames, m.num_prev_frames
    cond = Conditions(torch.randn(1, n, m.dim_a, generator=gen), torch.randn(1, m.dim_w, generator=gen),
                      torch.full((1, 1, m.dim_e), 1.0 / m.dim_e), 0.1 * torch.randn(1, p, m.dim_w, generator=gen),
                      torch.randn(1, p, m.dim_a, generator=gen))
    return torch.tensor([0.5]), torch.randn(1, n, m.dim_w, generator=gen), cond


def guided(fmt, inputs):
    from float_rt.sampler import Guidance, guided_velocity
    t, x, cond = inputs
    with torch.no_grad():
        return guided_velocity(fmt, t, x, cond, Guidance(2.0, 1.0, True))


@pytest.fixture
def bf16_cpu(monkeypatch):
    """The capability check says yes, whatever this CPU is (the products are the same everywhere)."""
    import float_rt.precision as P
    monkeypatch.setattr(P, "bf16_supported", lambda device="cpu": True)


@pytest.fixture
def loaded(small_cfg, small_ckpt):
    """A fresh copy of the small model and its config (apply_backends changes a model in place)."""
    from float_rt.checkpoint import load_model
    model, _ = load_model(small_cfg.model, small_ckpt)
    return model, small_cfg


def frames(model, m, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, m.input_size, m.input_size, generator=gen) * 2 - 1
    with torch.no_grad():
        s_r, _, _, feats = model.motion.encode_reference(image)
        return model.motion.decode(s_r, 0.1 * torch.randn(3, m.dim_w, generator=gen), feats)


def test_fast_fmt_and_decoder_within_1e2_of_fp32(loaded, small_cfg, small_ckpt, bf16_cpu):
    from float_rt.backends import BackendConfig, apply_backends
    from float_rt.checkpoint import load_model
    from float_rt.precision import Bf16Linear
    from float_rt.reference import relative_error
    fp32, _ = load_model(small_cfg.model, small_ckpt)
    apply_backends(fp32, BackendConfig(), "cpu")
    fast, m = loaded[0], small_cfg.model
    apply_backends(fast, BackendConfig(precision="fast"), "cpu")
    assert sum(isinstance(x, Bf16Linear) for x in fast.fmt.modules()) == 5 * small_cfg.model.fmt_depth
    inputs = guided_inputs(m)
    v32, v16 = guided(fp32.fmt, inputs), guided(fast.fmt, inputs)
    assert 0 < relative_error(v16, v32) < 1e-2       # bf16 products really ran, and stay close
    assert relative_error(frames(fast, m), frames(fp32, m)) < 1e-2


def test_fast_fmt_within_1e2_on_the_reference_case(tmp_path):
    """The reference case's model (256 px, FMT 256 x 2) and inputs: the guided evaluation at t=0.3
    (`fmt_vf_t03`) in fast against fp32 and against the official output."""
    from float_rt.checkpoint import load_model
    from float_rt.config import config_from_official
    from float_rt.precision import fast_fmt, shared_copy
    from float_rt.recipe import write_recipe_checkpoints
    from float_rt.reference import relative_error
    from float_rt.sampler import Conditions, Guidance, guided_velocity
    raw = json.loads((CASE / "config.json").read_text())
    cfg = config_from_official(raw["float"], raw["audio_encoder"], raw["emotion_encoder"])
    model, _ = load_model(cfg.model, write_recipe_checkpoints(cfg, tmp_path / "ckpt"))
    expected, inputs = np.load(CASE / "expected.npz"), np.load(CASE / "inputs.npz")
    m = cfg.model
    wa, we = torch.from_numpy(expected["wa"]), torch.from_numpy(expected["we"])
    cond = Conditions(wa[:, :m.num_frames], torch.from_numpy(expected["r_s"]), we,
                      wa.new_zeros(1, m.num_prev_frames, m.dim_w), wa.new_zeros(1, m.num_prev_frames, wa.shape[-1]))
    x0, t, g = torch.from_numpy(inputs["x0"]), torch.tensor([0.3]), Guidance.from_config(cfg.sampling)
    with torch.no_grad():
        v32 = guided_velocity(model.fmt, t, x0, cond, g)
        v16 = guided_velocity(fast_fmt(shared_copy(model.fmt)), t, x0, cond, g)
    assert relative_error(v32, expected["fmt_vf_t03"]) < 1e-4
    assert 0 < relative_error(v16, v32) < 1e-2
    assert relative_error(v16, expected["fmt_vf_t03"]) < 1e-2


class DtypeLog(TorchDispatchMode):
    """Records, per innermost running module (kept by forward hooks), the dtypes of the floating
    inputs of every matrix product and convolution."""
    PRODUCTS = ("mm", "linear", "conv", "matmul")

    def __init__(self):
        super().__init__()
        self.stack, self.seen = ["?"], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if any(p in name for p in self.PRODUCTS):
            dtypes = {a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()}
            self.seen.append((self.stack[-1], name, dtypes))
        return func(*args, **(kwargs or {}))


def watch(model: nn.Module, log: DtypeLog, prefix: str):
    def enter(name):
        def hook(module, args):
            log.stack.append(name)
        return hook

    def leave(module, args, out):
        log.stack.pop()

    handles = []
    for n, mod in model.named_modules():
        handles += [mod.register_forward_pre_hook(enter(f"{prefix}.{n}")), mod.register_forward_hook(leave)]
    return handles


def test_layers_kept_fp32_run_fp32_and_the_block_linears_bf16(loaded, bf16_cpu):
    from float_rt.backends import BackendConfig, apply_backends
    from float_rt.precision import FMT_BF16_LAYERS
    model, cfg = loaded
    apply_backends(model, BackendConfig(precision="fast"), "cpu")
    log = DtypeLog()
    handles = watch(model.fmt, log, "fmt") + watch(model.motion.decoder, log, "decoder")
    try:
        with log:
            guided(model.fmt, guided_inputs(cfg.model))
            frames(model, cfg.model)
    finally:
        for h in handles:
            h.remove()
    bf16 = {(w, dt) for w, _, dts in log.seen for dt in dts if dt != torch.float32}
    in_blocks = lambda w: w.startswith("fmt.blocks.") and w.rsplit(".", 1)[-1] in FMT_BF16_LAYERS
    # The chosen block linears compute in bf16, all of them; nothing else does.
    assert {w for w, dt in bf16} == {f"fmt.blocks.{i}.{n}" for i in range(cfg.model.fmt_depth) for n in FMT_BF16_LAYERS}
    assert all(dt == torch.bfloat16 for _, dt in bf16)
    kept = [(w, name, dts) for w, name, dts in log.seen if not in_blocks(w)]
    assert any(w.startswith("decoder.") for w, _, _ in kept) and any(w == "fmt.out" for w, _, _ in kept)
    assert all(dts <= {torch.float32} for _, _, dts in kept), [k for k in kept if k[2] - {torch.float32}]


def test_default_is_fp32_and_unchanged_bit_for_bit(small_cfg, small_ckpt, bf16_cpu):
    """No precision in the config (the packaged ones have none) is fp32: the same modules and the
    same numbers, bit for bit, as precision fp32, and the fp32 of the plain model."""
    from float_rt.backends import BackendConfig, apply_backends
    from float_rt.checkpoint import load_model
    from float_rt.precision import Bf16Linear
    from float_rt.reference import relative_error
    assert BackendConfig().precision == "fp32" and "precision" not in small_cfg.backends
    m = small_cfg.model
    models = []
    for backends in (dict(small_cfg.backends), {**small_cfg.backends, "precision": "fp32"}):
        model, _ = load_model(m, small_ckpt)
        models.append(apply_backends(model, BackendConfig.from_dict(backends), "cpu"))
    default, explicit = models
    assert not any(isinstance(x, Bf16Linear) for x in default.modules())
    assert [type(x).__name__ for x in default.modules()] == [type(x).__name__ for x in explicit.modules()]
    inputs = guided_inputs(m)
    assert torch.equal(guided(default.fmt, inputs), guided(explicit.fmt, inputs))
    assert torch.equal(frames(default, m), frames(explicit, m))
    plain, _ = load_model(m, small_ckpt)      # no backend at all
    assert relative_error(guided(default.fmt, inputs), guided(plain.fmt, inputs)) < 1e-5


def test_fast_without_bf16_hardware_falls_back_to_fp32_with_one_warning(loaded, monkeypatch, caplog):
    import float_rt.precision as P
    from float_rt.backends import BackendConfig, apply_backends
    info = dict(P.cpu_info(), avx512_bf16=False, amx_bf16=False)
    monkeypatch.setattr(P, "cpu_info", lambda: info)
    assert not P.bf16_supported("cpu")
    model, _ = loaded
    with caplog.at_level(logging.WARNING, logger="float_rt.precision"):
        apply_backends(model, BackendConfig(precision="fast"), "cpu")
    warnings = [r for r in caplog.records if r.name == "float_rt.precision"]
    assert len(warnings) == 1 and "running fp32" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    assert not any(isinstance(x, P.Bf16Linear) for x in model.modules())


def test_precision_is_checked_and_reaches_the_backends_from_the_command_line():
    import argparse

    from float_rt.backends import BackendConfig
    from float_rt.cli import add_backend_args, with_backends
    from float_rt.config import load_config
    with pytest.raises(ValueError, match="precision"):
        BackendConfig(precision="bf16")
    p = argparse.ArgumentParser()
    add_backend_args(p)
    cfg = with_backends(load_config(SMALL), p.parse_args(["--precision", "fast"]))
    assert BackendConfig.from_dict(cfg.backends).precision == "fast"
    assert "precision" not in with_backends(load_config(SMALL), p.parse_args([])).backends
    with pytest.raises(SystemExit):
        p.parse_args(["--precision", "fp16"])


def test_ditto_refuses_precision():
    from server.cli import main
    assert main(["bench", "--config", "ditto-tiny", "--precision", "fast"]) == 2


def test_bench_rows_carry_the_fast_error(small_ckpt, tmp_path, monkeypatch):
    import float_rt.bench as B
    import float_rt.precision as P
    from server.cli import main
    monkeypatch.setattr(B, "bf16_ok", lambda device: True)
    monkeypatch.setattr(P, "bf16_supported", lambda device="cpu": True)
    out = tmp_path / "bench.json"
    assert main(["bench", "--config", str(SMALL), "--checkpoints", str(small_ckpt), "--seconds", "0.5",
                 "--decode-frames", "1", "--repeat", "1", "--precision", "fast", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["precision"] == "fast" and res["backends"]["precision"] == "fast"
    assert 0 < res["fast_fmt_rel_err"] < 1e-2 and res["fast_fmt_guided_eval_s"] > 0
    assert res["fast_decode_rel_err"] < 1e-2 and res["fast_decode_s_per_frame"] > 0
    assert res["rows"]["FMT guided eval, fast"]["rel_err_vs_fp32"] == res["fast_fmt_rel_err"]
    # fp32 stays the figure compared with the official code
    assert res["fmt_guided_eval_s"] == res["rows"]["FMT guided eval, fp32"]["seconds"]


def test_shared_copy_shares_weights_and_leaves_the_original_alone(small_model):
    from float_rt.precision import Bf16Linear, fast_fmt, shared_copy
    fmt = small_model.fmt
    before = copy.copy(dict(fmt.named_modules()))
    fast = fast_fmt(shared_copy(fmt))
    assert dict(fmt.named_modules()).keys() == before.keys()
    assert not any(isinstance(x, Bf16Linear) for x in fmt.modules())
    assert fast.blocks[0].fc1.weight is fmt.blocks[0].fc1.weight
