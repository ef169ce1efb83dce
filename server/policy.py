"""Who may connect: the origin policy, the client's address behind proxies, and per-address limits.

Pure logic (no networking), used by the server's handshake and session code.
"""
from __future__ import annotations

import collections
import ipaddress
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalise_origin(value: str) -> str | None:
    """``scheme://host[:port]`` with the scheme's default port left out; None if not an origin."""
    try:
        u = urlsplit(value.strip())
        port = u.port
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname:
        return None
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return f"{u.scheme}://{host}" + (f":{port}" if port and port != DEFAULT_PORTS[u.scheme] else "")


@dataclass
class OriginPolicy:
    """Browsers send ``Origin``; by default only the page this server serves may use it.

    ``allowed``: further origins (``scheme://host[:port]``), or ``*`` for any.  Clients that send
    no ``Origin`` are native clients (the Python client, the LiveKit and Pipecat bridges) and are
    not subject to it: cross-site WebSocket hijacking needs a browser, and browsers always send it.
    """
    allowed: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.any = "*" in self.allowed
        bad = [o for o in self.allowed if o != "*" and normalise_origin(o) is None]
        if bad:
            raise ValueError(f"allowed origin(s) must look like https://host[:port]: {', '.join(bad)}")
        self.origins = {normalise_origin(o) for o in self.allowed if o != "*"}

    def refuse(self, origin: str | None, host: str | None, scheme: str) -> str | None:
        """The reason to refuse this handshake, or None to accept it."""
        if origin is None or self.any:
            return None
        given = normalise_origin(origin)
        if given is None:
            return f"Origin {origin!r} is not a web origin"
        if given in self.origins:
            return None
        own = normalise_origin(f"{scheme}://{host}") if host else None
        if given == own:
            return None
        return (f"Origin {given} may not use this server (it serves {own or 'an unknown host'}); "
                "the operator can allow it with --allowed-origin")


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(host: str | None) -> str | None:
    """The name in a ``Host`` header (port and IPv6 brackets removed, lower case); None if malformed."""
    if not host:
        return None
    try:
        name = urlsplit(f"http://{host.strip()}").hostname
    except ValueError:
        return None
    return name.lower().rstrip(".") if name else None


def is_loopback(host: str) -> bool:
    """A name or address that only ever means this machine: a loopback address, ``localhost``, or
    a name under ``.localhost`` (RFC 6761)."""
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class HostPolicy:
    """DNS rebinding: a page on ``evil.example`` whose name is made to resolve to 127.0.0.1 reaches a
    loopback server with ``Host: evil.example`` (and a matching ``Origin``, so the origin check
    passes).  A loopback server therefore answers only to loopback names, and to names the
    operator listed (``--allowed-host``, or the hosts of ``--allowed-origin``).  Servers bound to
    other addresses are protected by their token instead."""
    loopback: bool
    allowed: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.names = {n for n in (host_name(h) for h in self.allowed) if n}

    def refuse(self, host: str | None) -> str | None:
        if not self.loopback:
            return None
        name = host_name(host)
        if name is not None and (is_loopback(name) or name in self.names):
            return None
        return (f"Host {host!r} is not a name of this loopback server (DNS rebinding?); "
                "the operator can allow it with --allowed-host")


def option_limit(name: str, value: int | None, allowed: list[int]) -> str | None:
    """Why ``value`` of a client's option is beyond the server's policy, or None."""
    if value is None or allowed[0] <= value <= allowed[1]:
        return None
    return (f"{name} {value} is beyond this server's limit: allowed {allowed[0]}..{allowed[1]} "
            f"({name}_range in the server config)")


def is_trusted(addr: str, proxies: list[str]) -> bool:
    """Whether ``addr`` is one of the proxies (IPs or CIDRs) whose forwarding headers are believed."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(p, strict=False) for p in proxies)


def client_address(peer: str, forwarded_for: str | None, trusted_proxies: list[str]) -> str:
    """The client's address: the peer, or behind trusted proxies the last untrusted X-Forwarded-For hop."""
    if not forwarded_for or not is_trusted(peer, trusted_proxies):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not is_trusted(hop, trusted_proxies):
            return hop
    return peer


@dataclass
class Limits:
    max_connections: int = 8          # open websockets per address
    max_sessions: int = 2             # avatar sessions per address
    handshakes_per_minute: int = 60   # websocket handshakes per address


class AddressLimits:
    """Counts per client address, so that one address cannot lock everyone else out."""

    def __init__(self, limits: Limits, clock=time.monotonic):
        self.limits, self.clock = limits, clock
        self.connections: collections.Counter = collections.Counter()
        self.sessions: collections.Counter = collections.Counter()
        self._handshakes: dict[str, collections.deque] = {}

    def refuse_rate(self, ip: str) -> str | None:
        """Count a handshake attempt (any: refused ones too); the reason to refuse it (HTTP 429), or None."""
        now = self.clock()
        seen = self._handshakes.setdefault(ip, collections.deque())
        while seen and now - seen[0] >= 60.0:
            seen.popleft()
        if len(seen) >= self.limits.handshakes_per_minute:
            return (f"too many connection attempts from {ip}: the limit is {self.limits.handshakes_per_minute} "
                    "per minute (handshakes_per_minute)")
        seen.append(now)
        if len(self._handshakes) > 100_000:          # bound the memory an address scan can take
            self._handshakes = {k: v for k, v in self._handshakes.items() if v and now - v[-1] < 60.0}
        return None

    def refuse_connection(self, ip: str) -> str | None:
        """Reserve an open connection for ``ip``; the reason to refuse it (HTTP 429), or None."""
        if self.connections[ip] >= self.limits.max_connections:
            return (f"{ip} already has {self.connections[ip]} open connections: the limit is "
                    f"{self.limits.max_connections} (max_connections_per_ip)")
        self.connections[ip] += 1
        return None

    def closed(self, ip: str) -> None:
        self._drop(self.connections, ip)

    def refuse_session(self, ip: str) -> str | None:
        if self.sessions[ip] >= self.limits.max_sessions:
            return (f"{ip} already has {self.sessions[ip]} sessions: the limit is {self.limits.max_sessions} "
                    "(max_sessions_per_ip)")
        self.sessions[ip] += 1
        return None

    def session_ended(self, ip: str) -> None:
        self._drop(self.sessions, ip)

    @staticmethod
    def _drop(counter: collections.Counter, ip: str) -> None:
        counter[ip] -= 1
        if counter[ip] <= 0:
            del counter[ip]
