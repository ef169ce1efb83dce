"""`float-rt serve --workers N`: N whole servers behind one port.

A session's media (VP8/Opus encoding, SRTP, pacing, the event loop) costs about 0.15-0.24 core,
of which about 0.06 holds the GIL (scripts/bench_server.py --model-free, py-spy --gil), so one
process stops near 15 sessions however many cores the machine has. Here every worker is a complete server
(its own engine, signalling and WebRTC media) in a process of its own, and they share one
listening socket that the supervisor opens: the port, page, token and TLS stay as they are.

Balancing: a worker listens only while it is among the least loaded of the workers that still
have a free session, or when every worker is full (so that someone answers ``busy``). Loads
and the counters behind /healthz and /metrics live in shared memory (`Board`), so every worker
answers for the whole server. A worker that dies takes only its own sessions; the supervisor
starts another in its place.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

from float_rt.config import load_config
from float_rt.errors import FloatRTError
from float_rt.resources import config_path

from .app import AvatarServer
from .config import ServerConfig
from .listen import listening_socket
from .metrics import Metrics
from .startup import banner, check_exposure, engine_threads, prepare, tls_context

log = logging.getLogger(__name__)

SLOT_BYTES = 32768          # one worker's published counters and recent latencies (JSON)
GATE_S = 0.05               # how often a worker looks at the others' loads
PUBLISH_S = 0.5             # how often it publishes its counters
RESTART_BACKOFF_S = (1.0, 30.0)


@dataclass
class Load:
    alive: bool
    connections: int
    sessions: int
    capacity: int

    @property
    def has_room(self) -> bool:
        return self.alive and self.sessions < self.capacity


def should_accept(me: int, loads: list[Load]) -> bool:
    """Whether worker ``me`` should take new connections now."""
    open_ = [w for w in loads if w.has_room]
    if not open_:
        return True      # all full (or starting): answer, and the answer is `busy`
    if not loads[me].has_room:
        return False
    return loads[me].connections <= min(w.connections for w in open_)


def split_sessions(total: int, n: int) -> list[int]:
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


class Board:
    """Shared memory between the workers: four numbers each for balancing, and a JSON slot."""

    FIELDS = 4

    def __init__(self, n: int, ctx):
        self.n = n
        self.loads_ = ctx.Array("i", self.FIELDS * n)
        self.slots = ctx.Array("c", SLOT_BYTES * n)

    def set_load(self, i: int, load: Load) -> None:
        with self.loads_.get_lock():
            self.loads_[self.FIELDS * i:self.FIELDS * (i + 1)] = [int(load.alive), load.connections,
                                                                  load.sessions, load.capacity]

    def loads(self) -> list[Load]:
        with self.loads_.get_lock():
            raw = self.loads_[:]
        return [Load(bool(raw[k]), *raw[k + 1:k + self.FIELDS]) for k in range(0, len(raw), self.FIELDS)]

    def publish(self, i: int, data: dict) -> None:
        blob = json.dumps(data, separators=(",", ":")).encode()
        if len(blob) >= SLOT_BYTES:       # keep the counters; drop latency samples
            blob = json.dumps({**data, "latencies": []}, separators=(",", ":")).encode()
        with self.slots.get_lock():
            self.slots[SLOT_BYTES * i:SLOT_BYTES * i + len(blob) + 1] = blob + b"\0"

    def read(self, i: int) -> dict | None:
        with self.slots.get_lock():
            raw = self.slots[SLOT_BYTES * i:SLOT_BYTES * (i + 1)]
        raw = raw.split(b"\0", 1)[0]
        return json.loads(raw) if raw else None

    def clear(self, i: int) -> None:
        self.set_load(i, Load(False, 0, 0, 0))
        with self.slots.get_lock():
            self.slots[SLOT_BYTES * i] = b"\0"


class Peers:
    """One worker's view of the whole server (``AvatarServer.peers``)."""

    def __init__(self, board: Board, index: int, server: AvatarServer):
        self.board, self.index, self.server = board, index, server

    def own(self) -> dict:
        return {"status": self.server.own_status(), "metrics": self.server.metrics.snapshot(),
                "latencies": [round(x, 1) for x in self.server.recent_latencies_ms()[-400:]]}

    def publish_load(self) -> None:
        s = self.server
        self.board.set_load(self.index, Load(True, len(s.connections), s.active, s.cfg.max_sessions))

    def publish_stats(self) -> None:
        self.board.publish(self.index, self.own())

    def _all(self) -> list[dict]:
        loads = self.board.loads()
        out = []
        for i in range(self.board.n):
            data = self.own() if i == self.index else self.board.read(i)
            if data is not None and loads[i].alive:
                out.append({**data, "worker": i})
        return out

    def statuses(self) -> list[dict]:
        return [{"worker": d["worker"], **d["status"]} for d in self._all()]

    def metrics(self) -> tuple[Metrics, list[float]]:
        data = self._all()
        return Metrics.total([d["metrics"] for d in data]), [x for d in data for x in d["latencies"]]


