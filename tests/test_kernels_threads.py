"""The thread policy (float_rt/cpu.py: cores from affinity and cgroup quota, less a reserve) and
the kernel choice (float_rt/kernels.py: timed once, cached per machine; each path forced gives
the same output).  Fake cgroup files, fake affinity and an injected timer: nothing here
depends on how fast this machine is."""
import json
import logging

import pytest
import torch

from float_rt import kernels
from float_rt.cpu import available_cpus, cgroup_cpu_limit, intra_op_threads, use_threads
from float_rt.kernels import KernelChooser


# ---------------------------------------------------------------- threads
def cgroup(tmp_path, self_cgroup: str, files: dict[str, str]):
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    root.mkdir(parents=True, exist_ok=True)
    (tmp_path / "self").write_text(self_cgroup)
    return cgroup_cpu_limit(root, tmp_path / "self")


def test_cgroup_v2_quota_is_the_tightest_on_the_path_up(tmp_path):
    assert cgroup(tmp_path, "0::/\n", {"cpu.max": "150000 100000\n"}) == 1.5
    assert cgroup(tmp_path / "a", "0::/svc/app\n", {"cpu.max": "max 100000", "svc/cpu.max": "300000 100000",
                                                     "svc/app/cpu.max": "max 100000"}) == 3.0
    assert cgroup(tmp_path / "b", "0::/svc/app\n", {"svc/cpu.max": "400000 100000",
                                                     "svc/app/cpu.max": "50000 100000"}) == 0.5
    assert cgroup(tmp_path / "c", "0::/\n", {"cpu.max": "max 100000"}) is None          # no quota
    # the process's cgroup path is not under the mount (a container's namespace): the mount's own file
    assert cgroup(tmp_path / "d", "0::/docker/abc\n", {"cpu.max": "200000 100000"}) == 2.0


def test_cgroup_v1_quota_and_what_counts_as_no_limit(tmp_path):
    v1 = "12:pids:/\n4:cpu,cpuacct:/kubepods/pod1\n2:memory:/x\n"
    assert cgroup(tmp_path / "a", v1, {"cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us": "250000",
                                       "cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us": "100000"}) == 2.5
    assert cgroup(tmp_path / "b", "3:cpu:/\n2:cpuacct:/\n", {"cpu/cpu.cfs_quota_us": "-1",
                                                            "cpu/cpu.cfs_period_us": "100000"}) is None
    assert cgroup(tmp_path / "c", "3:cpu:/\n", {"cpu/cpu.cfs_quota_us": "100000",
                                               "cpu/cpu.cfs_period_us": "100000"}) == 1.0
    # malformed or missing files, an unreadable /proc/self/cgroup: no limit, no crash
    assert cgroup(tmp_path / "d", "0::/\n", {"cpu.max": "lots of cpu"}) is None
    assert cgroup(tmp_path / "e", "3:cpu:/\n", {"cpu/cpu.cfs_quota_us": "x", "cpu/cpu.cfs_period_us": "y"}) is None
    assert cgroup(tmp_path / "f", "garbage", {}) is None
    assert cgroup_cpu_limit(tmp_path / "nowhere", tmp_path / "nothing") is None


def test_available_cpus_is_the_affinity_capped_by_the_quota():
    assert available_cpus(affinity={0, 1, 2, 3}, quota=None) == 4
    assert available_cpus(affinity={0, 1, 2, 3}, quota=1.5) == 1.5
    assert available_cpus(affinity={2, 5}, quota=8.0) == 2          # a quota above the affinity changes nothing
    assert available_cpus() >= 1                                    # this machine, whatever it has


@pytest.mark.parametrize("cpus,reserve,share,expected", [
    (2, 0, 1, 2), (2, 0.5, 1, 2),      # a core only partly reserved keeps its thread
    (2, 1, 1, 1), (2, 5, 1, 1),        # at least one
    (1.5, 0, 1, 2),                    # a fractional quota: rounded up
    (16, 1, 1, 15), (16, 1, 3, 5), (4, 0.5, 2, 2), (2, 0.5, 2, 1),
])
def test_intra_op_threads(cpus, reserve, share, expected):
    assert intra_op_threads(reserve, share=share, cpus=cpus) == expected


