"""The ``float-rt`` program: every layer's commands, assembled here at the top of the layers.

``float_rt.cli`` (model), ``streaming.cli``, ``export.cli`` and this module each register
their own subcommands; this module adds the transports (``serve``, ``livekit-worker``).
"""
from __future__ import annotations

import argparse
import sys

from float_rt import cli as model_cli
from float_rt.errors import FloatRTError


def cmd_serve(a) -> None:
    from .app import run
    from .config import load_server_config
    try:
        cfg = load_server_config(a.server_config, host=a.host, port=a.port, config=a.config,
                                 checkpoints=a.checkpoints, stream_config=a.stream_config, device=a.device,
                                 max_sessions=a.max_sessions, token=a.token or None,
                                 allowed_origins=a.allowed_origin or None, ice_hosts=a.ice_host or None,
                                 video_codec=a.video_codec, video_bitrate=a.video_bitrate, demo=a.demo or None)
    except (OSError, ValueError) as exc:
        raise FloatRTError(str(exc)) from exc
    run(cfg)


def add_commands(sub) -> None:
    sv = sub.add_parser("serve", help="WebRTC avatar server with the demo page (http://127.0.0.1:8080/)")
    sv.add_argument("--demo", action="store_true",
                    help="serve the small config on recipe weights written to a cache folder (no download)")
    model_cli.add_checkpoints_arg(sv)
    sv.add_argument("--config", default=None, help="model config (default float-512): " + model_cli.CONFIG_HELP)
    sv.add_argument("--stream-config", default=None, help="streaming config (default: the packaged stream)")
    sv.add_argument("--server-config", default="server", help="server config (default: the packaged server)")
    sv.add_argument("--host", default=None, help="default 127.0.0.1")
    sv.add_argument("--port", type=int, default=None, help="default 8080 (0: any free port)")
    sv.add_argument("--device", default=None)
    sv.add_argument("--max-sessions", type=int, default=None)
    sv.add_argument("--token", default=None, help="clients must present this token")
    sv.add_argument("--allowed-origin", action="append", default=None, help="allowed page origin (repeatable)")
    sv.add_argument("--ice-host", action="append", default=None,
                    help="ICE host candidate address to offer (repeatable; default: the machine's addresses, "
                         "plus 127.0.0.1 when listening on loopback)")
    sv.add_argument("--video-codec", choices=["vp8", "h264"], default=None)
    sv.add_argument("--video-bitrate", type=int, default=None)
    sv.set_defaults(func=cmd_serve)


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
