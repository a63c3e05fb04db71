"""report.html in a real browser: headless Chromium opens it from disk.

The test drives Chromium through the Chrome DevTools Protocol over a websocket on
127.0.0.1, records console messages and network requests, checks that every image
has loaded and saves a screenshot. When FMNIST_SCREENSHOT_DIR is set, the
screenshot is copied there too. Skipped when Chromium or websocket-client is missing.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fmnist import report
from synthetic_runs import make_run_dir

websocket = pytest.importorskip("websocket", reason="websocket-client is not installed (pip install websocket-client)")

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)
TIMEOUT = 30.0
WIDTH = 1280
IMAGES_SCRIPT = """Array.from(document.images).map(img => ({
    src: img.src.slice(0, 40), complete: img.complete, naturalWidth: img.naturalWidth}))"""


@dataclass
class PageLoad:
    """What the browser saw while it loaded one page."""

    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    title: str = ""
    screenshot: bytes = b""


class DevTools:
    """A minimal Chrome DevTools Protocol client: commands and the events of one page session."""

    def __init__(self, url: str) -> None:
        # Chromium rejects DevTools websockets that send an Origin header it has not allowed.
        self.socket = websocket.create_connection(url, timeout=TIMEOUT, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") != self.next_id:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
            return reply.get("result", {})

    def wait_for(self, method: str, seconds: float = TIMEOUT) -> None:
        deadline = time.monotonic() + seconds
        while not any(event.get("method") == method for event in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} event within {seconds} s")
            self.socket.settimeout(max(deadline - time.monotonic(), 0.01))
            self.events.append(json.loads(self.socket.recv()))
        self.socket.settimeout(TIMEOUT)

    def drain(self, seconds: float) -> None:
        """Collect the events that arrive within ``seconds``, such as late requests after the load event."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.socket.settimeout(remaining)
            try:
                self.events.append(json.loads(self.socket.recv()))
            except websocket.WebSocketTimeoutException:
                break
        self.socket.settimeout(TIMEOUT)

    def close(self) -> None:
        self.socket.close()


class Browser:
    """A headless Chromium process with its own profile directory, ended by its process group."""

    def __init__(self, executable: str, workdir: Path) -> None:
        self.profile = workdir / "profile"
        self.log_path = workdir / "chromium.log"
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.devtools = DevTools(self._browser_url())

    def _browser_url(self) -> str:
        # Chromium writes the port it chose and the browser's websocket path into this file.
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium did not start; its log:\n{self.log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        return f"ws://127.0.0.1:{port}{path}"

    def load(self, page: Path) -> PageLoad:
        """Open ``page`` in a new tab, wait for its load event, and return what the browser saw."""
        devtools = self.devtools
        devtools.events.clear()
        target = devtools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = devtools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            devtools.call(f"{domain}.enable", session=session)
        devtools.call("Emulation.setDeviceMetricsOverride",
                      {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
        devtools.events.clear()
        devtools.call("Page.navigate", {"url": page.as_uri()}, session)
        devtools.wait_for("Page.loadEventFired")
        devtools.drain(1.0)

        result = PageLoad()
        result.images = devtools.call("Runtime.evaluate", {"expression": IMAGES_SCRIPT, "returnByValue": True}, session)["result"]["value"]
        result.title = devtools.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True}, session)["result"]["value"]
        height = devtools.call("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"]
        shot = devtools.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1},
        }, session)
        result.screenshot = base64.b64decode(shot["data"])
        self._sort_events(devtools.events, session, result)
        devtools.call("Target.closeTarget", {"targetId": target})
        return result

    @staticmethod
    def _sort_events(events: list[dict], session: str, result: PageLoad) -> None:
        for event in events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                result.console_errors.append(" ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"]))
            elif method == "Runtime.exceptionThrown":
                result.console_errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                result.console_errors.append(params["entry"]["text"])
            elif method == "Network.requestWillBeSent":
                result.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed":
                result.failed_requests.append(f"{params.get('type')}: {params.get('errorText')}")

    def close(self) -> None:
        try:
            self.devtools.close()
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            self.log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if executable is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    started = Browser(executable, tmp_path_factory.mktemp("chromium"))
    yield started
    started.close()


def _external(urls: list[str]) -> list[str]:
    return [url for url in urls if not url.startswith(("file:", "data:"))]


def _broken(images: list[dict]) -> list[dict]:
    return [image for image in images if not (image["complete"] and image["naturalWidth"] > 0)]


def test_report_loads_cleanly(browser, tmp_path):
    run_dir = make_run_dir(tmp_path / "run", epochs=12, best_epoch=8, test_count=500, mistakes=60)
    page = report.write_report(run_dir)

    loaded = browser.load(page)
    screenshot = tmp_path / "report.png"
    screenshot.write_bytes(loaded.screenshot)
    if os.environ.get("FMNIST_SCREENSHOT_DIR"):
        target = Path(os.environ["FMNIST_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, target / "report.png")

    assert loaded.title == "fmnist run run"
    assert loaded.console_errors == []
    assert loaded.failed_requests == []
    assert _external(loaded.requests) == []
    assert len(loaded.images) == 2 + 36
    assert _broken(loaded.images) == []
    assert loaded.screenshot.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(loaded.screenshot) > 50_000


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the signature of the base class
        pass


def test_checks_catch_faults(browser, tmp_path):
    # A page with every fault the report must not have, to prove the checks can fail.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page = tmp_path / "faulty.html"
        page.write_text(
            "<!DOCTYPE html><html><head><title>faulty</title></head><body>"
            f'<img src="http://127.0.0.1:{server.server_port}/missing.png">'
            '<img src="data:image/png;base64,AAAA">'
            "<script>console.error('broken on purpose')</script></body></html>"
        )
        loaded = browser.load(page)
    finally:
        server.shutdown()
        server.server_close()
    assert "broken on purpose" in loaded.console_errors
    assert _external(loaded.requests) == [f"http://127.0.0.1:{server.server_port}/missing.png"]
    assert len(_broken(loaded.images)) == 2
