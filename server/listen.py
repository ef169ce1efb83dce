"""The listening socket, opened before any model loads, so that a busy port is one line at once."""
from __future__ import annotations

import errno
import socket

from float_rt.errors import FloatRTError


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket on ``host:port`` (inheritable, for ``--workers``)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=512)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise FloatRTError(f"port {port} on {host} is already in use: stop what holds it, "
                               f"or choose another with --port") from None
        if exc.errno == errno.EACCES:
            raise FloatRTError(f"no permission to listen on {host}:{port} (ports below 1024 need root): "
                               f"choose another with --port") from None
        raise FloatRTError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock

