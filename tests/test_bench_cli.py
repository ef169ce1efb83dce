"""`float-rt bench` for every family: the figures under the official bench's names (so the two
divide), and with --busy-core the same rows again under `busy` (figures, not asserted speeds)."""
import json

import pytest

from conftest import SMALL
from server.cli import main

# (config, reads --checkpoints, arguments, the official bench's key names the family writes);
# Ditto's bench times the config's sizes on recipe weights of its own.
FAMILIES = {
    "float": (str(SMALL), True, ["--seconds", "0.5", "--decode-frames", "1"],
              ("decode_s_per_frame", "fmt_guided_eval_s")),
    "ditto": ("ditto-tiny", False, [], ("render_s_per_frame", "lmdm_guided_step_s", "warp_s_per_frame",
                                        "decoder_s_per_frame")),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bench_writes_the_official_names_idle_and_busy(family, small_ckpt, tmp_path):
    config, reads_weights, extra, keys = FAMILIES[family]
    out, official = tmp_path / "bench.json", tmp_path / "official.json"
    official.write_text(json.dumps({k: 1.0 for k in keys}))
    weights = ["--checkpoints", str(small_ckpt)] if reads_weights else []
    assert main(["bench", "--config", config, *weights, *extra, "--repeat", "1", "--busy-core",
                 "--official", str(official), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for key in keys:
        assert res[key] > 0 and res["busy"][key] > 0, key
    assert not any(isinstance(v, bool) for v in res["busy"].values())
    if family == "float":      # the kernels chosen by measurement (float_rt/kernels.py), each with its source
        assert any(k.startswith("decoder ") for k in res["chosen_paths"])
        assert all(d["source"] in ("measured", "cache", "forced", "only") for d in res["chosen_paths"].values())
