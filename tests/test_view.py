"""``neuropil view``: the neuroglancer viewer serves each volume as the right layer, lazily, and renders in Chromium."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import queue
import re
import socket
import sys
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import zarr

import browser
from neuropil.cli import main
from neuropil.errors import NeuropilError
from neuropil.io import open_volume, write_volume
from neuropil.view import (
    AFFINITIES,
    IMAGE,
    SEGMENTATION,
    LazyArray,
    affinity_shader,
    contrast_range,
    layer_kind,
    layer_names,
    open_layers,
    serve,
)
from processes import serve_then_interrupt

VOXEL = (40.0, 4.0, 4.0)
SHAPE = (8, 96, 96)
SEGMENT = 7
URL = re.compile(r"^http://127\.0\.0\.1:(\d+)/v/[0-9a-f]+/$")


def _volumes(root: Path) -> dict[str, str]:
    """Raw (HDF5, bright), a segmentation (zarr: one block of id 7 in background 0) and affinities (zarr)."""
    raw = np.full(SHAPE, 250, np.uint8)
    raw[:, :8] = 0
    segmentation = np.zeros(SHAPE, np.uint64)
    segmentation[:, 48:, 48:] = SEGMENT
    affinities = np.zeros((3,) + SHAPE, np.float32)
    affinities[0] = 1.0  # red
    addresses = {
        "raw": f"{root}/sample.h5:volumes/raw",
        "seg": f"{root}/seg.zarr/seg",
        "affs": f"{root}/affs.zarr/affs",
    }
    write_volume(addresses["raw"], raw, voxel_size=VOXEL)
    write_volume(addresses["seg"], segmentation, voxel_size=VOXEL)
    write_volume(addresses["affs"], affinities, voxel_size=VOXEL)
    return addresses


@contextlib.contextmanager
def _serving(addresses, **options) -> Iterator:
    """``serve`` in a background thread; yields its viewer and stops it after."""
    stop, started, failed = threading.Event(), queue.Queue(), queue.Queue()

    def run():
        try:
            serve(addresses, until=stop, started=started.put, **options)
        except BaseException as error:
            failed.put(error)
            started.put(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        viewer = started.get(timeout=30)
        if viewer is None:
            raise failed.get()
        yield viewer
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "serve did not stop when asked"


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return response.read()


def _server(url: str) -> str:
    return url.split("/v/")[0]


def _volume_key(layer: dict) -> str:
    source = layer["source"][0]["url"] if isinstance(layer["source"], list) else layer["source"]
    assert source.startswith("python://volume/")
    return source.removeprefix("python://volume/")


def _chunk(server: str, key: str, start, end) -> np.ndarray:
    """A chunk as the browser asks for it (npz: zlib-compressed .npy, x first)."""
    body = _get(
        f"{server}/neuroglancer/npz/{key}/{','.join(['1'] * len(start))}/"
        f"{','.join(map(str, start))}/{','.join(map(str, end))}"
    )
    return np.load(io.BytesIO(zlib.decompress(body)))


# --- layer kinds and names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dtype", "kind"),
    [
        ((4, 5, 6), np.uint8, IMAGE),
        ((4, 5, 6), np.uint16, IMAGE),
        ((4, 5, 6), np.float32, IMAGE),
        ((4, 5, 6), np.float64, IMAGE),
        ((4, 5, 6), np.bool_, IMAGE),
        ((4, 5, 6), np.uint32, SEGMENTATION),
        ((4, 5, 6), np.uint64, SEGMENTATION),
        ((4, 5, 6), np.int32, SEGMENTATION),
        ((4, 5, 6), np.int64, SEGMENTATION),
        ((3, 4, 5, 6), np.float32, AFFINITIES),
        ((12, 4, 5, 6), np.uint8, AFFINITIES),
    ],
)
def test_layer_kind(shape, dtype, kind):
    assert layer_kind(shape, dtype) == kind


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ((5, 6), np.uint8, "expected 3-D"),
        ((2, 3, 4, 5, 6), np.uint8, "expected 3-D"),
        ((4, 5, 6), np.complex64, "dtype complex64"),
        ((3, 4, 5, 6), np.complex64, "expected numbers"),
    ],
)
def test_layer_kind_refuses(shape, dtype, message):
    with pytest.raises(NeuropilError, match=message):
        layer_kind(shape, dtype, where="v.h5:x")


def test_layer_names():
    assert layer_names(["a/sample.h5:volumes/raw", "b/seg.zarr", "c/affs.zarr/affs", "d/stack.tif"]) == [
        "raw",
        "seg",
        "affs",
        "stack",
    ]
    # the same key in two files: the file's stem and the key; the same address twice: numbered
    assert layer_names(["a.h5:raw", "b.h5:raw"]) == ["a/raw", "b/raw"]
    assert layer_names(["a.h5:raw", "a.h5:raw"]) == ["a/raw", "a/raw (2)"]


def test_affinity_shader():
    assert affinity_shader(3).count("getDataValue") == 3
    assert affinity_shader(12).count("getDataValue") == 3  # only the nearest neighbours
    assert "getDataValue(1)" in affinity_shader(2) and "getDataValue(2)" not in affinity_shader(2)
    assert "emitGrayscale" in affinity_shader(1)


def test_open_layers(tmp_path, caplog):
    addresses = _volumes(tmp_path)
    write_volume(tmp_path / "plain.h5:raw", np.zeros((4, 5, 6), np.uint16))
    layers = open_layers([*addresses.values(), f"{tmp_path}/plain.h5:raw"], voxel_size=(30, 6, 6))
    try:
        facts = [(layer.name, layer.kind, layer.voxel_size) for layer in layers]
        assert facts == [
            ("sample/volumes/raw", IMAGE, VOXEL),  # two keys "raw": named with their files
            ("seg", SEGMENTATION, VOXEL),
            ("affs", AFFINITIES, VOXEL),
            ("plain/raw", IMAGE, (30.0, 6.0, 6.0)),  # --voxel-size where the file stores none
        ]
        assert "sample.h5:volumes/raw: shown at the file's voxel size (40.0, 4.0, 4.0) nm" in caplog.text
    finally:
        for layer in layers:
            layer.volume.close()
    with pytest.raises(NeuropilError, match=r"plain\.h5:raw: the file stores no voxel size; give --voxel-size"):
        open_layers([f"{tmp_path}/plain.h5:raw"])


def test_contrast_of_uint16_and_float_images(tmp_path):
    values = np.linspace(1000, 3000, 4 * 32 * 32).reshape(4, 32, 32)
    write_volume(tmp_path / "a.h5:u16", values.astype(np.uint16), voxel_size=VOXEL)
    write_volume(tmp_path / "a.h5:f32", (values / 1000).astype(np.float32), voxel_size=VOXEL)
    write_volume(tmp_path / "a.h5:u8", np.zeros((4, 32, 32), np.uint8), voxel_size=VOXEL)
    layers = open_layers([f"{tmp_path}/a.h5:u16", f"{tmp_path}/a.h5:f32", f"{tmp_path}/a.h5:u8"])
    low, high = contrast_range(layers[0])
    assert 1000 <= low < 1050 and 2950 < high <= 3000
    low, high = contrast_range(layers[1])
    assert 1.0 <= low < 1.05 and 2.95 < high <= 3.0
    assert contrast_range(layers[2]) is None  # uint8: neuroglancer's 0-255
    for layer in layers:
        layer.volume.close()


def test_lazy_array_reads_regions_and_serves_unsigned_ids(tmp_path):
    ids = np.arange(4 * 5 * 6, dtype=np.int64).reshape(4, 5, 6) - 3
    write_volume(tmp_path / "ids.zarr/ids", ids, voxel_size=VOXEL)
    with open_volume(tmp_path / "ids.zarr/ids") as volume:
        data = LazyArray(volume, np.dtype(np.uint64))
        assert data.shape == (4, 5, 6) and data.dtype == np.uint64
        region = data[1:3, 0:2, 4:6]
        assert region.dtype == np.uint64 and np.array_equal(region, ids[1:3, 0:2, 4:6].astype(np.uint64))
        assert data[0, 0, 0] == np.uint64(2**64 - 3)  # -3 wraps around, as an unsigned id


# --- the served viewer --------------------------------------------------------------------------------------------


def test_viewer_serves_each_volume_as_its_layer(tmp_path):
    addresses = _volumes(tmp_path)
    with _serving(list(addresses.values())) as viewer:
        url = viewer.get_viewer_url()
        assert URL.match(url), url
        page = _get(url).decode()
        assert "<html" in page.lower()

        state = viewer.state.to_json()
        layers = {layer["name"]: layer for layer in state["layers"]}
        assert [layer["name"] for layer in state["layers"]] == ["raw", "seg", "affs"]
        assert [layer["type"] for layer in state["layers"]] == ["image", "segmentation", "image"]
        assert layers["affs"]["shader"] == affinity_shader(3)
        # the viewer's axes: x, y, z in nm, at the finest voxel size
        assert state["dimensions"] == {"x": [4e-09, "m"], "y": [4e-09, "m"], "z": [4e-08, "m"]}

        server = _server(url)
        info = {
            name: json.loads(_get(f"{server}/neuroglancer/info/{_volume_key(layer)}")) for name, layer in layers.items()
        }
        assert info["raw"]["volumeType"] == "image" and info["raw"]["dataType"] == "uint8"
        assert info["seg"]["volumeType"] == "segmentation" and info["seg"]["dataType"] == "uint64"
        assert info["affs"]["volumeType"] == "image" and info["affs"]["dataType"] == "float32"
        for name in ("raw", "seg"):
            space = info[name]["coordinateSpace"]
            assert space["x"] == [4e-09, "m"] and space["y"] == [4e-09, "m"] and space["z"] == [4e-08, "m"]
            assert info[name]["shape"] == list(SHAPE)
        space = info["affs"]["coordinateSpace"]
        assert space["c^"] == [1, ""] and space["z"] == [4e-08, "m"] and space["x"] == [4e-09, "m"]
        assert info["affs"]["shape"] == [3, *SHAPE]

        # a chunk as the browser asks for it: the file's values in that region
        chunk = _chunk(server, _volume_key(layers["seg"]), (0, 40, 40), (2, 56, 56))
        expected = np.zeros((2, 16, 16), np.uint64)
        expected[:, 8:, 8:] = SEGMENT
        assert np.array_equal(chunk, expected)
        mesh = _get(f"{server}/neuroglancer/mesh/{_volume_key(layers['seg'])}/{SEGMENT}")
        assert len(mesh) > 100  # a small segmentation has meshes
    with pytest.raises(urllib.error.URLError):  # stopped: nothing listens any more
        urllib.request.urlopen(url, timeout=5)


def test_viewer_reads_a_volume_larger_than_memory_lazily(tmp_path):
    """A 256 GiB zarr segmentation (chunks stored in one corner only) is served chunk by chunk; no mesh is made."""
    shape, chunk = (4096, 4096, 4096), (64, 64, 64)
    array = zarr.create_array(str(tmp_path / "big.zarr"), shape=shape, chunks=chunk, dtype=np.uint32, fill_value=0)
    block = np.arange(np.prod(chunk), dtype=np.uint32).reshape(chunk)
    array[2048:2112, 2048:2112, 2048:2112] = block
    array.attrs["resolution"] = list(VOXEL)
    with _serving([str(tmp_path / "big.zarr")], allow_missing_chunks=True) as viewer:
        (layer,) = viewer.state.to_json()["layers"]
        assert layer["type"] == "segmentation"
        server, key = _server(viewer.get_viewer_url()), _volume_key(layer)
        assert json.loads(_get(f"{server}/neuroglancer/info/{key}"))["shape"] == list(shape)
        served = _chunk(server, key, (2048, 2048, 2048), (2112, 2112, 2112))
        assert np.array_equal(served, block)
        with pytest.raises(urllib.error.HTTPError) as refused:  # meshing would read all of it
            _get(f"{server}/neuroglancer/mesh/{key}/1")
        assert refused.value.code == 405


def test_a_failed_chunk_read_is_one_chunk_error(tmp_path, caplog):
    array = zarr.create_array(str(tmp_path / "holes.zarr"), shape=(8, 64, 64), chunks=(8, 32, 32), dtype=np.uint8)
    array[:, :32, :32] = 9
    array.attrs["resolution"] = list(VOXEL)
    with _serving([str(tmp_path / "holes.zarr")]) as viewer:
        (layer,) = viewer.state.to_json()["layers"]
        server, key = _server(viewer.get_viewer_url()), _volume_key(layer)
        assert np.all(_chunk(server, key, (0, 0, 0), (8, 32, 32)) == 9)
        with pytest.raises(urllib.error.HTTPError) as failed:  # a chunk that is not stored
            _chunk(server, key, (0, 32, 32), (8, 64, 64))
        assert failed.value.code == 400
    assert any("chunk(s) missing" in record.getMessage() for record in caplog.records)


# --- in the browser --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _page_waiting_for(viewer) -> Iterator[str]:
    """A page showing the viewer in a frame, with an image that loads once neuroglancer has drawn every chunk in view.

    The image is neuroglancer's own screenshot of its canvas, which the page in the frame takes once
    all visible chunks are loaded: the browser harness waits for every image before its screenshot.
    """
    url = viewer.get_viewer_url()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

        def do_GET(self):
            if self.path == "/":
                body = (
                    "<!doctype html><html><head><meta charset='utf-8'><title>viewer</title></head><body style='margin:0'>"
                    f"<iframe src='{url}' width='1000' height='600' style='border:0'></iframe>"
                    "<img src='/drawn.png' width='250' height='150' alt='drawn'></body></html>"
                ).encode()
                self._reply(200, "text/html", body)
            elif self.path == "/drawn.png":
                done, shots = threading.Event(), []
                viewer.async_screenshot(lambda reply: (shots.append(reply), done.set()))
                if done.wait(45):
                    self._reply(200, "image/png", shots[0].screenshot.image)
                else:
                    self._reply(503, "text/plain", b"neuroglancer did not finish drawing")
            else:
                self._reply(404, "text/plain", b"")

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def _pixels(png: Path, where) -> np.ndarray:
    return iio.imread(png)[..., :3].astype(int)[where]


def test_viewer_renders_in_chromium(tmp_path):
    """The viewer's page loads without console errors, and WebGL draws the raw, the segment and the affinities."""
    browser.require_chromium()
    addresses = _volumes(tmp_path / "volumes")
    with browser.Chromium(timeout_s=90) as chromium:
        with _serving([addresses["raw"], addresses["seg"]]) as viewer:
            with viewer.txn() as state:  # a known colour for the segment, to find it on the screenshot
                state.layers["seg"].segment_colors[SEGMENT] = "#0000ff"
            rendered = chromium.render(viewer.get_viewer_url(), tmp_path / "viewer.png", timeout_s=60)
            assert rendered.loaded, rendered.load_error
            assert rendered.title == "neuroglancer"
            assert rendered.console_errors == []

            with _page_waiting_for(viewer) as page:
                drawn = chromium.render(page, tmp_path / "drawn.png", timeout_s=60)
            assert drawn.ok, (drawn.images_failed, drawn.console_errors)
            xy = _pixels(drawn.screenshot, np.s_[60:330, :500])  # the top-left (x, y) panel, below the layer bar
            white = (xy.min(axis=-1) > 180).sum()  # raw 250, under segment 0
            blue = ((xy[..., 2] - xy[..., :2].max(axis=-1)) > 60).sum()  # raw 250 blended with the blue segment
            assert white > 2000 and blue > 1000, (white, blue)

        with _serving([addresses["affs"]]) as viewer:
            with _page_waiting_for(viewer) as page:
                drawn = chromium.render(page, tmp_path / "affs.png", timeout_s=60)
            assert drawn.ok, (drawn.images_failed, drawn.console_errors)
            xy = _pixels(drawn.screenshot, np.s_[60:330, :500])
            red = ((xy[..., 0] - xy[..., 1:].max(axis=-1)) > 150).sum()  # channel 0 = 1, channels 1-2 = 0
            assert red > 2000, red