def test_an_explicit_thread_count_wins_and_is_applied(monkeypatch):
    from float_rt import cpu
    monkeypatch.setattr(cpu, "_threads_set", cpu._threads_set)     # restored after
    assert intra_op_threads(1.0, override=3, cpus=2) == 3
    with pytest.raises(ValueError):
        intra_op_threads(-1, cpus=2)
    with pytest.raises(ValueError):
        intra_op_threads(0, share=0, cpus=2)
    before = torch.get_num_threads()
    try:
        assert use_threads(override=1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_server_passes_its_reserve_and_its_override(monkeypatch):
    from float_rt import cpu
    from server.config import ServerConfig, load_server_config
    from server.startup import engine_threads
    monkeypatch.setattr(cpu, "available_cpus", lambda *a, **k: 4.0)
    monkeypatch.setattr(cpu, "_threads_set", cpu._threads_set)
    before = torch.get_num_threads()
    try:
        assert engine_threads(ServerConfig(device="cpu", cpu_reserve=1.0)) == 3
        assert engine_threads(ServerConfig(device="cpu", cpu_reserve=1.0, workers=2, max_sessions=4), 2) == 2
        assert engine_threads(ServerConfig(device="cpu", threads=1)) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert load_server_config().cpu_reserve == 0.5                  # the packaged default
    with pytest.raises(ValueError):
        ServerConfig(cpu_reserve=-1)


def test_torch_default_is_lowered_to_the_cores_available_but_a_chosen_count_stays(monkeypatch):
    from float_rt import cpu
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu, "_threads_set", None)
    monkeypatch.setattr(cpu, "available_cpus", lambda *a, **k: 1.0)     # e.g. a 1-CPU quota torch cannot see
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(cpu, "_TORCH_DEFAULT", 2)                    # torch's own count, untouched
        assert cpu.default_threads() == 1 and cpu.tune(False, False)["threads"] == 1
        torch.set_num_threads(2)
        monkeypatch.setattr(cpu, "_TORCH_DEFAULT", 4)                    # someone set 2: kept
        assert cpu.default_threads() == 2
        monkeypatch.setattr(cpu, "_TORCH_DEFAULT", 2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")                       # the user's environment: kept
        assert cpu.default_threads() == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(cpu, "_threads_set", 2)                      # chosen by use_threads: kept
        assert cpu.default_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- the choice logic
class FakeTimer:
    """Seconds per candidate, as given; counts its calls (no real timing)."""

    def __init__(self, seconds):
        self.seconds, self.calls = seconds, 0

    def __call__(self, runners):
        self.calls += 1
        for fn in runners.values():
            fn()
        return {name: self.seconds[name] for name in runners}


def runners_counting(built):
    def make():
        built.append(1)
        return {"a": lambda: None, "b": lambda: None, "c": lambda: None}
    return make


def test_the_faster_is_kept_and_a_cache_hit_skips_the_timing(tmp_path):
    path = tmp_path / "cache" / "kernels.json"
    timer, built = FakeTimer({"a": 2.0, "b": 1.0}), []
    first = KernelChooser(path, "cpu X | torch 1", timer)
    assert first.choose("linear", "8x8 rows 4", ("a", "b"), runners_counting(built)) == "b"
    assert timer.calls == 1 and len(built) == 1
    assert first.choose("linear", "8x8 rows 4", ("a", "b"), runners_counting(built)) == "b"   # in memory
    assert timer.calls == 1
    saved = json.loads(path.read_text())
    assert saved["machines"]["cpu X | torch 1"]["linear 8x8 rows 4"]["choice"] == "b"

    again = KernelChooser(path, "cpu X | torch 1", timer)          # a later process: read from disk
    assert again.choose("linear", "8x8 rows 4", ("a", "b"), runners_counting(built)) == "b"
    assert timer.calls == 1 and len(built) == 1                     # neither timed nor built
    assert again.decisions["linear 8x8 rows 4"].source == "cache"
    assert again.decisions["linear 8x8 rows 4"].seconds == {"a": 2.0, "b": 1.0}


def test_another_cpu_or_torch_times_again_and_both_are_kept(tmp_path):
    path = tmp_path / "kernels.json"
    KernelChooser(path, "cpu X | torch 1", FakeTimer({"a": 2.0, "b": 1.0})).choose(
        "decoder", "512px", ("a", "b"), runners_counting([]))
    for machine, seconds, expected in (("cpu Y | torch 1", {"a": 1.0, "b": 2.0}, "a"),
                                       ("cpu X | torch 2", {"a": 1.0, "b": 3.0}, "a")):
        timer = FakeTimer(seconds)
        assert KernelChooser(path, machine, timer).choose("decoder", "512px", ("a", "b"),
                                                          runners_counting([])) == expected
        assert timer.calls == 1
    saved = json.loads(path.read_text())["machines"]
    assert {m: v["decoder 512px"]["choice"] for m, v in saved.items()} == \
        {"cpu X | torch 1": "b", "cpu Y | torch 1": "a", "cpu X | torch 2": "a"}
    # a new shape is timed too; a cached choice that is not among today's candidates is not used
    timer = FakeTimer({"a": 1.0, "b": 2.0, "c": 0.5})
    chooser = KernelChooser(path, "cpu X | torch 1", timer)
    assert chooser.choose("decoder", "256px", ("a", "b"), runners_counting([])) == "a" and timer.calls == 1
    assert chooser.choose("decoder", "512px", ("a", "c"), runners_counting([])) == "c" and timer.calls == 2


@pytest.mark.parametrize("content", ["{not json", json.dumps({"version": 99, "machines": {}}), json.dumps([1, 2]),
                                     "\udcff"])
def test_a_corrupt_cache_is_ignored_with_a_warning(tmp_path, caplog, content):
    path = tmp_path / "kernels.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    timer = FakeTimer({"a": 2.0, "b": 1.0})
    with caplog.at_level(logging.WARNING, logger="float_rt.kernels"):
        assert KernelChooser(path, "m", timer).choose("op", "s", ("a", "b"), runners_counting([])) == "b"
    assert timer.calls == 1
    assert "ignoring the kernel cache" in caplog.text
    assert json.loads(path.read_text())["machines"]["m"]["op s"]["choice"] == "b"     # rewritten, valid


def test_an_unwritable_cache_keeps_the_choice_in_memory(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    timer = FakeTimer({"a": 2.0, "b": 1.0})
    chooser = KernelChooser(blocker / "kernels.json", "m", timer)    # its folder is a file
    with caplog.at_level(logging.WARNING, logger="float_rt.kernels"):
        assert chooser.choose("op", "s", ("a", "b"), runners_counting([])) == "b"
        assert chooser.choose("op", "s", ("a", "b"), runners_counting([])) == "b"
    assert timer.calls == 1 and "cannot write the kernel cache" in caplog.text
    assert KernelChooser(None, "m", timer).choose("op", "s", ("a", "b"), runners_counting([])) == "b"


def test_a_forced_path_is_not_timed_and_must_exist(tmp_path):
    timer, built = FakeTimer({"a": 2.0, "b": 1.0}), []
    chooser = KernelChooser(tmp_path / "k.json", "m", timer)
    assert chooser.choose("op", "s", ("a", "b"), runners_counting(built), force="a") == "a"
    assert chooser.choose("op", "t", ("a",), runners_counting(built)) == "a"          # one candidate
    assert timer.calls == 0 and not built and not (tmp_path / "k.json").exists()
    assert chooser.decisions["op s"].source == "forced" and chooser.decisions["op t"].source == "only"
    with pytest.raises(ValueError, match="no path 'z'"):
        chooser.choose("op", "s", ("a", "b"), runners_counting(built), force="z")


def test_measure_times_every_candidate_interleaved():
    order = []
    out = kernels.measure({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=2,
                          min_sample_s=0, max_calls=1)
    assert set(out) == {"a", "b"} and all(v >= 0 for v in out.values())
    assert order == ["a", "b", "a", "b", "a", "b"]                   # warm-up, then A B A B


def test_the_cache_file_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(kernels.CACHE_ENV, "off")
    assert kernels.default_cache_path() is None
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "k.json"))
    assert kernels.default_cache_path() == tmp_path / "k.json"
    monkeypatch.delenv(kernels.CACHE_ENV)
    monkeypatch.setenv("FLOAT_RT_CACHE", str(tmp_path / "c"))
    assert kernels.default_cache_path() == tmp_path / "c" / "kernels.json"


# ---------------------------------------------------------------- each path forced: the same output
def test_backend_switches_accept_auto_true_false_only():
    from float_rt.backends import BackendConfig, decoder_paths
    assert BackendConfig().packed_linear == "auto"
    assert BackendConfig.from_dict({"fused_decoder": "false", "channels_last": True}).fused_decoder is False
    assert decoder_paths(BackendConfig()) == ("module", "fused", "fused-channels-last", "fused-winograd")
    assert decoder_paths(BackendConfig(fused_decoder=True)) == ("fused", "fused-channels-last", "fused-winograd")
    assert decoder_paths(BackendConfig(fused_decoder=True, winograd=False)) == ("fused", "fused-channels-last")
    assert decoder_paths(BackendConfig(winograd=True)) == ("module", "fused-winograd")
    assert decoder_paths(BackendConfig(channels_last=False, winograd=True)) == ("module",)
    assert decoder_paths(BackendConfig(fused_decoder=True, channels_last=False)) == ("fused",)
    assert decoder_paths(BackendConfig(fused_decoder=False, channels_last=True)) == ("module",)
    with pytest.raises(ValueError, match="packed_linear"):
        BackendConfig(packed_linear="sometimes")


class Pick:
    """A chooser stand-in that picks a given candidate (or the first) and records what was asked."""

    def __init__(self, pick=None):
        self.pick, self.asked = pick, []

    def choose(self, op, shape, candidates, runners, force="auto"):
        self.asked.append((op, shape, tuple(candidates)))
        if len(candidates) > 1:
            fns = runners()
            assert set(candidates) <= set(fns)
        return self.pick if self.pick in candidates else candidates[0]


@pytest.fixture(scope="module")
def small_inputs(small_cfg):
    from float_rt.sampler import Conditions, Guidance
    m = small_cfg.model
    g = torch.Generator().manual_seed(0)
    n, p = m.num_frames, m.num_prev_frames
    wa = torch.randn(1, n, m.dim_a, generator=g)
    cond = Conditions(wa, torch.randn(1, m.dim_w, generator=g), torch.full((1, 1, m.dim_e), 1.0 / m.dim_e),
                      0.1 * torch.randn(1, p, m.dim_w, generator=g), wa[:, :p])
    return (torch.rand(1, 3, m.input_size, m.input_size, generator=g) * 2 - 1,
            0.1 * torch.randn(3, m.dim_w, generator=g), torch.randn(1, n, m.dim_w, generator=g), cond,
            Guidance(2.0, 1.0, True), torch.randn(1, 16000, generator=g))


def outputs(small_cfg, small_ckpt, backends, inputs, chooser=None):
    from float_rt.backends import BackendConfig, apply_backends
    from float_rt.checkpoint import load_model
    from float_rt.sampler import guided_velocity
    model, _ = load_model(small_cfg.model, small_ckpt)
    apply_backends(model, BackendConfig.from_dict(backends), "cpu", chooser)
    image, motion, x, cond, guidance, audio = inputs
    with torch.no_grad():
        s_r, _, _, feats = model.motion.encode_reference(image)
        return (model.motion.decode(s_r, motion, feats), guided_velocity(model.fmt, torch.tensor([0.5]), x, cond, guidance),
                model.encode_audio(audio))


@pytest.fixture(scope="module")
def plain_outputs(small_cfg, small_ckpt, small_inputs):
    """The module decoder and F.linear everywhere: what every other path must reproduce."""
    return outputs(small_cfg, small_ckpt, {"fused_decoder": False, "packed_linear": False}, small_inputs)


def close(a, b, tol=1e-4):
    return ((a - b).norm() / b.norm()).item() < tol


@pytest.mark.parametrize("fused,channels_last", [(False, "auto"), (True, False), (True, True)])
def test_each_decoder_path_forced_gives_the_same_frames(small_cfg, small_ckpt, small_inputs, plain_outputs, fused,
                                                        channels_last):
    ref = plain_outputs
    got = outputs(small_cfg, small_ckpt, {"fused_decoder": fused, "channels_last": channels_last}, small_inputs)
    assert close(got[0], ref[0])


@pytest.mark.parametrize("pick", ["module", "fused", "fused-channels-last", "fused-winograd"])
def test_auto_runs_the_decoder_path_chosen(small_cfg, small_ckpt, small_inputs, plain_outputs, pick):
    from float_rt.backends import BackendConfig, FastTorchDecoder, torch_decoder
    from float_rt.checkpoint import load_model
    chooser = Pick(pick)
    model, _ = load_model(small_cfg.model, small_ckpt)
    dec = torch_decoder(model.motion, BackendConfig(), torch.device("cpu"), chooser)
    assert chooser.asked == [("decoder", "128px 1 frame", ("module", "fused", "fused-channels-last", "fused-winograd"))]
    assert isinstance(dec, FastTorchDecoder) == (pick != "module")
    if pick != "module":
        assert dec.path == pick and dec.channels_last == (pick != "fused")
    image, motion = small_inputs[:2]
    with torch.no_grad():
        s_r, _, _, feats = model.motion.encode_reference(image)
        assert close(dec(s_r + motion, feats), plain_outputs[0])


@pytest.mark.parametrize("packed", [True, False, "auto-packed", "auto-F.linear"])
def test_each_linear_path_gives_the_same_fmt_and_audio_features(small_cfg, small_ckpt, small_inputs, plain_outputs,
                                                                packed):
    ref = plain_outputs
    chooser = Pick(packed.split("-", 1)[1]) if isinstance(packed, str) else None
    got = outputs(small_cfg, small_ckpt, {"packed_linear": "auto" if chooser else packed}, small_inputs, chooser)
    assert close(got[1], ref[1]) and close(got[2], ref[2])
    if chooser:
        asked = [a for a in chooser.asked if a[0] == "linear"]
        assert asked and all(c == ("packed", "F.linear") for _, _, c in asked)
        assert any(" rows " in shape for _, shape, _ in asked)


def test_packed_linear_auto_follows_the_choice_per_row_count():
    from float_rt.packed import PackedLinear, pack_linears
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 24))
    ref_layer = torch.nn.Linear(16, 24)
    ref_layer.load_state_dict(net[0].state_dict())
    timer = FakeTimer({"packed": 2.0, "F.linear": 1.0})
    chooser = KernelChooser(None, "m", timer)
    pack_linears(net, "auto", chooser)
    assert isinstance(net[0], PackedLinear) and net[0].path == "auto"
    with torch.no_grad():
        for rows in (3, 4, 5, 100):
            x = torch.randn(rows, 16)
            assert torch.equal(net(x), ref_layer(x))                # F.linear, bit for bit
    assert timer.calls == 3                                         # rows 3 and 4 share a bucket (4); 5 -> 8; 100 -> 128
    assert set(chooser.decisions) == {"linear 16x24 rows 4", "linear 16x24 rows 8", "linear 16x24 rows 128"}
    with pytest.raises(ValueError):
        pack_linears(torch.nn.Linear(2, 2), "sometimes")


