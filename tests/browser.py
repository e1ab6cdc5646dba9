"""Headless Chromium for the tests that look at pages and e-mails as a browser shows them.

``browser`` is a pytest fixture (conftest.py makes it available to every
test) yielding a :class:`DevTools` client on one page of a fresh headless
Chromium with its own profile; the test is skipped when Debian's
``chromium`` is not installed (CI installs it). :meth:`DevTools.show` loads
a file at a given viewport width, as a phone or a desktop would.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's WebSocket."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def wait_for(self, method: str, seconds: float = 30):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if any(e.get("method") == method for e in self.events):
                return
            self.events.append(json.loads(self.ws.recv()))
        raise AssertionError(f"no {method} within {seconds}s")

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in res, res
        return res["result"]["value"]

    def show(self, where: Path | str, width: int, height: int = 900, mobile: bool | None = None) -> None:
        """Load a file or an http URL in a viewport ``width`` CSS pixels wide (a phone below 600) and wait for it."""
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=width < 600 if mobile is None else mobile)
        url = where if isinstance(where, str) and where.startswith(("http://", "https://")) else Path(where).resolve().as_uri()
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def click(self, selector: str, navigates: bool = True) -> None:
        """Click the element ``selector`` with the mouse, as a person does (no page JavaScript involved).

        With ``navigates`` (a submit button, a link), wait for the page that follows.
        """
        # DevTools' own evaluation finds and scrolls to the element (it runs with the page's scripts disabled too).
        box = self.evaluate(f"""(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;
            e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2]; }})()""")
        assert box, f"no {selector} on the page"
        x, y = box
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        if navigates:
            self.wait_for("Page.loadEventFired")

    def screenshot(self, path: Path, width: int, full_page: bool = True) -> bytes:
        """A PNG of the page as shown, the whole page high (up to 6000 px); written to ``path``."""
        height = self.call("Page.getLayoutMetrics")["cssContentSize"]["height"] if full_page else 900
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": min(height, 6000), "scale": 1})
        data = base64.b64decode(shot["data"])
        Path(path).write_bytes(data)
        return data


@contextmanager
def chromium():
    """A :class:`DevTools` client on one page of a fresh headless Chromium (its own profile, removed after)."""
    profile = tempfile.mkdtemp(prefix="relmail-chromium-")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        end = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert proc.poll() is None, "chromium exited at start"
            assert time.monotonic() < end, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            page = next(t for t in json.load(resp) if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        yield tools
        tools.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser():
    if not CHROMIUM:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI installs it")
    with chromium() as tools:
        yield tools
