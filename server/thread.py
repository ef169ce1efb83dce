"""Run an AvatarServer on its own event loop in a background thread (tests, benchmarks, embedding)."""
from __future__ import annotations

import asyncio
import threading

from .app import AvatarServer
from .config import ServerConfig


class ServerThread:
    def __init__(self, cfg: ServerConfig):
        self.server = AvatarServer.create(cfg)
        self.host = cfg.host
        self.loop = asyncio.new_event_loop()
        self.port: int | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="float-rt-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main():
            self._stop = asyncio.Event()
            ready = self.loop.create_future()
            task = asyncio.ensure_future(self.server.serve(ready, self._stop))
            self.port = await ready
            self._ready.set()
            await task

        self.loop.run_until_complete(main())

    def start(self, timeout: float = 60.0) -> "ServerThread":
        self.thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("server did not start")
        return self

    def call(self, fn, timeout: float = 30.0):
        """Run ``fn()`` (sync or coroutine function) on the server's loop and return its result."""
        async def run():
            r = fn()
            return await r if asyncio.iscoroutine(r) else r
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"