def test_the_process_chooser_reports_what_it_chose(tmp_path, monkeypatch):
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "k.json"))
    c = kernels.chooser()
    assert c is kernels.chooser() and c.path == tmp_path / "k.json"
    monkeypatch.setattr(c, "timer", FakeTimer({"a": 1.0, "b": 2.0}))
    c.choose("test-op", "shape", ("a", "b"), runners_counting([]))
    assert kernels.chosen_paths()["test-op shape"] == {"choice": "a", "source": "measured",
                                                       "seconds": {"a": 1.0, "b": 2.0}}
    from float_rt.bench import describe_paths
    assert describe_paths({"test-op shape": kernels.chosen_paths()["test-op shape"],
                           "linear 1x1 rows 1": {"choice": "packed", "source": "cache", "seconds": None}}) == [
        "chosen: test-op shape: a (measured: a 1e+03 ms, b 2e+03 ms)",
        "chosen: linear layers: packed for 1 shape (each in the JSON's chosen_paths)"]


# ---------------------------------------------------------------- whole frames side by side
@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_side_by_side_runs_in_order_on_one_thread_each_and_raises_what_a_worker_raised(two_threads):
    import threading

    from float_rt.side_by_side import SideBySide
    pool = SideBySide(2)
    try:
        assert torch.get_num_threads() == 2            # the caller keeps its threads
        seen = pool.map(lambda i: (i, torch.get_num_threads(), torch.is_grad_enabled(),
                                   threading.current_thread().name), range(7))
        assert [s[0] for s in seen] == list(range(7))
        assert all(n == 1 and not grad for _, n, grad, _ in seen)
        assert all(name.startswith("float-rt-side-by-side-") for *_, name in seen)

        def boom(i):
            if i == 3:
                raise ValueError("frame 3")
            return i
        with pytest.raises(ValueError, match="frame 3"):
            pool.map(boom, range(5))
        assert pool.map(lambda i: i * 2, range(3)) == [0, 2, 4]     # still serving after an error
    finally:
        pool.close()
    with pytest.raises(ValueError):
        SideBySide(1)


