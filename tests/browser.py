"""A small WebDriver client for the report test: headless chromium through chromedriver, spoken to
over HTTP with the standard library (not collected by pytest).

``open_page(path)`` loads a local HTML file in a fresh headless chromium (its own user-data
folder, no network services) and returns what the test checks: whether the page finished
loading, every ``<img>`` with its load state, every URL the browser requested (from
chromium's performance log: ``Network.requestWillBeSent``), and a PNG screenshot.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> tuple[str, str] | None:
    """(browser, chromedriver) executables, or None when either is missing."""
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@dataclass
class Page:
    ready: str
    images: list[dict[str, Any]]
    requests: list[str]
    screenshot: bytes
    title: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Driver:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 60
             ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null").get("value")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"WebDriver {method} {path}: {exc.read()[:500]!r}") from None


def open_page(path: Path, *, width: int = 1280, height: int = 2000, timeout: float = 60,
              anchor: str = "") -> Page:
    """Load ``path`` in headless chromium and report on it (see the module docstring);
    ``anchor`` scrolls to an element id before the screenshot."""
    found = find_browser()
    if found is None:
        raise RuntimeError("no chromium/chromedriver")
    browser, driver_exe = found
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="volqa-chromium-")
    proc = subprocess.Popen([driver_exe, f"--port={port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    driver = _Driver(port)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if driver.call("GET", "/status", timeout=2).get("ready"):
                    break
            except (OSError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        caps = {"browserName": "chrome", "goog:loggingPrefs": {"performance": "ALL"},
                "goog:chromeOptions": {"binary": browser, "args": [
                    *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]}}
        session = driver.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}},
                              timeout=timeout)["sessionId"]
        s = f"/session/{session}"
        try:
            driver.call("POST", f"{s}/timeouts", {"pageLoad": int(timeout * 1000)})
            url = path.resolve().as_uri() + (f"#{anchor}" if anchor else "")
            driver.call("POST", f"{s}/url", {"url": url}, timeout=timeout)
            script = ("return [document.readyState, document.title, Array.from(document.images)"
                      ".map(i => ({src: i.src.slice(0, 40), complete: i.complete, "
                      "width: i.naturalWidth, height: i.naturalHeight}))];")
            ready, title, images = driver.call("POST", f"{s}/execute/sync",
                                               {"script": script, "args": []})
            shot = base64.b64decode(driver.call("GET", f"{s}/screenshot"))
            log = driver.call("POST", f"{s}/se/log", {"type": "performance"})
            requests = []
            for entry in log:
                message = json.loads(entry["message"])["message"]
                if message.get("method") == "Network.requestWillBeSent":
                    requests.append(message["params"]["request"]["url"])
            return Page(ready, images, requests, shot, title)
        finally:
            driver.call("DELETE", s)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
