"""WebRTC tests: run only inside a private network namespace with nothing but `lo`.

tests/test_webrtc.py starts them with `unshare --net`; see there.
"""
import importlib.util
import os

import pytest
from helpers import ROOT, make_server, only_loopback

if os.environ.get("FLOAT_RT_NETNS") != "1":
    pytest.exit("tests/netns must run inside the network namespace (python -m pytest tests/test_webrtc.py)", 2)


@pytest.fixture(scope="session")
def server(small_ckpt):
    assert only_loopback(), "not in a private network namespace"
    s = make_server(small_ckpt, max_sessions=2)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client_mod():
    spec = importlib.util.spec_from_file_location("mic_client", ROOT / "client_demo" / "mic_client.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