@pytest.mark.parametrize("pick", ["one-by-one", "side-by-side"])
def test_decoder_frames_side_by_side_chosen_and_the_same_frames(small_cfg, small_ckpt, small_inputs, plain_outputs,
                                                                two_threads, pick):
    from float_rt.backends import BackendConfig, FastTorchDecoder, side_by_side_frames
    from float_rt.checkpoint import load_model
    model, _ = load_model(small_cfg.model, small_ckpt)
    fast = FastTorchDecoder(model.motion.decoder, torch.device("cpu"))
    fast.frame_by_frame = True          # as at 256 px and up
    chooser = Pick(pick)
    fast.side_by_side = side_by_side_frames(fast, model.motion, BackendConfig(), chooser)
    assert chooser.asked == [("decoder frames", "128px 2 frames", ("one-by-one", "side-by-side"))]
    assert (fast.side_by_side is not None) == (pick == "side-by-side")
    image, motion = small_inputs[:2]
    ran = []
    hook = fast.decoder.register_forward_pre_hook(lambda m, a: ran.append(torch.get_num_threads()))
    try:
        with torch.no_grad():
            s_r, _, _, feats = model.motion.encode_reference(image)
            assert close(fast(s_r + motion, feats), plain_outputs[0])
    finally:
        hook.remove()
        if fast.side_by_side is not None:
            fast.side_by_side.close()
    n = motion.shape[0]      # 3 frames: a pair side by side, the third alone on both threads
    assert sorted(ran) == ([1] * (n - n % 2) + [2] * (n % 2) if pick == "side-by-side" else [2] * n)
    # forced by the config: no timing asked for
    forced = Pick()
    assert side_by_side_frames(fast, model.motion, BackendConfig(side_by_side=False), forced) is None
    assert forced.asked == [("decoder frames", "128px 2 frames", ("one-by-one",))]
