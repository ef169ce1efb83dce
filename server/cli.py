"""The ``float-rt`` program: every layer's commands, assembled here at the top of the layers.

``float_rt.cli`` (model), ``streaming.cli``, ``export.cli`` and this module each register
their own subcommands; this module adds the transports (``serve``, ``livekit-worker``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from float_rt import cli as model_cli
from float_rt.errors import FloatRTError


def cmd_serve(a) -> None:
    from .config import load_server_config
    from .listen import listening_socket
    from .startup import refuse_early
    try:
        cfg = load_server_config(a.server_config, host=a.host, port=a.port, config=a.config,
                                 checkpoints=a.checkpoints, stream_config=a.stream_config, device=a.device,
                                 max_sessions=a.max_sessions, token=a.token or None, token_file=a.token_file,
                                 insecure_no_token=a.insecure_no_token or None,
                                 allowed_origins=a.allowed_origin or None, trusted_proxies=a.trusted_proxy or None,
                                 allowed_hosts=a.allowed_host or None,
                                 certfile=a.certfile, keyfile=a.keyfile,
                                 max_connections_per_ip=a.max_connections_per_ip,
                                 max_sessions_per_ip=a.max_sessions_per_ip,
                                 handshakes_per_minute=a.handshakes_per_minute, ice_hosts=a.ice_host or None,
                                 video_codec=a.video_codec, video_bitrate=a.video_bitrate, demo=a.demo or None,
                                 also=a.also or None,
                                 workers=a.workers, threads=a.threads, cpu_reserve=a.cpu_reserve)
    except (OSError, ValueError) as exc:
        raise FloatRTError(str(exc)) from exc
    logging.getLogger("float_rt.sessions").setLevel(logging.INFO)    # one line per session start and end
    # Every refusal comes first, in a moment: exposure, TLS, the weights' folder, the port.
    refuse_early(cfg)
    sock = listening_socket(cfg.host, cfg.port)
    if cfg.workers > 1:
        from .workers import run_workers
        run_workers(cfg, sock)
        return
    from .app import run
    from .startup import engine_threads
    engine_threads(cfg)
    run(cfg, sock)


def cmd_livekit_worker(a) -> None:
    try:
        from .livekit.worker import require_env, run_worker
    except ImportError as exc:
        raise FloatRTError(f"livekit-worker needs the livekit extra: pip install 'float-rt[livekit]' ({exc})") from None
    from float_rt.media import preset_images
    from streaming.engine import Engine

    from .config import packaged_page
    require_env()      # before the model loads: say at once what is missing
    if a.max_sessions < 1:
        raise FloatRTError("--max-sessions must be >= 1")
    presets = preset_images([packaged_page() / "avatars", *map(Path, a.avatars or [])])
    from .config import ServerConfig
    from .startup import engine_threads
    engine_threads(ServerConfig(device=a.device))     # the serve defaults: cores less the media reserve
    engine = Engine.load(a.checkpoints, a.config, a.stream_config, a.device)
    run_worker(engine, a.max_sessions, presets, a.agent_name)


def add_commands(sub) -> None:
    sv = sub.add_parser("serve", help="WebRTC avatar server with the demo page (http://127.0.0.1:8080/)")
    sv.add_argument("--demo", action="store_true",
                    help="serve the small config on recipe weights written to a cache folder (no download)")
    model_cli.add_checkpoints_arg(sv)
    sv.add_argument("--config", default=None, help="model config (default float-512): " + model_cli.CONFIG_HELP)
    sv.add_argument("--also", action="append", metavar="CONFIG[=DIR]",
                    help="serve another model too, on an engine of its own (e.g. --also ditto=DIR; with --demo "
                         "its family's demo weights); clients choose it by name in their offer")
    sv.add_argument("--stream-config", default=None, help="streaming config (default: the packaged stream)")
    sv.add_argument("--server-config", default="server", help="server config (default: the packaged server)")
    sv.add_argument("--host", default=None, help="default 127.0.0.1; any other address needs a token")
    sv.add_argument("--port", type=int, default=None, help="default 8080 (0: any free port)")
    sv.add_argument("--device", default=None)
    sv.add_argument("--max-sessions", type=int, default=None, help="in all (split between the workers)")
    sv.add_argument("--workers", type=int, default=None,
                    help="server processes sharing the port, each with its own engine and a share of the "
                         "sessions (default 1; one process carries the media of about 15 sessions)")
    sv.add_argument("--threads", type=int, default=None,
                    help="CPU: torch threads per engine (default: the cores this process may use, less "
                         "--cpu-reserve, split between the workers)")
    sv.add_argument("--cpu-reserve", type=float, default=None,
                    help="CPU: cores left to the media threads and the event loop (default 0.5)")
    sv.add_argument("--token", default=None, help="clients must present this token (visible in `ps`: "
                                                  "prefer --token-file or FLOAT_RT_TOKEN)")
    sv.add_argument("--token-file", default=None, help="read the token from this file")
    sv.add_argument("--insecure-no-token", action="store_true",
                    help="serve a non-loopback address with no token (anyone who reaches it can use it)")
    sv.add_argument("--allowed-origin", action="append", default=None,
                    help="a page origin allowed besides the server's own, e.g. https://kiosk.example.com "
                         "(repeatable; '*': any, not recommended)")
    sv.add_argument("--allowed-host", action="append", default=None,
                    help="a Host name this loopback server answers to besides 127.0.0.1, localhost and [::1] "
                         "(repeatable; guards against DNS rebinding)")
    sv.add_argument("--trusted-proxy", action="append", default=None,
                    help="reverse proxy address or CIDR whose X-Forwarded-For/-Host/-Proto are believed (repeatable)")
    sv.add_argument("--certfile", default=None, help="TLS certificate (PEM): https and wss on the same port")
    sv.add_argument("--keyfile", default=None, help="TLS private key (PEM)")
    sv.add_argument("--max-connections-per-ip", type=int, default=None)
    sv.add_argument("--max-sessions-per-ip", type=int, default=None)
    sv.add_argument("--handshakes-per-minute", type=int, default=None, help="per client address")
    sv.add_argument("--ice-host", action="append", default=None,
                    help="ICE host candidate address to offer (repeatable; default: the machine's addresses, "
                         "plus 127.0.0.1 when listening on loopback)")
    sv.add_argument("--video-codec", choices=["vp8", "h264"], default=None)
    sv.add_argument("--video-bitrate", type=int, default=None)
    sv.set_defaults(func=cmd_serve)

    lw = sub.add_parser("livekit-worker", help="LiveKit Agents avatar worker: one engine on one device "
                                               "(needs float-rt[livekit] and LIVEKIT_URL/API_KEY/API_SECRET)")
    model_cli.add_checkpoints_arg(lw)
    lw.add_argument("--config", default="float-512", help="model config: " + model_cli.CONFIG_HELP)
    lw.add_argument("--stream-config", default="stream")
    lw.add_argument("--device", default=None, help="cpu, cuda or cuda:N: one worker per GPU")
    lw.add_argument("--max-sessions", type=int, default=4, help="avatars this worker takes before it reports full")
    lw.add_argument("--agent-name", default="float-rt-avatar", help="the name agents dispatch avatar jobs to")
    lw.add_argument("--avatars", action="append", default=None, help="folder of preset portraits (repeatable)")
    lw.set_defaults(func=cmd_livekit_worker)


def build_parser() -> argparse.ArgumentParser:
    from export import cli as export_cli
    from streaming import cli as streaming_cli
    p = argparse.ArgumentParser(prog="float-rt", description="FLOAT-RT: audio-driven talking avatars")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    for layer in (model_cli, streaming_cli, export_cli, sys.modules[__name__]):
        layer.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    return model_cli.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
