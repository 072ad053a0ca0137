"""A local neuroglancer viewer of volumes: raw as an image, ids as a segmentation, affinities as RGB.

:func:`serve` opens each address lazily (:func:`neuropil.io.open_volume`), picks the layer kind from
its shape and dtype (:func:`layer_kind`) and serves it with the ``neuroglancer`` package's own web
server, on 127.0.0.1 by default, until stopped. The browser asks for the chunks it shows and each is
read from the file as it is asked for: a zarr, N5 or HDF5 volume larger than memory is never read
whole. Meshes of segments (neuroglancer's 3-D view) are made from the whole volume and are offered
for segmentations of up to :data:`MESH_MAX_BYTES` only.

Layer kinds:

============== ======================================== ==========================================
kind           volumes                                  shown as
============== ======================================== ==========================================
image          3-D uint8, uint16, int8, float, bool     grayscale (uint16 and float: contrast from
                                                        the 0.5 and 99.5 percentiles of a sample)
segmentation   3-D uint32, uint64, int16, int32, int64  ids in colours (signed ids as unsigned)
affinities     4-D (c, z, y, x), any number type        RGB of channels 0-2 (z, y, x neighbours)
============== ======================================== ==========================================

Every layer is placed at its own voxel size (and offset, where the file stores one), so volumes
of different resolutions overlay in physical space; the viewer's axes are x, y, z in nm with the
finest voxel size of the layers.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import neuroglancer
import neuroglancer.local_volume
import neuroglancer.server
import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError
from neuropil.io import Volume, open_volume, parse_address

logger = logging.getLogger(__name__)

IMAGE, SEGMENTATION, AFFINITIES = "image", "segmentation", "affinities"

MESH_MAX_BYTES = 1 << 30
"""Segmentations up to this size (bytes) get meshes; meshing reads the whole volume into memory."""

SAMPLE_SHAPE = (16, 256, 256)
"""The central block read to set the contrast of a uint16 or float image."""


def affinity_shader(channels: int) -> str:
    """The shader of an affinities layer: RGB of channels 0-2 (the z, y and x neighbours); gray for one channel."""
    if channels < 1:
        raise NeuropilError(f"affinities have {channels} channels; expected at least 1")
    if channels == 1:
        return "void main() {\n  emitGrayscale(toNormalized(getDataValue(0)));\n}\n"
    values = [f"toNormalized(getDataValue({c}))" if c < channels else "0.0" for c in range(3)]
    return f"void main() {{\n  emitRGB(vec3({', '.join(values)}));\n}}\n"


_SEGMENTATION_DTYPES: dict[np.dtype, np.dtype] = {
    np.dtype(np.uint32): np.dtype(np.uint32),
    np.dtype(np.uint64): np.dtype(np.uint64),
    np.dtype(np.int16): np.dtype(np.uint16),
    np.dtype(np.int32): np.dtype(np.uint32),
    np.dtype(np.int64): np.dtype(np.uint64),
}
"""Id dtype -> the unsigned dtype of its size that neuroglancer reads (negative ids wrap around)."""

_IMAGE_DTYPES: dict[np.dtype, np.dtype] = {
    np.dtype(np.uint8): np.dtype(np.uint8),
    np.dtype(np.int8): np.dtype(np.int8),
    np.dtype(np.uint16): np.dtype(np.uint16),
    np.dtype(np.bool_): np.dtype(np.uint8),
    np.dtype(np.float16): np.dtype(np.float32),
    np.dtype(np.float32): np.dtype(np.float32),
    np.dtype(np.float64): np.dtype(np.float32),
}
"""Image dtype -> the dtype served (neuroglancer has no float64, float16 or bool)."""


def layer_kind(shape: Sequence[int], dtype: np.dtype | type, *, where: str = "volume") -> str:
    """The layer a volume is shown as: ``image``, ``segmentation`` or ``affinities``.

    Raises
    ------
    NeuropilError
        For volumes that are neither 3-D nor 4-D, and for dtypes neuroglancer cannot show.
    """
    dtype = np.dtype(dtype)
    if len(shape) == 4:
        if shape[0] < 1:
            raise NeuropilError(f"{where}: affinities of shape {tuple(shape)} have no channel")
        if dtype.kind not in "biuf":
            raise NeuropilError(f"{where}: cannot show {dtype} affinities; expected numbers")
        return AFFINITIES
    if len(shape) != 3:
        raise NeuropilError(
            f"{where}: cannot show a volume of shape {tuple(shape)}; expected 3-D (z, y, x) or 4-D (c, z, y, x)"
        )
    if dtype in _SEGMENTATION_DTYPES:
        return SEGMENTATION
    if dtype in _IMAGE_DTYPES:
        return IMAGE
    raise NeuropilError(f"{where}: cannot show a volume of dtype {dtype}")


@dataclass
class ViewLayer:
    """One volume to show: its name, kind, the opened volume and its voxel size."""

    name: str
    kind: str
    volume: Volume
    voxel_size: tuple[float, float, float]
    """nm, z-first (the spatial axes only)."""

    @property
    def offset(self) -> tuple[float, float, float]:
        """Position of voxel 0 in nm, z-first (0 where the file stores none)."""
        stored = self.volume.offset
        return (0.0, 0.0, 0.0) if stored is None else tuple(float(v) for v in stored[-3:])  # type: ignore[return-value]


def layer_names(addresses: Sequence[str | os.PathLike]) -> list[str]:
    """A layer name for each address: the last part of its key, else the file's stem; unique.

    ``sample.h5:volumes/raw`` is ``raw``, ``seg.zarr`` is ``seg``. Names that two addresses
    share are made longer (``a/raw``, ``b/raw``: the file's stem and the key), then numbered.
    """
    wheres = [parse_address(address) for address in addresses]
    short = [_stem(where.path) if not where.key else where.key.rstrip("/").rsplit("/", 1)[-1] for where in wheres]
    names = [
        name if short.count(name) == 1 else f"{_stem(where.path)}/{where.key}" if where.key else name
        for name, where in zip(short, wheres)
    ]
    unique: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in unique:
            n += 1
            candidate = f"{name} ({n})"
        unique.append(candidate)
    return unique


def _stem(path: Path) -> str:
    name = path.name.rstrip("/") or str(path)
    for suffix in (".ome.zarr", ".zarr", ".n5", ".hdf5", ".hdf", ".h5", ".tiff", ".tif"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def open_layers(
    addresses: Sequence[str | os.PathLike],
    *,
    voxel_size: Sequence[float] | None = None,
    allow_missing_chunks: bool | None = None,
) -> list[ViewLayer]:
    """Open each address lazily as a layer: its name (:func:`layer_names`), kind and voxel size.

    Parameters
    ----------
    voxel_size : (z, y, x) nm, optional
        For volumes whose file stores none. A file's own voxel size is shown where it has one
        (a warning says so where it disagrees).
    allow_missing_chunks : bool, optional
        zarr and N5 chunks that are not stored read as the fill value (see :func:`neuropil.io.open_volume`).

    Raises
    ------
    NeuropilError
        When no address is given, a volume cannot be opened or shown, or has no voxel size.
    """
    if not addresses:
        raise NeuropilError("no volume to show: give one or more addresses")
    given: tuple[float, ...] | None = None
    if voxel_size is not None:
        given = tuple(float(v) for v in voxel_size)
        if len(given) != 3 or not all(np.isfinite(v) and v > 0 for v in given):
            raise NeuropilError(f"--voxel-size must be 3 positive numbers (z y x nm), got {given}")
    volumes: list[Volume] = []
    try:
        for address in addresses:
            volumes.append(open_volume(address, allow_missing_chunks=allow_missing_chunks))
        layers = []
        for name, volume in zip(layer_names(addresses), volumes):
            kind = layer_kind(volume.shape, volume.dtype, where=str(volume.address))
            stored = None if volume.voxel_size is None else tuple(float(v) for v in volume.voxel_size[-3:])
            if stored is None and given is None:
                raise NeuropilError(f"{volume.address}: the file stores no voxel size; give --voxel-size Z Y X (nm)")
            if stored is not None and given is not None and not np.allclose(stored, given, rtol=1e-3):
                logger.warning(
                    "%s: shown at the file's voxel size %s nm, not --voxel-size %s", volume.address, stored, given
                )
            z, y, x = stored or given  # type: ignore[misc]
            layers.append(ViewLayer(name, kind, volume, (z, y, x)))
    except BaseException:
        for volume in volumes:
            volume.close()
        raise
    return layers


class LazyArray:
    """What neuroglancer's ``LocalVolume`` reads: ``shape``, ``dtype`` and slicing that reads only the region.

    Reads are served from neuroglancer's thread pool; those of an HDF5 or TIFF file, whose handle
    is not safe to share between threads, take turns. A read that fails (a missing chunk, a damaged
    file) is logged in one line and answered with an HTTP error for that chunk only.
    """

    def __init__(self, volume: Volume, dtype: np.dtype, *, mesh_max_bytes: int = MESH_MAX_BYTES):
        self.volume = volume
        self.shape = tuple(volume.shape)
        self.dtype = np.dtype(dtype)
        self.mesh_max_bytes = mesh_max_bytes
        self._lock = threading.Lock() if volume.address.kind in ("hdf5", "tiff") else None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __getitem__(self, index) -> NDArray:
        try:
            if self._lock is None:
                data = self.volume[index]
            else:
                with self._lock:
                    data = self.volume[index]
        except NeuropilError as error:
            logger.error("%s", error)
            raise ValueError(str(error)) from error
        if data.dtype != self.dtype:
            same_size_ids = (
                data.dtype.kind in "iu" and self.dtype.kind == "u" and data.dtype.itemsize == self.dtype.itemsize
            )
            data = data.view(self.dtype) if same_size_ids else data.astype(self.dtype)
        return data

    def transpose(self) -> NDArray:
        """The whole volume in memory, x first: what neuroglancer's mesher reads.

        :class:`MeshGuardedVolume` asks for it only for volumes of up to ``mesh_max_bytes``.
        """
        return self[...].transpose()


class MeshGuardedVolume(neuroglancer.LocalVolume):
    """A ``LocalVolume`` that declines meshes of volumes too large to read whole.

    neuroglancer's own refusal comes after it has marked a mesher as being made, which would leave
    later mesh requests waiting for ever; this one comes first.
    """

    def get_object_mesh(self, object_id):
        data = self.data._data
        if isinstance(data, LazyArray) and data.nbytes > data.mesh_max_bytes:
            raise neuroglancer.local_volume.MeshesNotSupportedForVolume()
        return super().get_object_mesh(object_id)


def local_volume(layer: ViewLayer) -> MeshGuardedVolume:
    """The neuroglancer data source of a layer: read lazily, at its voxel size and offset."""
    volume = layer.volume
    z, y, x = layer.voxel_size
    served: np.dtype
    if layer.kind == AFFINITIES:
        names, units, scales = ["c^", "z", "y", "x"], ["", "nm", "nm", "nm"], [1.0, z, y, x]
        served = volume.dtype if volume.dtype in (np.dtype(np.uint8), np.dtype(np.uint16)) else np.dtype(np.float32)
    else:
        names, units, scales = ["z", "y", "x"], ["nm"] * 3, [z, y, x]
        served = (_SEGMENTATION_DTYPES if layer.kind == SEGMENTATION else _IMAGE_DTYPES)[volume.dtype]
    offset = np.divide(layer.offset, layer.voxel_size)
    whole = np.round(offset)
    if not np.allclose(offset, whole, atol=1e-3):
        logger.warning("%s: offset %s nm is not a whole number of voxels; shown rounded", volume.address, layer.offset)
    voxel_offset = ([0] if layer.kind == AFFINITIES else []) + [int(v) for v in whole]
    return MeshGuardedVolume(
        LazyArray(volume, served),
        dimensions=neuroglancer.CoordinateSpace(names=names, units=units, scales=scales),
        volume_type=SEGMENTATION if layer.kind == SEGMENTATION else IMAGE,
        voxel_offset=voxel_offset,
    )


def contrast_range(layer: ViewLayer) -> tuple[float, float] | None:
    """The 0.5 and 99.5 percentiles of a central block of a uint16 or float image; None for other layers."""
    volume = layer.volume
    if layer.kind != IMAGE or volume.dtype.kind not in "fu" or volume.dtype.itemsize == 1:
        return None
    region = tuple(
        slice(max(0, (n - s) // 2), max(0, (n - s) // 2) + min(n, s)) for n, s in zip(volume.shape, SAMPLE_SHAPE)
    )
    try:
        sample = np.asarray(volume[region], dtype=np.float64)
    except NeuropilError as error:
        logger.warning("%s; the contrast is neuroglancer's default", error)
        return None
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return None
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if high <= low:
        high = low + 1
    return low, high


def _add_layers(viewer: neuroglancer.Viewer, layers: Sequence[ViewLayer]) -> None:
    finest = np.min([layer.voxel_size for layer in layers], axis=0)
    with viewer.txn() as state:
        state.dimensions = neuroglancer.CoordinateSpace(
            names=["x", "y", "z"], units="nm", scales=[float(finest[2]), float(finest[1]), float(finest[0])]
        )
        for layer in layers:
            source = local_volume(layer)
            if layer.kind == SEGMENTATION:
                state.layers[layer.name] = neuroglancer.SegmentationLayer(source=source)
            elif layer.kind == AFFINITIES:
                state.layers[layer.name] = neuroglancer.ImageLayer(
                    source=source, shader=affinity_shader(layer.volume.shape[0])
                )
            else:
                contrast = contrast_range(layer)
                controls: dict[str, Any] = {} if contrast is None else {"normalized": {"range": list(contrast)}}
                state.layers[layer.name] = neuroglancer.ImageLayer(source=source, shader_controls=controls)
        state.layout = "4panel"


def start_viewer(layers: Sequence[ViewLayer], *, bind_address: str = "127.0.0.1", port: int = 0) -> neuroglancer.Viewer:
    """Start neuroglancer's web server on ``bind_address:port`` (0: a free port) and a viewer of ``layers``.

    Stop the server with ``neuroglancer.server.stop()`` (:func:`serve` does).

    Raises
    ------
    NeuropilError
        When a server of this process is already running (one per process).
    OSError
        When the address cannot be bound (e.g. the port is in use).
    """
    if neuroglancer.server.is_server_running():
        raise NeuropilError("a neuroglancer server is already running in this process; stop it first")
    neuroglancer.set_server_bind_address(bind_address, bind_port=port)
    viewer = neuroglancer.Viewer()
    try:
        _add_layers(viewer, layers)
    except BaseException:
        neuroglancer.server.stop()
        raise
    return viewer


def describe(layer: ViewLayer) -> str:
    """One line about a layer: name, kind, shape, dtype and voxel size."""
    size = "x".join(f"{v:g}" for v in layer.voxel_size)
    return f"{layer.name}: {layer.kind} {layer.volume.shape} {layer.volume.dtype} at {size} nm ({layer.volume.address})"


def serve(
    addresses: Sequence[str | os.PathLike],
    *,
    voxel_size: Sequence[float] | None = None,
    bind_address: str = "127.0.0.1",
    port: int = 0,
    allow_missing_chunks: bool | None = None,
    until: threading.Event | None = None,
    started: Callable[[neuroglancer.Viewer], None] | None = None,
) -> None:
    """Show ``addresses`` in a local neuroglancer viewer and serve it until ``until`` is set (or Ctrl-C).

    Parameters
    ----------
    addresses : sequence of address
        Volumes to show, one layer each (see :func:`open_layers` and :func:`layer_kind`).
    voxel_size : (z, y, x) nm, optional
        For volumes whose file stores none.
    bind_address, port
        Where the server listens; port 0 takes a free one. The viewer's URL is
        ``viewer.get_viewer_url()``, ``http://ADDRESS:PORT/v/TOKEN/``.
    until : threading.Event, optional
        Serve until it is set; without it, until the process is interrupted.
    started : callable, optional
        Called with the viewer once it is served (e.g. to print its URL).

    The server is stopped and the volumes are closed when serving ends, however it ends.
    """
    layers = open_layers(addresses, voxel_size=voxel_size, allow_missing_chunks=allow_missing_chunks)
    try:
        viewer = start_viewer(layers, bind_address=bind_address, port=port)
        try:
            for layer in layers:
                logger.info("%s", describe(layer))
            if started is not None:
                started(viewer)
            (until or threading.Event()).wait()
        finally:
            neuroglancer.server.stop()
    finally:
        for layer in layers:
            layer.volume.close()
