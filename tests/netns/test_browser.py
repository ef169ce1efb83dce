"""The demo page in real headless Chromium with a fake microphone playing speech."""
import asyncio
import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import websockets

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def launch(url: str, wav: Path, profile: Path, *extra: str) -> subprocess.Popen:
    args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--allow-loopback-in-peer-connection",
            # Host candidates as plain addresses (mDNS names cannot be resolved in the namespace).
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1000,800", *extra, url]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def devtools_page(profile: Path, timeout=30.0) -> str:
    port_file = profile / "DevToolsActivePort"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if port_file.is_file() and port_file.read_text().strip():
            port = port_file.read_text().split()[0]
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json").read())
            pages = [t for t in targets if t["type"] == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise TimeoutError("Chromium did not open its DevTools port")


class CDP:
    def __init__(self, ws):
        self.ws, self.n = ws, 0

    async def call(self, method, **params):
        self.n += 1
        await self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]

    async def js(self, expr):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return r["result"].get("value")


async def frames_decoded(cdp: CDP, timeout: float = 300.0) -> list[int]:
    """The page's framesDecoded over time, until the video plays (or the time is up)."""
    seen = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        stats = await cdp.js("JSON.stringify(window.avatarStats || null)")
        stats = json.loads(stats) if stats else None
        if stats:
            seen.append(stats["framesDecoded"])
            if stats["errors"]:
                raise AssertionError(f"page errors: {stats['errors']}")
            if len(seen) > 3 and seen[-1] > 25 and seen[-1] > seen[-3]:
                break
        await asyncio.sleep(0.5)
    return seen


def require_chromium():
    if CHROMIUM is None:
        pytest.fail("Chromium is required for this test (apt-get install chromium; .ci/run installs it)")


def test_page_in_chromium_shows_the_avatar(server, speech_wav, tmp_path):
    require_chromium()
    proc = launch(server.http + "/?autostart=1", speech_wav, tmp_path / "profile")
    try:
        async def main():
            async with websockets.connect(devtools_page(tmp_path / "profile"), max_size=None) as ws:
                cdp = CDP(ws)
                seen = await frames_decoded(cdp)
                rect = await cdp.js("(() => { const r = document.getElementById('video').getBoundingClientRect();"
                                    " return [r.x, r.y, r.width, r.height]; })()")
                shot = await cdp.call("Page.captureScreenshot", format="png",
                                      clip={"x": rect[0], "y": rect[1], "width": rect[2], "height": rect[3],
                                            "scale": 1})
                notice = await cdp.js("getComputedStyle(document.getElementById('notice')).display")
                return seen, base64.b64decode(shot["data"]), notice
        seen, png, notice = asyncio.run(main())
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"\nChromium framesDecoded over time: {seen[-6:]}")
    assert seen and seen[-1] > 25 and seen[-1] > seen[-3], f"video did not play: framesDecoded {seen}"
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[0] > 100
    assert float(img.std()) > 5.0, "the video area of the screenshot is blank"
    assert notice == "block"    # the demo-weights notice is shown
