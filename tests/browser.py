"""A real headless Chromium for tests of HTML output (e.g. an experiment's ``report/index.html``).

``render`` opens a page (a file, or a ``file://`` / ``http://`` URL), waits for its load event and for every
``<img>`` to settle, and reports what a reader would see: the title, how many images loaded, the errors the
browser console shows (``console.error`` messages, uncaught exceptions, resources that failed to load), and a
full-page PNG screenshot. It speaks the Chrome DevTools Protocol over a WebSocket (``websocket-client``, in the
``dev`` extra) to the system's Chromium (Debian's ``chromium`` package, which ``make test`` installs where it
can), so no browser is downloaded. It uses only long-established protocol methods.

A test calls ``require_chromium()`` first; it skips, with the reason, where no Chromium is installed. ``render``
starts a browser for one page; ``with Chromium() as chromium: chromium.render(...)`` shares one between pages
(each in a fresh tab), which saves the browser's start for each page after the first.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Executables tried in order on PATH; NEUROPIL_CHROMIUM names one explicitly (a path or a name on PATH).
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMIUM_ENV = "NEUROPIL_CHROMIUM"

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_SCREENSHOT_HEIGHT = 16384  # CSS px; longer pages are cut at this height

# After the load event: every <img> made eager (a lazy one out of view would never load) and awaited, fonts
# awaited, then the title and the images that did not load (src cut short, data: URIs included).
_SETTLE_JS = """
(async (timeoutMs) => {
  const images = Array.from(document.images);
  for (const img of images) img.loading = "eager";
  const settled = Promise.all(images.map((img) => img.complete ? null : new Promise((done) => {
    img.addEventListener("load", done, {once: true});
    img.addEventListener("error", done, {once: true});
  })));
  await Promise.race([settled, new Promise((done) => setTimeout(done, timeoutMs))]);
  if (document.fonts) await Promise.race([document.fonts.ready, new Promise((done) => setTimeout(done, 1000))]);
  const failed = images.filter((img) => !(img.complete && img.naturalWidth > 0));
  return {
    title: document.title,
    total: images.length,
    failed: failed.map((img) => (img.currentSrc || img.getAttribute("src") || "").slice(0, 200)),
  };
})
"""


@dataclass(frozen=True)
class Rendered:
    """What the browser made of a page; ``ok`` when it loaded with every image and no console errors."""

    url: str
    loaded: bool  # the document came (no navigation error, no HTTP error status) and its load event fired
    load_error: str | None  # why not, when not loaded
    title: str
    images_total: int
    images_loaded: int
    images_failed: list[str]  # src of each <img> that did not load (naturalWidth 0)
    console_errors: list[str] = field(default_factory=list)  # "console.error: ...", "uncaught: ...", "network: ..."
    screenshot: Path | None = None  # the PNG written

    @property
    def ok(self) -> bool:
        return self.loaded and self.images_loaded == self.images_total and not self.console_errors


def chromium_path() -> str | None:
    """The Chromium (or Chrome) executable to drive, or None when none is installed."""
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        return shutil.which(named)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    """The Chromium executable; skips the calling test, saying why, where the browser or its driver is missing."""
    path = chromium_path()
    if path is None:
        pytest.skip(
            f"no Chromium found (tried {', '.join(CHROMIUM_NAMES)} on PATH, or ${CHROMIUM_ENV}); "
            "`make test` installs Debian's chromium package where apt-get can run as root"
        )
    try:
        import websocket  # noqa: F401
    except ImportError:
        pytest.skip("websocket-client is not installed (pip install -e '.[dev]')")
    return path


def render(
    page: Path | str,
    screenshot: Path,
    *,
    timeout_s: float = 30,
    width: int = 1280,
    height: int = 800,
    full_page: bool = True,
) -> Rendered:
    """Load ``page`` in a fresh headless Chromium, wait for it and its images, and write a PNG screenshot.

    ``page`` is a file path or a ``file://``, ``http://`` or ``https://`` URL. Problems of the page are reported
    in the result (``loaded``, ``images_failed``, ``console_errors``); a missing browser raises RuntimeError,
    and a page that has not finished within ``timeout_s`` (browser start included) raises TimeoutError.
    """
    deadline = time.monotonic() + timeout_s
    with Chromium(width=width, height=height, timeout_s=timeout_s) as chromium:
        return chromium.render(page, screenshot, timeout_s=max(0.0, deadline - time.monotonic()), full_page=full_page)


class Chromium:
    """A headless Chromium and its DevTools connection, for several ``render`` calls (one tab each)."""

    def __init__(self, *, width: int = 1280, height: int = 800, timeout_s: float = 30):
        self.width, self.height, self.timeout_s = width, height, timeout_s
        self._stack = contextlib.ExitStack()
        self._cdp: _Connection | None = None

    def __enter__(self) -> Chromium:
        executable = chromium_path()
        if executable is None:
            raise RuntimeError("no Chromium installed (see require_chromium)")
        deadline = time.monotonic() + self.timeout_s
        with contextlib.ExitStack() as stack:
            profile = Path(
                stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="neuropil-chromium-", ignore_cleanup_errors=True)
                )
            )
            log_path = profile / "chromium.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [
                        executable,
                        "--headless",
                        "--no-sandbox",  # needed as root and in containers without user namespaces; pages are trusted
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--disable-extensions",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-default-apps",
                        "--disable-sync",
                        "--no-first-run",
                        "--no-default-browser-check",
                        "--hide-scrollbars",
                        "--mute-audio",
                        f"--window-size={self.width},{self.height}",
                        "--remote-debugging-port=0",
                        f"--user-data-dir={profile}",
                        "about:blank",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            stack.callback(_stop, proc)
            cdp = _Connection(_devtools_url(proc, profile, log_path, deadline), deadline)
            stack.callback(cdp.close)  # asks the browser to quit, before _stop waits for it
            self._cdp = cdp
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._cdp = None
        self._stack.close()

    def render(self, page: Path | str, screenshot: Path, *, timeout_s: float = 30, full_page: bool = True) -> Rendered:
        """Load ``page`` in a new tab and report on it, as the module's ``render`` does."""
        if self._cdp is None:
            raise RuntimeError("Chromium.render outside its with block")
        url = page if isinstance(page, str) and "://" in page else Path(page).resolve().as_uri()
        self._cdp.deadline = time.monotonic() + timeout_s
        target = self._cdp.call("Target.createTarget", url="about:blank")["targetId"]
        session = ""
        try:
            session = self._cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            return _Tab(self._cdp, session).render(url, Path(screenshot), full_page)
        finally:
            self._cdp.tabs.pop(session, None)
            self._cdp.deadline = max(self._cdp.deadline, time.monotonic() + 5)
            with contextlib.suppress(Exception):  # the tab is gone with the browser anyway; keep the first error
                self._cdp.call("Target.closeTarget", targetId=target)


