"""Runs the WebRTC suite (tests/netns) inside a private network namespace with only `lo` up.

aiortc and Chromium would otherwise gather candidates on every interface; in the
namespace nothing can leave 127.0.0.1.  Needs root or unprivileged user namespaces.
"""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


def netns_command(args: list[str]) -> list[str]:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("the WebRTC tests need `unshare` (util-linux) and `ip` (iproute2)")
    inner = "ip link set lo up && exec " + " ".join(args)
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", "--net", *user, "--", "sh", "-c", inner]


def test_webrtc_suite_in_a_private_network_namespace():
    if os.environ.get("FLOAT_RT_NETNS") == "1":
        pytest.skip("already inside the namespace")
    env = dict(os.environ, FLOAT_RT_NETNS="1")
    cmd = netns_command([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/netns"])
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    tail = (r.stdout[-12000:] + "\n" + r.stderr[-4000:])
    print(tail)
    assert r.returncode == 0, tail
