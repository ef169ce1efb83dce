"""Server start-up for the WebRTC tests."""
import asyncio
import atexit
import shutil
import socket
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import yaml

from unhurried import unhurried_stream_config
from server.config import ServerConfig
from server.thread import ServerThread

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "configs" / "small.yaml"
HANG_S = 300.0     # a guard against a hang, never a speed limit: a busy machine only takes longer


def only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@lru_cache(maxsize=1)
def unhurried_stream_yaml() -> str:
    """The packaged stream config with the tests' unhurried bounds (tests/unhurried.py), as a file."""
    import dataclasses
    folder = Path(tempfile.mkdtemp(prefix="float-rt-stream-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "stream.yaml"
    path.write_text(yaml.safe_dump({"streaming": dataclasses.asdict(unhurried_stream_config())}))
    return str(path)


def make_server(small_ckpt, **kw) -> ServerThread:
    # Every test client comes from 127.0.0.1: the per-address handshake rate is the limit tests' own.
    kw.setdefault("handshakes_per_minute", 10_000)
    kw.setdefault("stream_config", unhurried_stream_yaml())
    cfg = ServerConfig(port=0, config=str(SMALL), checkpoints=str(small_ckpt), ice_hosts=["127.0.0.1"], **kw)
    return ServerThread(cfg).start()


async def eventually(condition, timeout: float = HANG_S, poll: float = 0.05) -> None:
    """Waits for ``condition()``: an event, however long a busy machine takes; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        await asyncio.sleep(poll)
