"""Server start-up for the WebRTC tests."""
import socket
from pathlib import Path

from server.config import ServerConfig
from server.thread import ServerThread

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "configs" / "small.yaml"


def only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def make_server(small_ckpt, **kw) -> ServerThread:
    # Every test client comes from 127.0.0.1: the per-address handshake rate is the limit tests' own.
    kw.setdefault("handshakes_per_minute", 10_000)
    cfg = ServerConfig(port=0, config=str(SMALL), checkpoints=str(small_ckpt), ice_hosts=["127.0.0.1"], **kw)
    return ServerThread(cfg).start()
