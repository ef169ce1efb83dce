"""Server options (``configs/server.yaml``; command-line flags override them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from float_rt.config import build_dataclass
from float_rt.resources import config_path


def packaged_page() -> Path:
    """The demo page shipped as package data (``client_demo``: page, script, avatars)."""
    return Path(str(resources.files("client_demo")))


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    config: str = "float-512"                  # model config: a packaged name or a YAML path
    stream_config: str = "stream"
    checkpoints: str | None = None
    device: str | None = None
    max_sessions: int = 4
    token: str | None = None                   # clients must present it (?token=... or Bearer header)
    allowed_origins: list[str] = field(default_factory=list)   # empty: any origin
    ice_hosts: list[str] = field(default_factory=list)         # host candidates to offer (e.g. 127.0.0.1)
    ice_servers: list[str] = field(default_factory=list)       # STUN/TURN urls; none by default
    video_codec: str = "vp8"                   # vp8 | h264
    video_bitrate: int = 1_500_000
    video_size: int = 512
    video_delay_ms: float = 30.0               # lip-sync compensation (measured: tests/netns/test_e2e.py)
    connect_timeout_s: float = 20.0            # offer -> ICE connected
    idle_timeout_s: float = 0.0                # close sessions without client messages or media (0: never)
    static_dir: str | None = None              # the page's folder (default: the packaged client_demo)
    demo: bool = False

    def __post_init__(self):
        if self.video_codec.lower() not in ("vp8", "h264"):
            raise ValueError(f"video_codec must be vp8 or h264, got {self.video_codec!r}")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")


def load_server_config(path: str | Path | None = "server", **overrides) -> ServerConfig:
    """``configs/server.yaml`` (or another file) with overrides; ``path=None``: the dataclass defaults."""
    data = {}
    if path is not None:
        data = (yaml.safe_load(config_path(path).read_text()) or {}).get("server", {})
    return build_dataclass(ServerConfig, data, "server", **overrides)
