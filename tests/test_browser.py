"""The headless-browser harness (tests/browser.py) that report tests rely on: it must see what a reader sees."""

import base64
import functools
import http.server
import threading
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

import browser

RED = (220, 20, 20)
BLUE = (20, 20, 220)


def _png(color: tuple[int, int, int], shape=(6, 8)) -> bytes:
    return iio.imwrite("<bytes>", np.full((*shape, 3), color, np.uint8), extension=".png")


def _page(root: Path, body: str, title: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    page = root / "index.html"
    page.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>{body}</body></html>"
    )
    return page


def _good_report(root: Path) -> Path:
    """A report as an experiment writes it: one image embedded as a data: URI, one beside the page, one lazy far below."""
    (root / "figures").mkdir(parents=True)
    (root / "figures" / "slice.png").write_bytes(_png(BLUE))
    embedded = base64.b64encode(_png(RED)).decode()
    return _page(
        root,
        f"<h1>Report</h1>"
        f"<img alt='embedded' width='200' height='150' src='data:image/png;base64,{embedded}'>"
        f"<img alt='file' width='200' height='150' src='figures/slice.png'>"
        f"<div style='height: 2000px'></div>"
        f"<img alt='lazy' loading='lazy' width='50' height='50' src='figures/slice.png'>",
        "Report",
    )


def _colour_present(png: Path, color: tuple[int, int, int]) -> bool:
    pixels = iio.imread(png)[..., :3].astype(int)
    return bool((np.abs(pixels - color).sum(axis=-1) < 30).sum() > 1000)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def chromium() -> str:
    return browser.require_chromium()


def test_loaded_report(chromium, tmp_path):
    page = _good_report(tmp_path / "report")
    shot = tmp_path / "shots" / "report.png"
    rendered = browser.render(page, shot, timeout_s=30)
    assert rendered.loaded and rendered.load_error is None
    assert rendered.url == page.resolve().as_uri()
    assert rendered.title == "Report"
    assert (rendered.images_loaded, rendered.images_total) == (3, 3), rendered.images_failed
    assert rendered.images_failed == []
    assert rendered.console_errors == []
    assert rendered.ok
    assert rendered.screenshot == shot
    data = shot.read_bytes()
    assert data.startswith(browser.PNG_MAGIC) and len(data) > 2000
    height, width = iio.imread(shot).shape[:2]
    assert width >= 1280 and height > 2000  # the whole page, not only the viewport
    assert _colour_present(shot, RED) and _colour_present(shot, BLUE)  # both images drawn


def test_broken_report(chromium, tmp_path):
    embedded = base64.b64encode(_png(RED)).decode()
    page = _page(
        tmp_path / "report",
        f"<img src='data:image/png;base64,{embedded}'><img src='figures/missing.png'>"
        "<script>console.error('curve', 3, 'is empty')</script>"
        "<script>throw new Error('no such metric')</script>",
        "Broken",
    )
    rendered = browser.render(page, tmp_path / "broken.png")
    assert rendered.loaded  # the page itself came; what is in it is broken
    assert (rendered.images_loaded, rendered.images_total) == (1, 2)
    assert rendered.images_failed == [(tmp_path / "report" / "figures" / "missing.png").as_uri()]
    assert "console.error: curve 3 is empty" in rendered.console_errors
    assert any(e.startswith("uncaught: Error: no such metric") for e in rendered.console_errors)
    assert any("missing.png" in e for e in rendered.console_errors)  # the failed request, as the console shows it
    assert len(rendered.console_errors) == 3, rendered.console_errors
    assert not rendered.ok
    assert (tmp_path / "broken.png").read_bytes().startswith(browser.PNG_MAGIC)


def test_http_url_and_missing_page(chromium, tmp_path):
    root = tmp_path / "report"
    _good_report(root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with browser.Chromium() as shared:  # one browser, a tab for each page
            missing = shared.render(f"{base}/nothing.html", tmp_path / "missing.png")
            rendered = shared.render(f"{base}/index.html", tmp_path / "http.png")
            gone = shared.render(tmp_path / "nothing.html", tmp_path / "gone.png")
    finally:
        server.shutdown()
        server.server_close()
    assert not missing.loaded and missing.load_error == "HTTP 404"
    assert rendered.ok, rendered  # nothing of the page before it (its 404 in the console) carried over
    assert rendered.url == f"{base}/index.html" and rendered.images_total == 3
    assert (tmp_path / "http.png").read_bytes().startswith(browser.PNG_MAGIC)
    assert not gone.loaded and gone.load_error == "net::ERR_FILE_NOT_FOUND"


def test_skips_without_chromium(monkeypatch):
    monkeypatch.setattr(browser, "chromium_path", lambda: None)
    with pytest.raises(pytest.skip.Exception, match="no Chromium found"):
        browser.require_chromium()
    with pytest.raises(RuntimeError, match="no Chromium"):
        browser.render(Path("index.html"), Path("shot.png"))
    with pytest.raises(RuntimeError, match="no Chromium"), browser.Chromium():
        pass


def test_chromium_path_override(monkeypatch, tmp_path):
    monkeypatch.setenv(browser.CHROMIUM_ENV, str(tmp_path / "no-such-browser"))
    assert browser.chromium_path() is None