class Gate:
    """Listens on the shared socket while `should_accept` says so."""

    def __init__(self, server: AvatarServer, sock: socket.socket, peers: Peers):
        self.server, self.sock, self.peers = server, sock, peers
        self.listening = None          # the websockets server accepting now
        self.paused: list = []         # earlier ones, still serving their connections

    def _handshaking(self) -> bool:
        # Connections accepted but not yet upgraded: closing now would answer them 503.
        s = self.listening
        return len(s.handler_tasks) > len(s.all_connections)

    async def update(self) -> None:
        self.peers.publish_load()
        want = should_accept(self.peers.index, self.peers.board.loads())
        if want and self.listening is None:
            self.listening = await self.server.listen(sock=self.sock.dup())
        elif not want and self.listening is not None and not self._handshaking():
            self.listening.server.close()          # stop accepting; its connections go on
            self.paused.append(self.listening)
            self.listening = None
        self.paused = [s for s in self.paused if s.handler_tasks]

    async def run(self, stop: asyncio.Event) -> None:
        last, parent = 0.0, os.getppid()
        while not stop.is_set():
            if os.getppid() != parent:
                log.error("the supervisor is gone; stopping")
                break
            await self.update()
            if time.monotonic() - last > PUBLISH_S:
                last = time.monotonic()
                self.peers.publish_stats()
            try:
                await asyncio.wait_for(stop.wait(), GATE_S)
            except asyncio.TimeoutError:
                pass
        if self.listening is not None:
            self.listening.server.close()


def _cpu_threads(cfg: ServerConfig, n: int) -> None:
    # N engines on one CPU: split the cores (less the media reserve) rather than oversubscribe them N times.
    engine_threads(cfg, n)


def worker_main(cfg: ServerConfig, index: int, n: int, sock: socket.socket, board: Board,
                make_server=AvatarServer.create, log_level: int = logging.WARNING) -> None:
    logging.basicConfig(level=log_level, format=f"%(levelname)s [worker {index}]: %(message)s")
    logging.getLogger("float_rt.sessions").setLevel(logging.INFO)    # as in a one-process server
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the supervisor stops us (SIGTERM)
    _cpu_threads(cfg, n)
    server = make_server(cfg)
    peers = server.peers = Peers(board, index, server)

    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        server.start_engines()
        gate = Gate(server, sock, peers)
        try:
            await gate.run(stop)
        finally:
            board.clear(index)
            await server.close_connections()
            server.stop_engines()

    asyncio.run(main())


