"""A headless Chromium driven over the DevTools protocol: open the viewer page, read it, click, take screenshots.

No Selenium or driver binary: Chromium is started with ``--remote-debugging-port=0`` and spoken to over a
websocket (``websockets`` is a dependency of viser, so nothing is added). WebGL runs on SwiftShader, the CPU
renderer, so the viser canvas draws without a GPU. Every host except 127.0.0.1 resolves to nothing, so the page
cannot reach the network (nerfstudio's title bar points at images on docs.nerf.studio).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> Optional[str]:
    """``$CROSSFIRE_CHROMIUM`` or the first Chromium/Chrome on the PATH; None when there is none."""
    explicit = os.environ.get("CROSSFIRE_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


class BrowserError(RuntimeError):
    """Chromium did not start, or a DevTools command failed."""


class HeadlessChromium:
    """One headless Chromium tab. Use as a context manager; it kills the browser and its profile on exit."""

    def __init__(self, executable: str, width: int = 1200, height: int = 720, startup_timeout: float = 30.0) -> None:
        self.width, self.height = width, height
        self._profile = tempfile.mkdtemp(prefix="crossfire-chromium-")
        self._log = open(Path(self._profile) / "chromium.log", "wb")  # noqa: SIM115  (closed in close())
        args = [
            executable,
            "--headless=new",
            "--no-sandbox",  # needed as root (CI containers)
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--mute-audio",
            "--hide-scrollbars",
            "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader",
            "--ignore-gpu-blocklist",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
            f"--window-size={width},{height}",
            f"--user-data-dir={self._profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        self._process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        self._ids = itertools.count(1)
        self._socket = None
        try:
            self._socket = self._connect(startup_timeout)
            self.send("Page.enable")
            self.send("Runtime.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False
            )
        except BaseException:
            self.close()
            raise

    def _connect(self, timeout: float):
        from websockets.sync.client import connect

        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.is_file() or not port_file.read_text().strip():
            if self._process.poll() is not None:
                raise BrowserError(f"chromium exited with code {self._process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise BrowserError(f"chromium did not open its DevTools port within {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        page = next(t for t in targets if t.get("type") == "page")
        # entered as a context manager (websockets >= 17.1 warns otherwise); close() exits it
        return connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10).__enter__()

    def log_tail(self, chars: int = 2000) -> str:
        self._log.flush()
        return (Path(self._profile) / "chromium.log").read_bytes()[-chars:].decode("utf-8", "replace")

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> Dict[str, Any]:
        """Run a DevTools command and return its result (events that arrive meanwhile are dropped)."""
        if self._socket is None:
            raise BrowserError("the browser is closed")
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"{method}: no answer within {timeout:.0f} s")
            reply = json.loads(self._socket.recv(timeout=remaining))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values only)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"javascript error in {expression[:80]!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
        """Poll ``predicate`` until it returns something truthy; raise ``TimeoutError`` naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(interval)

    def text(self) -> str:
        """All text the page shows."""
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def click_button(self, label: str) -> bool:
        """Click the first ``<button>`` whose text is ``label``; False when there is none."""
        script = (
            "(() => { const b = [...document.querySelectorAll('button')]"
            f".find(e => e.innerText.trim() === {json.dumps(label)}); if (b) b.click(); return !!b; }})()"
        )
        return bool(self.evaluate(script))

    def canvas_box(self) -> Optional[Tuple[int, int, int, int]]:
        """``(x, y, width, height)`` of the largest canvas (viser's 3D view), in CSS pixels."""
        box = self.evaluate(
            "(() => { const c = [...document.querySelectorAll('canvas')]"
            ".map(e => e.getBoundingClientRect()).filter(r => r.width > 0 && r.height > 0)"
            ".sort((a, b) => b.width * b.height - a.width * a.height)[0];"
            " return c ? [c.x, c.y, c.width, c.height] : null; })()"
        )
        return None if box is None else tuple(int(round(v)) for v in box)  # type: ignore[return-value]

    def click(self, x: float, y: float) -> None:
        """A left click at page coordinates, as a user's mouse makes it (pointer events included)."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            extra = {} if kind == "mouseMoved" else {"button": "left", "clickCount": 1}
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)
            time.sleep(0.05)

    def screenshot(self) -> bytes:
        """PNG of the visible page."""
        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            except Exception:  # noqa: BLE001  closing a dead socket
                pass
            self._socket = None
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "HeadlessChromium":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
