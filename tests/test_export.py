"""ONNX export, the onnxruntime backend, the fused decoder and the TensorRT entry points (small config),
and the Ditto family's graphs and GPU benchmark parts (ditto-tiny)."""
import contextlib
import importlib.util
import io
import json
import shutil

import numpy as np
import pytest
import torch

from float_rt.errors import FloatRTError
from float_rt.motion.fused import FusedDecoder, _FusedModConv, _FusedUpsample, to_channels_last
from float_rt.reference import relative_error as rel_err


@pytest.fixture(scope="module")
def engines(small_model, tmp_path_factory):
    from export.onnx import export_onnx
    out = tmp_path_factory.mktemp("engines")
    export_onnx(small_model, "small", out, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def ditto_ckpt(tmp_path_factory):
    from float_rt.config import load_config
    from float_rt.ditto.weights import write_demo_folder
    from float_rt.resources import config_path
    return write_demo_folder(load_config(config_path("ditto-tiny")), tmp_path_factory.mktemp("ditto_ckpt"))


@pytest.fixture(scope="module")
def ditto_model(ditto_ckpt):
    from float_rt.config import load_config
    from float_rt.family import family_of
    from float_rt.resources import config_path
    cfg = load_config(config_path("ditto-tiny"))
    return family_of(cfg).load(cfg, ditto_ckpt, "cpu")


# config -> (its checkpoint fixture, the --config argument, the graphs `export onnx` writes, with their opsets)
EXPORT_CASES = {
    "small": ("small_ckpt", "configs/small.yaml", dict.fromkeys(["encoder", "decoder", "fmt", "audio", "emotion"], 18)),
    "ditto-tiny": ("ditto_ckpt", "ditto-tiny", {"appearance": 18, "motion": 18, "stitch": 18, "warp": 20, "decoder": 18,
                                                "lmdm_audio": 18, "lmdm": 18}),
}


@pytest.fixture(scope="module")
def cli_exports(tmp_path_factory, request):
    """`float-rt export onnx` run once per config: (folder, what it printed)."""
    from conftest import ROOT
    from server.cli import main
    done = {}

    def export(config):
        if config not in done:
            fixture, arg, _ = EXPORT_CASES[config]
            out = tmp_path_factory.mktemp("cli_engines")
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                argv = ["export", "onnx", "--checkpoints", str(request.getfixturevalue(fixture)),
                        "--config", str(ROOT / arg) if arg.endswith(".yaml") else arg, "--out", str(out)]
                assert main(argv) == 0
            done[config] = out, printed.getvalue()
        return done[config]
    return export


@pytest.fixture(scope="module")
def ref(small_model):
    torch.manual_seed(0)
    image = torch.rand(1, 3, 128, 128) * 2 - 1
    return small_model.motion.encode_reference(image)


# ------------------------------------------------------------------ fused decoder
def test_fused_pieces_are_exact(small_model):
    dec = small_model.motion.decoder
    torch.manual_seed(1)
    latent = torch.randn(2, 128)
    with torch.no_grad():
        x = torch.randn(2, dec.up_convs[1].conv.weight.shape[1], 16, 16)
        assert rel_err(_FusedModConv(dec.up_convs[1].conv, dec.up_convs[1].act_bias)(x, latent),
                       dec.up_convs[1](x, latent)) < 1e-6
        img = torch.randn(2, 3, 32, 32)
        assert rel_err(_FusedUpsample(dec.upsample.kernel)(img), dec.upsample(img)) < 1e-6


@pytest.mark.parametrize("batch,channels_last", [(1, True), (1, False), (3, True)])
def test_fused_decoder_matches_the_torch_decoder(small_model, ref, batch, channels_last):
    s_r, _, _, feats = ref
    dec = small_model.motion.decoder
    latent = s_r + 0.1 * torch.randn(batch, 128, generator=torch.Generator().manual_seed(batch))
    fused = FusedDecoder(dec)
    fused.set_channels_last(channels_last)
    layouts = []     # every modulated conv's input: channels-last all the way through, or plain
    hooks = [m.register_forward_pre_hook(lambda m, a: layouts.append(a[0].is_contiguous(
        memory_format=torch.channels_last) and not a[0].is_contiguous())) for m in fused.modules()
        if isinstance(m, _FusedModConv)]
    with torch.no_grad():
        want = dec(latent, feats)
        got = fused(latent, to_channels_last(feats) if channels_last else feats)
        want64 = _double(dec)(latent.double(), [f.double() for f in feats])
    for h in hooks:
        h.remove()
    # past the 4x4 constant (whose layouts coincide), the activations keep the layout asked for
    assert layouts[2:] and all(on == channels_last for on in layouts[2:])
    # Same function: the fused form is as close to a float64 run as the torch module itself.
    assert rel_err(got, want) < 1e-4
    assert rel_err(got, want64) < 2 * rel_err(want, want64) + 1e-6


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("transforms", ["compiled", "torch"])
def test_fused_decoder_winograd_path_matches_the_torch_decoder(batch, transforms):
    """The wide 3x3 modulated convolutions by Winograd (a decoder wide enough to take that path:
    128 channels at 32 and 64 px), its transforms compiled or as PyTorch ops: the same frames as
    the module decoder and the direct path."""
    import contextlib

    from float_rt import native, winograd
    with native.without_native() if transforms == "torch" else contextlib.nullcontext():
        assert winograd.compiled(winograd.Plan(4, 3)) == (transforms == "compiled")
        _winograd_decoder_case(batch)


def _winograd_decoder_case(batch):
    from float_rt.config import ModelConfig
    from float_rt.motion.decoder import SynthesisDecoder
    torch.manual_seed(3)
    cfg = ModelConfig(input_size=64, dim_w=64, channel_base=8192, channel_max=128)
    dec = SynthesisDecoder(cfg).eval()
    feats = [torch.randn(1, cfg.width(r), r, r) for r in (8, 16, 32, 64)]
    latent = torch.randn(batch, 64)
    fused = FusedDecoder(dec)
    fused.set_channels_last(True)
    with torch.no_grad():
        want = dec(latent, feats)
        want64 = _double(dec)(latent.double(), [f.double() for f in feats])
        direct = fused(latent, to_channels_last(feats))
        fused.set_winograd(True)
        got = fused(latent, to_channels_last(feats))
    taken = [m for m in fused.modules() if isinstance(m, _FusedModConv) and "_prepared" in m.__dict__]
    assert len(taken) == 2       # the 3x3 convs at 32 and 64 px (the up-convs are transposed)
    # this random decoder amplifies rounding (its fp32 run is ~1e-3 from float64): both fused paths
    # are held to the module's own distance from the float64 run
    for out in (got, direct):
        assert rel_err(out, want64) < 2 * rel_err(want, want64) + 1e-6


def _double(module):
    import copy
    return copy.deepcopy(module).double()


# ------------------------------------------------------------------ ONNX graphs
def test_every_graph_matches_pytorch_in_onnxruntime(small_model, engines, ref):
    from export.backends import OrtGraph
    from export.graphs import graph_specs
    from export.onnx import check_graph, varied_inputs
    manifest = json.loads((engines / "manifest.json").read_text())
    assert set(manifest["graphs"]) == {"encoder", "decoder", "fmt", "audio", "emotion"}
    for spec in graph_specs(small_model):
        path = engines / f"{spec.name}.onnx"
        assert check_graph(spec, path, torch.device("cpu")) <= 1e-4
        assert check_graph(spec, path, torch.device("cpu"), varied_inputs(spec)) <= 1e-4   # dynamic axes
    # The decoder graph against the original (unfused) torch decoder, several frames, batch-1 features.
    s_r, _, _, feats = ref
    latent = s_r + 0.1 * torch.randn(5, 128, generator=torch.Generator().manual_seed(5))
    got = OrtGraph(engines / "decoder.onnx", torch.device("cpu"))(
        latent=latent, **{f"feat_{i}": f for i, f in enumerate(feats)})[0]
    with torch.no_grad():
        assert rel_err(got, small_model.motion.decoder(latent, feats)) <= 1e-4


def test_pipeline_on_onnxruntime_matches_torch(small_cfg, small_ckpt, engines, speech_wav):
    import dataclasses

    from float_rt.media import load_audio
    from float_rt.pipeline import FloatPipeline, sampling_with
    samples = load_audio(speech_wav)[:32000]
    image = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3)) * 2 - 1
    sampling = sampling_with(small_cfg.sampling, nfe=4)
    outs = {}
    for kind in ("torch", "onnxruntime"):
        cfg = dataclasses.replace(small_cfg, backends={**{s: kind for s in ("encoder", "decoder", "fmt", "audio",
                                                                            "emotion")}, "engines": str(engines)})
        pipe = FloatPipeline.from_checkpoints(small_ckpt, cfg, "cpu")
        if kind == "onnxruntime":
            assert type(pipe.model.fmt).__name__ == "FMTStage"
        r = pipe.encode_reference(image)
        motion = pipe.sample(r, pipe.input_values(samples), sampling)
        frames = torch.cat(list(pipe.decode(r, motion)))
        outs[kind] = (motion, frames)
    assert rel_err(outs["onnxruntime"][0], outs["torch"][0]) <= 1e-4
    assert rel_err(outs["onnxruntime"][1], outs["torch"][1]) <= 1e-3


