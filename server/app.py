"""`float-rt serve`: one port for the demo page (HTTP GET), /healthz, /metrics and the /ws signalling.

One `Engine` (models loaded once, its own worker thread) serves every connection.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import http
import json
import logging
import mimetypes
import os
import signal
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from float_rt.errors import FloatRTError
from float_rt.media import load_image, preset_images
from streaming.engine import Engine
from streaming.options import SessionOptions

from . import protocol
from .config import ServerConfig, packaged_page
from .connection import Connection
from .ice import configure_host_candidates
from .listen import listening_socket
from .metrics import Metrics
from .policy import AddressLimits, HostPolicy, Limits, OriginPolicy, client_address, is_loopback, is_trusted
from .startup import also_models, banner, certificate_names, check_exposure, is_recipe, prepare, tls_context
from .upload import decode_upload

log = logging.getLogger(__name__)

class AvatarServer:
    def __init__(self, cfg: ServerConfig, engine: Engine, *more: Engine):
        # One engine per model (one family each); a client picks one by name, the first by default.
        self.cfg, self.engine = cfg, engine
        self.engines = {e.name: e for e in (engine, *more)}
        self.metrics = Metrics()
        self.connections: set[Connection] = set()
        self.active = 0
        self.static = Path(cfg.static_dir or packaged_page()).resolve()
        try:
            self.origins = OriginPolicy(list(cfg.allowed_origins))
        except ValueError as exc:
            raise FloatRTError(str(exc)) from exc
        if self.origins.any:
            log.warning("--allowed-origin '*': ANY web page the user visits can drive this server "
                        "(cross-site WebSocket hijacking); list the origins that need it instead")
        self.limits = AddressLimits(Limits(cfg.max_connections_per_ip, cfg.max_sessions_per_ip,
                                           cfg.handshakes_per_minute))
        self.ssl = tls_context(cfg)
        # Names this server answers to (DNS rebinding): loopback ones, listed ones, the allowed
        # origins', and those its TLS certificate is for.
        self.hosts = HostPolicy(is_loopback(cfg.host),
                                [*cfg.allowed_hosts, *(urlsplit(o).netloc for o in cfg.allowed_origins if o != "*"),
                                 *certificate_names(cfg.certfile)])
        self._decodes = asyncio.Semaphore(cfg.image_decodes)
        self._bad_log = BadRequestLog()
        self._client_ips: dict[ServerConnection, str] = {}
        self.peers = None       # a --workers server: this worker's view of the others (server/workers.py)

    @classmethod
    def create(cls, cfg: ServerConfig) -> "AvatarServer":
        prepare(cfg)
        engines = [Engine.load(c.checkpoints, c.config, c.stream_config, c.device) for c in (cfg, *also_models(cfg))]
        return cls.with_engine(cfg, *engines)

    @classmethod
    def with_engine(cls, cfg: ServerConfig, engine: Engine, *more: Engine) -> "AvatarServer":
        """A server on an engine built elsewhere; sets the process-wide media options (bitrate, ICE hosts)."""
        check_exposure(cfg)
        _set_video_bitrate(cfg.video_bitrate)
        extra = configure_host_candidates(cfg.host, cfg.ice_hosts)
        if extra and not cfg.ice_hosts:
            log.info("loopback listener: also offering ICE host candidates %s", ", ".join(extra))
        return cls(cfg, engine, *more)

    def engine_named(self, name: str | None) -> Engine:
        """The engine of the model an offer names (None: the first)."""
        if name is None:
            return self.engine
        if name not in self.engines:
            raise protocol.ProtocolError("bad_option", f"unknown model {name!r}; this server has: "
                                                       f"{', '.join(self.engines)}")
        return self.engines[name]

    def start_engines(self) -> None:
        for e in self.engines.values():
            e.start()

    def stop_engines(self) -> None:
        for e in self.engines.values():
            e.stop()

    # ------------------------------------------------------------------ sessions
    def acquire(self) -> bool:
        if self.active >= self.cfg.max_sessions:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)

    @property
    def demo_weights(self) -> bool:
        return is_recipe(self.cfg)

    def presets(self) -> list[str]:
        return sorted(preset_images([self.static / "avatars"]))

    def preset(self, name: str | None) -> np.ndarray:
        files = preset_images([self.static / "avatars"])
        if not files:
            raise protocol.ProtocolError("bad_image", "no avatar image given and no presets installed")
        name = name or min(files)
        if name not in files:
            raise protocol.ProtocolError("bad_preset", f"unknown preset {name!r}; available: {', '.join(sorted(files))}")
        return load_image(files[name])

    async def decode_upload(self, data: bytes) -> np.ndarray:
        """An avatar upload: header checked at once, then decoded, ``image_decodes`` at a time."""
        async with self._decodes:
            return await asyncio.to_thread(decode_upload, data, self.cfg.max_image_pixels)

    def hello(self) -> dict:
        models = [_describe(e) for e in self.engines.values()]
        return {"type": "hello", **models[0], "models": models, "video_size": self.cfg.video_size,
                "demo_weights": self.demo_weights, "presets": self.presets(),
                "max_sessions": self.status()["max_sessions"],
                **({"worker": self.peers.index} if self.peers is not None else {})}

    def own_status(self) -> dict:
        """This process's load (a --workers server shares it with the others)."""
        return {"pid": os.getpid(), "sessions": self.active, "max_sessions": self.cfg.max_sessions,
                "connections": len(self.connections)}

    def status(self) -> dict:
        """Sessions and capacity of the whole server: every worker's when there are several."""
        if self.peers is None:
            return {"sessions": self.active, "max_sessions": self.cfg.max_sessions}
        workers = self.peers.statuses()
        return {"sessions": sum(w["sessions"] for w in workers),
                "max_sessions": sum(w["max_sessions"] for w in workers), "workers": workers}

    def recent_latencies_ms(self) -> list[float]:
        return [x * 1e3 for c in list(self.connections) if c.session is not None
                for x in list(c.session.stats.latencies)[-100:]]

    def metrics_text(self) -> str:
        if self.peers is None:
            metrics, lat = self.metrics, self.recent_latencies_ms()
        else:
            metrics, lat = self.peers.metrics()
        st = self.status()
        return metrics.render(st["sessions"], st["max_sessions"], lat)

    # ------------------------------------------------------------------ HTTP
    def _authorised(self, request: Request) -> bool:
        if not self.cfg.token:
            return True
        query = parse_qs(urlsplit(request.path).query)
        given = (query.get("token") or [""])[0]
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:]
        return hmac.compare_digest(given.encode(), self.cfg.token.encode())

    @property
    def scheme(self) -> str:
        return "https" if self.ssl is not None else "http"

    def _peer(self, conn: ServerConnection, request: Request) -> tuple[str, str | None, str, bool]:
        """(client address, Host, scheme) as the client used them, through trusted proxies, and
        whether the request came through one."""
        peer = conn.remote_address[0] if conn.remote_address else "?"
        h, proxies = request.headers, self.cfg.trusted_proxies
        if is_trusted(peer, proxies):
            # The page's own origin is the one the proxy was asked for.
            return (client_address(peer, h.get("X-Forwarded-For"), proxies),
                    h.get("X-Forwarded-Host") or h.get("Host"), h.get("X-Forwarded-Proto") or self.scheme, True)
        return peer, h.get("Host"), self.scheme, False

    def _refuse(self, status: http.HTTPStatus, reason: str, why: str) -> Response:
        self.metrics.refused[reason] += 1
        return _response(status, (why + "\n").encode(), "text/plain")

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        try:
            return self._route(conn, request)
        except Exception as exc:  # noqa: BLE001 - a request we cannot make sense of is the client's problem
            self.metrics.bad_requests += 1
            self._bad_log.note(f"{type(exc).__name__}: {exc}", request.path)
            return _response(http.HTTPStatus.BAD_REQUEST, b"bad request\n", "text/plain")

    def _route(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        ip, host, scheme, proxied = self._peer(conn, request)
        if not proxied:             # a trusted proxy's requests follow its rules (X-Forwarded-Host)
            why = self.hosts.refuse(host)
            if why:
                return self._refuse(http.HTTPStatus.FORBIDDEN, "host", why)
        if path == "/ws":
            why = self.limits.refuse_rate(ip)
            if why:
                return self._refuse(http.HTTPStatus.TOO_MANY_REQUESTS, "rate", why)
            why = self.origins.refuse(request.headers.get("Origin"), host, scheme)
            if why:
                return self._refuse(http.HTTPStatus.FORBIDDEN, "origin", why)
            if not self._authorised(request):
                return self._refuse(http.HTTPStatus.UNAUTHORIZED, "token", "missing or wrong token")
            why = self.limits.refuse_connection(ip)
            if why:
                return self._refuse(http.HTTPStatus.TOO_MANY_REQUESTS, "connections_per_ip", why)
            self._client_ips[conn] = ip
            asyncio.ensure_future(self._count_until_closed(conn, ip))
            return None  # go on with the websocket handshake
        if path == "/healthz":
            st = self.status()
            if is_loopback(self.cfg.host) or (self.cfg.token and self._authorised(request)):
                body = {"status": "ok", **st, "model": self.engine.name, "models": list(self.engines),
                        "demo_weights": self.demo_weights}
            else:       # reachable from other machines: no process ids or per-worker load to strangers
                body = {"status": "ok", "sessions": st["sessions"], "max_sessions": st["max_sessions"]}
            return _response(http.HTTPStatus.OK, json.dumps(body).encode(), "application/json")
        if path == "/metrics":
            if not self._authorised(request):
                # Wrong guesses are limited and counted as the websocket's are.
                why = self.limits.refuse_rate(ip)
                if why:
                    return self._refuse(http.HTTPStatus.TOO_MANY_REQUESTS, "rate", why)
                return self._refuse(http.HTTPStatus.UNAUTHORIZED, "token", "missing or wrong token")
            return _response(http.HTTPStatus.OK, self.metrics_text().encode(), "text/plain; version=0.0.4")
        return self._static(path)

    async def _count_until_closed(self, conn: ServerConnection, ip: str) -> None:
        try:
            await conn.wait_closed()
        finally:
            self._client_ips.pop(conn, None)
            self.limits.closed(ip)

    def _static(self, path: str) -> Response:
        rel = "index.html" if path in ("", "/") else path.lstrip("/")
        try:
            target = (self.static / rel).resolve()
            found = self.static in target.parents and target.is_file() and target.suffix != ".py"
        except (OSError, ValueError):      # a NUL byte, a name too long: nothing the page holds
            found = False
        if not found:
            return _response(http.HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return _response(http.HTTPStatus.OK, target.read_bytes(), ctype)

    # ------------------------------------------------------------------ websocket
    async def handler(self, ws: ServerConnection) -> None:
        conn = Connection(self, ws, self._client_ips.get(ws, ws.remote_address[0] if ws.remote_address else "?"))
        self.connections.add(conn)
        self.metrics.connections += 1
        await conn.run()

    def listen(self, host: str | None = None, port: int | None = None, **where):
        """The websockets server of this process (``sock=``: on a listening socket made elsewhere)."""
        return serve(self.handler, host, port, process_request=self.process_request,
                     max_size=protocol.MAX_OFFER_BYTES + 4096, compression=None, ssl=self.ssl, **where)

    async def close_connections(self) -> None:
        await asyncio.gather(*(c.close() for c in list(self.connections)), return_exceptions=True)

    async def serve(self, ready: asyncio.Future | None = None, stop: asyncio.Event | None = None,
                    sock=None) -> None:
        """Serve until ``stop``; on ``sock`` when given (opened before the model loaded), else on the config's port."""
        self.start_engines()
        where = {"sock": sock} if sock is not None else {"host": self.cfg.host, "port": self.cfg.port}
        try:
            async with self.listen(**where) as server:
                port = server.sockets[0].getsockname()[1]
                log.info("serving on %s://%s:%d/", self.scheme, self.cfg.host, port)
                if ready is not None:
                    ready.set_result(port)
                else:
                    print(banner(self.cfg, ", ".join(self.engines), port), flush=True)
                stop = stop or asyncio.Event()
                await stop.wait()
                await self.close_connections()
        finally:
            self.stop_engines()


def _describe(e: Engine) -> dict:
    """What a client needs to know of one model: its family, labels, options and their defaults."""
    options = sorted(e.option_names - SessionOptions.COMMON)
    defaults = dataclasses.asdict(e.default_options())
    return {"model": e.name, "family": e.family, "size": e.image_size, "fps": e.fps,
            "emotions": ["auto", *e.emotions], "options": options, "controls": sorted(e.control_names),
            "defaults": {k: defaults[k] for k in options if k != "emotion"}}


class BadRequestLog:
    """One log line a minute at most about malformed requests, however many come: a flood of them
    must not flood the log."""

    def __init__(self, every_s: float = 60.0):
        self.every_s, self.count, self.last_line = every_s, 0, float("-inf")

    def note(self, what: str, path: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last_line >= self.every_s:
            log.warning("%d malformed request(s) answered 400 in the last %.0f s (latest: %s for %r)",
                        self.count, min(self.every_s, now - self.last_line), what, path[:80])
            self.count, self.last_line = 0, now


def _response(status: http.HTTPStatus, body: bytes, ctype: str) -> Response:
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
    return Response(status.value, status.phrase, headers, body)


def _set_video_bitrate(bps: int) -> None:
    # aiortc's encoders read module-level bounds (process-wide); the sender adapts within them.
    from aiortc.codecs import h264, vpx
    for mod in (vpx, h264):
        mod.DEFAULT_BITRATE = bps
        mod.MAX_BITRATE = max(mod.MAX_BITRATE, bps)


def run(cfg: ServerConfig, sock=None) -> None:
    """Serve until SIGINT/SIGTERM; on ``sock`` when the caller has opened the port already."""
    # The port before the model: a busy one is one line at once, not a traceback 20 s later.
    sock = sock or listening_socket(cfg.host, cfg.port)
    try:
        server = AvatarServer.create(cfg)
    except BaseException:
        sock.close()
        raise

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.serve(stop=stop, sock=sock)

    asyncio.run(main())