# --- the command -----------------------------------------------------------------------------------------------


def test_command_prints_its_url_serves_and_stops_on_ctrl_c(tmp_path):
    addresses = _volumes(tmp_path)
    served = serve_then_interrupt(
        [sys.executable, "-m", "neuropil", "view", addresses["raw"], addresses["seg"], "--port", "0"],
        env=dict(os.environ),
        url=URL,
    )
    assert "<html" in served.page.lower()
    assert served.returncode == 130
    err = served.stderr
    assert "neuropil: interrupted" in err and "Traceback" not in err
    assert "raw: image (8, 96, 96) uint8 at 40x4x4 nm" in err and "seg: segmentation" in err


def test_command_bad_input(tmp_path, capsys):
    write_volume(tmp_path / "plain.h5:raw", np.zeros((4, 5, 6), np.uint8))
    cases = [
        (["view", f"{tmp_path}/plain.h5:raw"], r"plain\.h5:raw: the file stores no voxel size; give --voxel-size"),
        (["view", f"{tmp_path}/plain.h5:raw", "--voxel-size", "40", "4", "0"], "--voxel-size must be 3 positive"),
        (["view", f"{tmp_path}/missing.h5:raw"], "missing.h5"),
        (["view", f"{tmp_path}/plain.h5:raw", "--voxel-size", "40", "4", "4", "--port", "70000"], "--port must be"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("neuropil: error: "), err
        assert re.search(message, lines[0]), lines[0]


def test_command_port_in_use(tmp_path, capsys):
    write_volume(tmp_path / "raw.h5:raw", np.zeros((4, 5, 6), np.uint8), voxel_size=VOXEL)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["view", f"{tmp_path}/raw.h5:raw", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "neuropil: error: address already in use", err