def _devtools_url(proc: subprocess.Popen, profile: Path, log_path: Path, deadline: float) -> str:
    """The browser's DevTools WebSocket, from the DevToolsActivePort file it writes into its profile."""
    port_file = profile / "DevToolsActivePort"
    while True:
        if port_file.is_file():
            lines = port_file.read_text().split()
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Chromium exited with status {proc.returncode} on start:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError("Chromium did not open its DevTools port in time")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen) -> None:
    try:
        proc.wait(timeout=5)  # Browser.close was sent; the browser exits on its own
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _Connection:
    """The browser's DevTools WebSocket: calls wait for their reply; events go to the tab they concern."""

    def __init__(self, ws_url: str, deadline: float):
        import websocket

        self._websocket = websocket
        self.deadline = deadline
        self.ws = websocket.create_connection(
            ws_url, timeout=max(0.1, deadline - time.monotonic()), suppress_origin=True
        )
        self.next_id = 0
        self.tabs: dict[str, _Tab] = {}  # sessionId -> tab

    def close(self) -> None:
        try:
            self.ws.settimeout(2)
            self.ws.send(json.dumps({"id": 0, "method": "Browser.close"}))
        except Exception:
            pass
        finally:
            self.ws.close()

    def call(self, method: str, session: str | None = None, **params: Any) -> dict:
        self.next_id += 1
        call_id = self.next_id
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = self.receive(f"the reply to {method}")
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self.dispatch(reply)

    def wait_for(self, what: str, done) -> None:
        while not done():
            self.dispatch(self.receive(what))

    def receive(self, what: str) -> dict:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out waiting for {what}")
        self.ws.settimeout(left)
        try:
            return json.loads(self.ws.recv())
        except self._websocket.WebSocketTimeoutException:
            raise TimeoutError(f"timed out waiting for {what}") from None

    def dispatch(self, message: dict) -> None:
        tab = self.tabs.get(message.get("sessionId", ""))
        if tab is not None and "method" in message:
            tab.event(message["method"], message.get("params", {}))


