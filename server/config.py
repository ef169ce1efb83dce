"""Server options (``configs/server.yaml``; command-line flags override them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from float_rt.config import build_dataclass
from float_rt.resources import config_path


def packaged_page() -> Path:
    """The demo page shipped as package data (the repository's ``client_demo/``, installed as ``server.page``)."""
    return Path(str(resources.files("server.page")))


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    config: str = "float-512"                  # model config: a packaged name or a YAML path
    # More models, each on an engine of its own (one family per engine): "CONFIG" or "CONFIG=CHECKPOINTS";
    # a client picks one by name in its offer ("model"), the first (``config``) by default.
    also: list = field(default_factory=list)
    stream_config: str = "stream"
    checkpoints: str | None = None
    device: str | None = None
    max_sessions: int = 4
    # Who may connect (server/policy.py).  A non-loopback host needs a token unless insecure_no_token.
    token: str | None = None                   # clients must present it (?token=... or Bearer header)
    token_file: str | None = None              # or read it from a file (FLOAT_RT_TOKEN also works)
    insecure_no_token: bool = False            # serve a non-loopback address without a token (warned)
    allowed_origins: list[str] = field(default_factory=list)   # browser origins besides the server's own; "*": any
    trusted_proxies: list[str] = field(default_factory=list)   # proxies (IPs/CIDRs) whose X-Forwarded-For is believed
    max_connections_per_ip: int = 8            # open websockets per client address (HTTP 429 beyond)
    max_sessions_per_ip: int = 2               # avatar sessions per client address (`busy` beyond)
    handshakes_per_minute: int = 60            # websocket handshakes per client address (HTTP 429 beyond)
    session_wait_s: float = 60.0               # a websocket that holds no session is closed after this
    certfile: str | None = None                # TLS: https and wss on the same port
    keyfile: str | None = None
    ice_hosts: list[str] = field(default_factory=list)         # host candidates to offer (e.g. 127.0.0.1)
    # STUN/TURN servers, none by default: "stun:host:port", or {urls, username, credential} for TURN.
    ice_servers: list = field(default_factory=list)
    workers: int = 1                           # server processes sharing the port (server/workers.py)
    # The engines' torch threads on CPU (float_rt/cpu.py): the cores this process may use (affinity,
    # cgroup quota) minus cpu_reserve, split between the workers, rounded up; threads > 0 sets them.
    cpu_reserve: float = 0.5                   # cores left to the media threads and the event loop
    threads: int = 0                           # explicit intra-op threads per engine (0: chosen as above)
    video_codec: str = "vp8"                   # vp8 | h264
    video_bitrate: int = 1_500_000
    video_size: int = 512
    video_delay_ms: float = 30.0               # lip-sync compensation (measured: tests/netns/test_e2e.py)
    connect_timeout_s: float = 20.0            # offer -> ICE connected
    idle_timeout_s: float = 300.0              # close a session with no client message or audio this long (0: never)
    # What one client may cost (server/budget.py, server/upload.py, server/policy.py): see PROTOCOL.md.
    max_messages_per_s: float = 100.0          # websocket messages (text and binary), bursts of 2 s pass
    max_bytes_per_s: float = 2_000_000.0       # websocket bytes
    max_queued_audio_s: float = 60.0           # speech a client may queue ahead of the avatar (a TTS reply)
    nfe_range: list[int] = field(default_factory=lambda: [2, 10])          # the sampler points a client may ask for
    chunk_frames_range: list[int] = field(default_factory=lambda: [3, 25])  # frames per step a client may ask for
    max_image_pixels: int = 24_000_000         # avatar uploads: header checked before decoding (PNG/JPEG/WebP)
    image_decodes: int = 2                     # uploads decoded at once
    allowed_hosts: list[str] = field(default_factory=list)     # Host names besides loopback (DNS rebinding)
    static_dir: str | None = None              # the page's folder (default: the packaged client_demo)
    demo: bool = False

    def __post_init__(self):
        if self.video_codec.lower() not in ("vp8", "h264"):
            raise ValueError(f"video_codec must be vp8 or h264, got {self.video_codec!r}")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        if not 1 <= self.workers <= self.max_sessions:
            raise ValueError(f"workers must be 1..max_sessions ({self.max_sessions}), got {self.workers}")
        if self.cpu_reserve < 0 or self.threads < 0:
            raise ValueError(f"cpu_reserve and threads must be >= 0, got {self.cpu_reserve}, {self.threads}")
        if self.video_size < 16 or self.video_size % 2:
            raise ValueError(f"video_size must be an even number >= 16 (I420), got {self.video_size}")
        for name in ("max_connections_per_ip", "max_sessions_per_ip", "handshakes_per_minute"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("nfe_range", "chunk_frames_range"):
            r = getattr(self, name)
            if len(r) != 2 or not 1 <= r[0] <= r[1]:
                raise ValueError(f"{name} must be [low, high] with 1 <= low <= high, got {r}")
        if self.max_messages_per_s <= 0 or self.max_bytes_per_s <= 0 or self.max_image_pixels < 1 \
                or self.image_decodes < 1:
            raise ValueError("max_messages_per_s, max_bytes_per_s, max_image_pixels and image_decodes must be > 0")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("TLS needs both certfile and keyfile")


def load_server_config(path: str | Path | None = "server", **overrides) -> ServerConfig:
    """``configs/server.yaml`` (or another file) with overrides; ``path=None``: the dataclass defaults."""
    data = {}
    if path is not None:
        data = (yaml.safe_load(config_path(path).read_text()) or {}).get("server", {})
    return build_dataclass(ServerConfig, data, "server", **overrides)