def test_streaming_engine_runs_on_onnxruntime(small_cfg, small_ckpt, engines, speech_wav):
    import dataclasses

    from float_rt.media import load_audio
    from streaming.config import StreamConfig
    from streaming.engine import Engine
    cfg = dataclasses.replace(small_cfg, backends={"decoder": "onnxruntime", "fmt": "onnxruntime",
                                                   "audio": "onnxruntime", "engines": str(engines)})
    engine = Engine.from_checkpoints(small_ckpt, cfg, StreamConfig(), "cpu")
    s = engine.open_session(torch.zeros(1, 3, 128, 128), engine.default_options(emotion="happy"))
    s.push_audio(load_audio(speech_wav)[:16000], 16000)
    s.end_input()
    frames = []
    while engine.step():
        frames += s.take_frames()
    frames += s.take_frames()
    assert len(frames) == 25 and frames[0].image.shape == (128, 128, 3)


def test_missing_or_mismatched_engines_say_how_to_rebuild(small_cfg, small_ckpt, engines, tmp_path):
    import dataclasses

    from float_rt.backends import BackendConfig
    from float_rt.pipeline import FloatPipeline

    def load(backends):
        return FloatPipeline.from_checkpoints(small_ckpt, dataclasses.replace(small_cfg, backends=backends), "cpu")

    with pytest.raises(FloatRTError, match="float-rt export onnx"):
        load({"fmt": "onnxruntime"})                                  # no folder given
    with pytest.raises(FloatRTError, match="manifest.json missing.*float-rt export onnx"):
        load({"fmt": "onnxruntime", "engines": str(tmp_path)})
    other = tmp_path / "other"
    shutil.copytree(engines, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["fingerprint"] = "0" * 16                                 # built from other weights
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FloatRTError, match="other weights.*float-rt export onnx"):
        load({"fmt": "onnxruntime", "engines": str(other)})
    manifest["fingerprint"] = json.loads((engines / "manifest.json").read_text())["fingerprint"]
    (other / "manifest.json").write_text(json.dumps(manifest))
    (other / "fmt.onnx").unlink()
    with pytest.raises(FloatRTError, match="missing .*fmt.onnx.*float-rt export onnx"):
        load({"fmt": "onnxruntime", "engines": str(other)})
    with pytest.raises(FloatRTError, match="export trt"):
        if torch.cuda.is_available():
            pytest.skip("CUDA present: the TensorRT test covers this")
        load({"fmt": "tensorrt", "engines": str(engines)})
    with pytest.raises(ValueError, match="decoder"):
        BackendConfig(decoder="tpu")


