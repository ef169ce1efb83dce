"""An AvatarServer on its own event loop in a thread, for the WebRTC tests."""
import asyncio
import socket
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "configs" / "small.yaml"


def only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


class ServerThread:
    """An AvatarServer on its own event loop in a thread, like `float-rt serve`."""

    def __init__(self, cfg):
        from server.app import AvatarServer
        self.server = AvatarServer.create(cfg)
        self.loop = asyncio.new_event_loop()
        self.port = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def main():
            self.stop_event = asyncio.Event()
            ready = self.loop.create_future()
            task = asyncio.ensure_future(self.server.serve(ready, self.stop_event))
            self.port = await ready
            self._ready.set()
            await task

        self.loop.run_until_complete(main())

    def start(self):
        self.thread.start()
        assert self._ready.wait(60), "server did not start"
        return self

    def call(self, coro_or_fn, timeout=30):
        async def run():
            r = coro_or_fn()
            return await r if asyncio.iscoroutine(r) else r
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def stop(self):
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self):
        return f"http://127.0.0.1:{self.port}"


def make_server(small_ckpt, **kw):
    from server.config import ServerConfig
    cfg = ServerConfig(port=0, config=str(SMALL), checkpoints=str(small_ckpt), ice_hosts=["127.0.0.1"], **kw)
    return ServerThread(cfg).start()


