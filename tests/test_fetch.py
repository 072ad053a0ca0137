import hashlib
import http.server
import json
import socket
import threading
import zipfile
from typing import ClassVar

import pytest

from neuropil.cli import main
from neuropil.data.catalog import DatasetEntry, FileEntry, VolumeEntry
from neuropil.data.fetch import fetch
from neuropil.errors import NeuropilError


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from the test's folder and honours ``Range: bytes=N-``."""

    ranges: ClassVar[list[str | None]] = []
    """The Range header of every GET, shared by the handler instances of one test (reset by the fixture)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        requested = self.headers.get("Range")
        RangeHandler.ranges.append(requested)
        if requested:
            start = int(requested.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    RangeHandler.ranges = []
    handler = lambda *args, **kwargs: RangeHandler(*args, directory=str(served), **kwargs)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _dataset(url, name="blob.bin", sha256=None, unpack=None):
    return DatasetEntry(
        name="toy",
        voxel_size=(40, 4, 4),
        volumes={"a": VolumeEntry(raw=name)},
        files=[FileEntry(name=name, url=f"{url}/{name}", sha256=sha256, unpack=unpack)],
    )


def test_fetch_verifies_the_checksum(server, tmp_path):
    served, url = server
    payload = bytes(range(256)) * 100
    (served / "blob.bin").write_bytes(payload)
    folder = fetch(_dataset(url, sha256=hashlib.sha256(payload).hexdigest()), destination=tmp_path / "out")
    assert (folder / "blob.bin").read_bytes() == payload
    assert not (folder / "blob.bin.part").exists()


def test_fetch_resumes_a_partial_download(server, tmp_path):
    served, url = server
    payload = bytes(range(256)) * 100
    (served / "blob.bin").write_bytes(payload)
    out = tmp_path / "out"
    out.mkdir()
    (out / "blob.bin.part").write_bytes(payload[:10000])
    fetch(_dataset(url, sha256=hashlib.sha256(payload).hexdigest()), destination=out)
    assert RangeHandler.ranges == ["bytes=10000-"]
    assert (out / "blob.bin").read_bytes() == payload


def test_fetch_rejects_a_wrong_checksum(server, tmp_path):
    served, url = server
    (served / "blob.bin").write_bytes(b"not what the catalog says")
    with pytest.raises(NeuropilError, match="checksum mismatch"):
        fetch(_dataset(url, sha256="0" * 64), destination=tmp_path / "out")
    assert not (tmp_path / "out" / "blob.bin").exists()


def test_fetch_without_a_checksum_needs_no_verify_and_unpacks(server, tmp_path):
    served, url = server
    with zipfile.ZipFile(served / "bundle.zip", "w") as archive:
        archive.writestr("inner/readme.txt", "hello")
    dataset = _dataset(url, name="bundle.zip", unpack="zip")
    with pytest.raises(NeuropilError, match=r"bundle\.zip: the catalog has no checksum"):
        fetch(dataset, destination=tmp_path / "out")
    folder = fetch(dataset, destination=tmp_path / "out", verify=False)
    assert (folder / "inner" / "readme.txt").read_text() == "hello"


def test_fetch_offline_is_a_clear_error(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NeuropilError, match=r"cannot connect \(offline\?\)"):
        fetch(_dataset(f"http://127.0.0.1:{port}", sha256="0" * 64), destination=tmp_path / "out")


def test_fetch_command_downloads_a_user_catalog_dataset(server, tmp_path, monkeypatch, capsys):
    served, url = server
    payload = b"\x00\x01" * 5000
    (served / "blob.bin").write_bytes(payload)
    catalog = tmp_path / "cat.yaml"
    catalog.write_text(
        "datasets:\n  toy:\n    voxel_size: [40, 4, 4]\n    volumes: {a: {raw: blob.bin}}\n"
        f"    files:\n      - {{name: blob.bin, url: '{url}/blob.bin', sha256: {hashlib.sha256(payload).hexdigest()}}}\n"
    )
    monkeypatch.setenv("NEUROPIL_CATALOG", str(catalog))
    monkeypatch.setenv("NEUROPIL_CACHE", str(tmp_path / "cache"))
    assert main(["data", "fetch", "toy"]) == 0
    assert (tmp_path / "cache" / "toy" / "blob.bin").read_bytes() == payload
    assert capsys.readouterr().out == f"wrote toy {tmp_path / 'cache' / 'toy'}: 1 file\n"
    assert main(["data", "fetch", "toy", "--json"]) == 0  # already here: nothing downloaded, the same answer
    assert json.loads(capsys.readouterr().out)["files"] == ["blob.bin"]
    (served / "blob.bin").unlink()
    (tmp_path / "cache" / "toy" / "blob.bin").unlink()
    assert main(["data", "fetch", "toy"]) == 2
    assert "404" in capsys.readouterr().err