class Supervisor:
    """Starts the workers, restarts one that dies, stops them all on SIGINT/SIGTERM."""

    def __init__(self, cfg: ServerConfig, n: int, make_server=AvatarServer.create, sock: socket.socket | None = None):
        if n < 1:
            raise FloatRTError("--workers must be >= 1")
        if cfg.max_sessions < n:
            raise FloatRTError(f"--max-sessions ({cfg.max_sessions}) must be at least --workers ({n})")
        check_exposure(cfg)    # refuse at once, before any worker loads a model
        tls_context(cfg)
        self.cfg, self.n, self.make_server = cfg, n, make_server
        self.capacity = split_sessions(cfg.max_sessions, n)
        self.sock = sock or listening_socket(cfg.host, cfg.port)
        self.port = self.sock.getsockname()[1]
        self.ctx = multiprocessing.get_context("spawn")
        self.board = Board(n, self.ctx)
        self.procs: list = [None] * n
        self.started = [0.0] * n
        self.backoff = [RESTART_BACKOFF_S[0]] * n
        self.restarts = 0
        self.stopping = threading.Event()

    def worker_config(self, i: int) -> ServerConfig:
        """Worker ``i`` is one whole server with its share of the sessions."""
        return dataclasses.replace(self.cfg, max_sessions=self.capacity[i], workers=1)

    def _start(self, i: int) -> None:
        cfg = self.worker_config(i)
        p = self.ctx.Process(target=worker_main, name=f"float-rt-worker-{i}", daemon=False,
                             args=(cfg, i, self.n, self.sock, self.board, self.make_server,
                                   logging.getLogger().getEffectiveLevel()))
        p.start()
        self.procs[i], self.started[i] = p, time.monotonic()

    def start(self, timeout: float = 600.0) -> int:
        """All workers up (their engines loaded); returns the port."""
        for i in range(self.n):
            self._start(i)
        deadline = time.monotonic() + timeout
        while not all(w.alive for w in self.board.loads()):
            if self.stopping.is_set():
                self.stop()
                raise KeyboardInterrupt
            dead = [i for i, p in enumerate(self.procs) if not p.is_alive()]
            if dead:
                self.stop()
                raise FloatRTError(f"worker {dead[0]} failed to start (exit code {self.procs[dead[0]].exitcode}); "
                                   "its error is above")
            if time.monotonic() > deadline:
                self.stop()
                raise FloatRTError(f"workers did not start within {timeout:.0f} s")
            time.sleep(0.05)
        return self.port

    def watch(self) -> None:
        """Until stop(): restart a worker that exits (after a pause that grows if it keeps dying)."""
        due: dict[int, float] = {}
        while not self.stopping.is_set():
            running = [p.sentinel for i, p in enumerate(self.procs) if i not in due]
            if running:
                multiprocessing.connection.wait(running, timeout=0.2)
            else:
                time.sleep(0.2)
            now = time.monotonic()
            for i, p in enumerate(self.procs):
                if self.stopping.is_set():
                    break
                if i not in due and not p.is_alive():
                    self.board.clear(i)
                    # A worker that keeps dying soon after it starts is restarted less and less often.
                    delay = self.backoff[i] if now - self.started[i] < 60 else RESTART_BACKOFF_S[0]
                    self.backoff[i] = min(delay * 2, RESTART_BACKOFF_S[1])
                    log.error("worker %d (pid %s) exited with code %s; its sessions are lost; restarting in %.0f s",
                              i, p.pid, p.exitcode, delay)
                    due[i] = now + delay
                elif i in due and now >= due[i]:
                    del due[i]
                    self.restarts += 1
                    self._start(i)

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        procs = [p for p in self.procs if p is not None]
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                log.error("worker %s did not stop; killing it", p.name)
                p.kill()
                p.join(5)
        self.sock.close()


def run_workers(cfg: ServerConfig, sock: socket.socket | None = None) -> None:
    """``sock``: the listening socket when the caller opened the port already."""
    n = cfg.workers
    sup = Supervisor(cfg, n, sock=sock)   # refusals and the port first, before the demo weights are written
    prepare(cfg)               # weights resolved (demo weights written) once, here
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sup.stopping.set())
    port = sup.start()
    name = load_config(config_path(cfg.config)).name
    print(banner(cfg, name, port, workers=n), flush=True)
    try:
        sup.watch()
    finally:
        sup.stop()
