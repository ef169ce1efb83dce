"""What the benchmark scripts share: a private network namespace, and the weights and portrait they measure with."""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def isolate() -> int | None:
    """Run this command again inside a private network namespace with only `lo` (so every packet
    stays on 127.0.0.1) and return its exit code; None when it already runs in one."""
    if only_loopback():
        return None
    if os.environ.get("FLOAT_RT_NETNS") == "1":
        raise SystemExit("could not enter a private network namespace")
    inner = "ip link set lo up && exec " + " ".join([sys.executable, *map(str, sys.argv)])
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    return subprocess.call(["unshare", "--net", *user, "--", "sh", "-c", inner],
                           env=dict(os.environ, FLOAT_RT_NETNS="1"))


def checkpoints_or_recipe(checkpoints: str | None, config: str) -> Path:
    """``checkpoints``, else recipe weights of ``config`` written to a temporary folder."""
    if checkpoints is not None:
        return Path(checkpoints)
    from float_rt.config import load_config
    from float_rt.family import family_of
    from float_rt.resources import config_path
    cfg = load_config(config_path(config))
    folder = Path(tempfile.mkdtemp(prefix="float-rt-bench-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)   # loaded once at start, gone at exit
    family_of(cfg).write_demo_weights(cfg, folder)     # either family's recipe weights
    return folder


def bench_engine(checkpoints: str | None, config: str = "small"):
    """A CPU engine on ``checkpoints`` (default: recipe weights) and the packaged portrait prepared for it."""
    from float_rt.media import load_image
    from server.config import packaged_page
    from streaming.engine import Engine
    engine = Engine.load(checkpoints_or_recipe(checkpoints, config), config, "stream", "cpu")
    image = engine.prepare(load_image(packaged_page() / "avatars" / "astronaut.jpg"))
    return engine, image