class _Tab:
    """One page target: what its console said, its main frame's lifecycle, its documents' HTTP statuses."""

    def __init__(self, cdp: _Connection, session: str):
        self.cdp, self.session = cdp, session
        self.console_errors: list[str] = []
        self.lifecycle: list[tuple[str, str]] = []  # (loaderId, name) of the main frame
        self.main_frame: str | None = None
        self.statuses: dict[str, int] = {}  # loaderId -> HTTP status of the document
        cdp.tabs[session] = self

    def call(self, method: str, **params: Any) -> dict:
        return self.cdp.call(method, self.session, **params)

    def event(self, method: str, params: dict) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(_remote_text(arg) for arg in params.get("args", []))
            self.console_errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.console_errors.append(f"uncaught: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error" and not entry.get("url", "").endswith("/favicon.ico"):
                where = f" ({entry['url'][:200]})" if entry.get("url") else ""
                self.console_errors.append(f"{entry.get('source', 'log')}: {entry.get('text', '')}{where}")
        elif method == "Page.lifecycleEvent" and params.get("frameId") == self.main_frame:
            self.lifecycle.append((params.get("loaderId", ""), params.get("name", "")))
        elif method == "Network.responseReceived" and params.get("type") == "Document":
            self.statuses[params.get("loaderId", "")] = int(params.get("response", {}).get("status", 0))

    def render(self, url: str, screenshot: Path, full_page: bool) -> Rendered:
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Page.setLifecycleEventsEnabled", enabled=True)
        self.main_frame = self.call("Page.getFrameTree")["frameTree"]["frame"]["id"]

        navigation = self.call("Page.navigate", url=url)
        loader = navigation.get("loaderId", "")
        load_error = navigation.get("errorText") or None
        if load_error is None:
            self.cdp.wait_for(f"the load event of {url}", lambda: (loader, "load") in self.lifecycle)
            status = self.statuses.get(loader)
            if status is not None and status >= 400:
                load_error = f"HTTP {status}"

        left_ms = max(0, int((self.cdp.deadline - time.monotonic()) * 1000) - 2000)  # time left for the screenshot
        settled = self.call(
            "Runtime.evaluate", expression=f"({_SETTLE_JS})({left_ms})", awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in settled:
            raise RuntimeError(f"could not inspect the page's images: {settled['exceptionDetails']}")
        facts = settled["result"]["value"]

        shot: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.call("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            viewport = metrics.get("cssLayoutViewport") or metrics["layoutViewport"]
            shot["captureBeyondViewport"] = True
            shot["clip"] = {
                "x": 0,
                "y": 0,
                "width": max(1, int(max(size["width"], viewport["clientWidth"]))),
                "height": max(1, min(int(max(size["height"], viewport["clientHeight"])), MAX_SCREENSHOT_HEIGHT)),
                "scale": 1,
            }
        data = base64.b64decode(self.call("Page.captureScreenshot", **shot)["data"])
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(data)

        total = int(facts["total"])
        failed = list(facts["failed"])
        return Rendered(
            url=url,
            loaded=load_error is None,
            load_error=load_error,
            title=str(facts["title"]),
            images_total=total,
            images_loaded=total - len(failed),
            images_failed=failed,
            console_errors=list(self.console_errors),
            screenshot=screenshot,
        )


def _remote_text(arg: dict) -> str:
    if "value" in arg:
        return arg["value"] if isinstance(arg["value"], str) else json.dumps(arg["value"])
    return str(arg.get("unserializableValue") or arg.get("description") or arg.get("type", ""))