def test_graph_backends_are_a_plugin_of_the_model_layer(small_cfg, small_ckpt, engines, monkeypatch):
    import dataclasses
    import subprocess
    import sys

    import float_rt.backends
    from float_rt.pipeline import FloatPipeline

    # Loading and running the model never imports the layers above it (or export, which plugs in).
    code = ("import sys, float_rt.pipeline, float_rt.backends, float_rt.sampler, float_rt.cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'export', 'streaming', 'server'}))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
    # Without the entry point that export/ declares, graph stages are a clear error, torch ones still load.
    monkeypatch.setattr(float_rt.backends, "entry_points", lambda **kw: ())
    cfg = dataclasses.replace(small_cfg, backends={"fmt": "onnxruntime", "engines": str(engines)})
    with pytest.raises(FloatRTError, match="export package.*not installed"):
        FloatPipeline.from_checkpoints(small_ckpt, cfg, "cpu")
    assert FloatPipeline.from_checkpoints(small_ckpt, small_cfg, "cpu").model is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT engines need a CUDA GPU (none here)")
def test_tensorrt_engines_match_pytorch(small_model, engines, tmp_path):
    pytest.importorskip("tensorrt", reason="the tensorrt package is not installed")
    from export.backends import OrtGraph
    from export.trt import TrtGraph, build_engines
    folder = tmp_path / "trt"
    shutil.copytree(engines, folder)
    manifest = build_engines(folder, fp16=False, log_fn=lambda *_: None)
    for name, g in manifest["graphs"].items():
        ort = OrtGraph(folder / g["onnx"], torch.device("cpu"))
        trt = TrtGraph(folder / g["trt"], torch.device("cuda"))
        inputs = {k: torch.randn(v) for k, v in g["inputs"].items()}
        if name == "encoder":
            inputs["image"] = inputs["image"].clamp(-1, 1)
        for a, b in zip(trt(**inputs), ort(**inputs)):
            assert rel_err(a.cpu(), b) <= 1e-3


def test_tensorrt_without_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    from export.trt import build_engines
    with pytest.raises(FloatRTError, match="CUDA"):
        build_engines(tmp_path)


@pytest.mark.parametrize("config", list(EXPORT_CASES))
def test_export_cli_writes_and_checks_every_graph(config, cli_exports):
    folder, printed = cli_exports(config)
    manifest = json.loads((folder / "manifest.json").read_text())
    graphs = EXPORT_CASES[config][2]
    assert set(manifest["graphs"]) == set(graphs)
    for name, g in manifest["graphs"].items():
        assert name in printed and (folder / g["onnx"]).is_file()
        assert g["opset"] == graphs[name]
        assert g["rel_err"] <= 1e-4        # onnxruntime against PyTorch, on the examples and on other batch sizes
    assert manifest["opset"] == max(graphs.values())


def test_bench_backends_cli(small_ckpt, cli_exports, tmp_path):
    from conftest import SMALL
    from server.cli import main
    engines, _ = cli_exports("small")
    assert main(["bench-backends", "--checkpoints", str(small_ckpt), "--config", str(SMALL),
                 "--engines", str(engines), "--repeat", "1", "--json", str(tmp_path / "b.json")]) == 0
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    paths = {(r["stage"], r["path"]) for r in rows}
    assert ("decoder", "onnxruntime fp32, batch 1") in paths and ("fmt", "onnxruntime fp32") in paths
    assert all(np.isfinite(r["seconds"]) and r["seconds"] > 0 for r in rows)


# ------------------------------------------------------------------ Ditto
def test_ditto_graphs_compute_what_the_product_computes(ditto_model, cli_exports):
    """Each graph against the product's own calls (not the export wrappers): the renderer's drive and
    render, the sampler's guided prediction with integer times, the LMDM's audio context."""
    from export.backends import OrtGraph
    from export.ditto_graphs import ditto_fingerprint, example_inputs
    from float_rt.ditto.sampler import guided_prediction
    folder, _ = cli_exports("ditto-tiny")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["fingerprint"] == ditto_fingerprint(ditto_model) and manifest["family"] == "ditto"
    assert all(g["max_err"] <= 1e-4 for g in manifest["graphs"].values())
    cpu = torch.device("cpu")
    run = {name: OrtGraph(folder / g["onnx"], cpu) for name, g in manifest["graphs"].items()}
    r, lm = ditto_model.renderer, ditto_model.lmdm
    ex = example_inputs(ditto_model, frames=3, windows=2, seed=7)
    with torch.no_grad():
        # source: appearance features and keypoints of a crop
        info, x_s, f_s = r.source(ex["image"][:1])
        assert rel_err(run["appearance"](image=ex["image"][:1])[0], f_s) <= 1e-5
        assert rel_err(run["motion"](image=ex["image"][:1])[6], info.kp) <= 1e-5
        # frames: stitching, then warp + decoder, the source at batch 1 and repeated per frame
        assert rel_err(run["stitch"](x_s=ex["x_s"], x_d=ex["x_d"])[0], r.stitch.stitch(ex["x_s"], ex["x_d"])) <= 1e-5
        want = r.render(ex["f_s"], ex["x_s"], ex["x_d"])
        for n in (1, 3):
            feature = run["warp"](f_s=ex["f_s"].expand(n, -1, -1, -1, -1), x_s=ex["x_s"].expand(n, -1, -1),
                                  x_d=ex["x_d"])[0]
            rgb = run["decoder"](feature=feature)[0]
            assert rel_err(rgb.permute(0, 2, 3, 1).clamp(0, 1) * 255, want) <= 1e-5
        # motion: the window's audio context once, then guided steps at two diffusion times
        tokens, pooled = run["lmdm_audio"](cond=ex["cond"])
        ctx = lm.audio_context(ex["cond"])
        assert rel_err(tokens, ctx.tokens) <= 1e-5 and rel_err(pooled, ctx.pooled) <= 1e-5
        for t in (999, 19):
            times = torch.full((2,), t, dtype=torch.long)
            got = run["lmdm"](x=ex["x"], cond_frame=ex["cond_frame"], tokens=tokens, pooled=pooled,
                              t=times.float(), guidance=torch.full((1,), 2.0))[0]
            assert rel_err(got, guided_prediction(lm, ex["x"], ex["cond_frame"], ctx, times, 2.0)) <= 1e-5


def test_export_refuses_bad_input_in_one_line(tmp_path, capsys):
    from server.cli import main
    assert main(["export", "onnx", "--config", "ditto-tiny", "--checkpoints", str(tmp_path / "none"),
                 "--out", str(tmp_path / "e")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error:") and "not found" in err[0]
    assert not (tmp_path / "e").exists()


def _bench_gpu():
    from conftest import ROOT
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "scripts" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_gpu_covers_ditto_with_parts_that_run_on_the_cpu(ditto_model, ditto_ckpt, cli_exports):
    bench = _bench_gpu()
    assert set(bench.BENCHES) == {"float", "ditto"}
    folder, _ = cli_exports("ditto-tiny")
    cpu = torch.device("cpu")
    manifest = bench.ditto_engines(ditto_model, ditto_model.cfg, folder, log=lambda *_: None)   # up to date: kept
    rows = bench.ditto_stage_rows(ditto_model, folder, manifest, cpu, repeat=1)
    assert set(rows) == set(EXPORT_CASES["ditto-tiny"][2])
    assert all(set(r) == {"torch fp32", "onnxruntime"} and min(r.values()) > 0 for r in rows.values())
    render = bench.ditto_render_rows(ditto_model, cpu, batches=(2,), repeat=1)
    lmdm = bench.ditto_lmdm_rows(ditto_model, cpu, repeat=1, steps=2)
    assert min(render[2].values()) > 0 and lmdm["guided step ms"] > 0 and lmdm["window x real time"] > 0
    assert bench.ditto_offline_fps(ditto_model, seconds=0.5, steps=2) > 0
    assert bench.realtime_sessions({1: 10.0, 4: 2.0, 16: 100.0}, window_ms=60.0, new_frames=30, fps=25) == 4
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="CUDA"):
            bench.main(["--checkpoints", str(ditto_ckpt), "--config", "ditto-tiny"])
