"""N5 datasets, read and written without an N5 library: ``attributes.json`` plus one file per block.

Axes are x-first on disk (``dimensions``, ``blockSize``, block paths) and z-first here.

Voxel size and offset, converted to nanometres and z-first (:mod:`neuropil.io.metadata`).
N5 metadata vectors are stored in the order of ``dimensions``, x-first, as BigDataViewer,
n5-viewer, n5-spark, Paintera and neuroglancer's n5 source write and read them, and as
daisy and funlib.persistence before 0.5 read ``resolution`` and ``offset`` (reversed, their
"F" order); so they are reversed here:

- ``resolution`` (nanometres unless ``units`` lists one unit per axis, x-first too) and
  ``pixelResolution`` (``{"dimensions": [x, y, z], "unit": "um"}``, or a bare list in
  ``units`` or nanometres), each times the dataset's ``downsamplingFactors`` where it has
  them (n5-spark stores the full-resolution ``pixelResolution`` on every scale level;
  neuroglancer multiplies). A dataset without either takes the nearest enclosing group's
  (n5-viewer's root and channel defaults; neuroglancer merges the groups' attributes).
- ``offset``: x-first, as daisy reads it.

Two conventions are z-first as stored: ``voxel_size`` (with ``offset`` then z-first too,
where no ``resolution`` is stored), which funlib.persistence 0.5 and later writes through
zarr-python's N5 store, which passes attributes on unchanged; and the COSEM/OpenOrganelle
``transform`` (``scale``, ``translate``, ``units``; its ``ordering`` ``"C"`` unless ``"F"``).
Several conventions on one dataset must agree (an error names both where they do not).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError
from neuropil.files import remove_path, swap_in
from neuropil.io.addresses import VolumeAddress
from neuropil.io.backend import Backend, first_line, region_chunks
from neuropil.io.metadata import Found, VoxelMetadata, attribute, resolve, stored_text
from neuropil.io.units import axis_units

_N5_CODECS = ("raw", "gzip", "bzip2", "xz", "blosc", "zstd")


def _n5_attributes(folder: Path) -> dict:
    path = folder / "attributes.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise NeuropilError(f"{path}: cannot read N5 attributes ({first_line(error)})") from error


def _n5_decompress(data: bytes, compression: dict) -> bytes:
    kind = compression.get("type", "raw")
    if kind == "raw":
        return data
    if kind == "gzip":
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else zlib.decompress(data)
    if kind == "bzip2":
        return bz2.decompress(data)
    if kind == "xz":
        return lzma.decompress(data)
    if kind in ("blosc", "zstd"):
        import numcodecs

        codec = numcodecs.Blosc() if kind == "blosc" else numcodecs.Zstd()
        return bytes(codec.decode(data))
    raise ValueError(f"N5 compression '{kind}' is not one of {', '.join(_N5_CODECS)}")


def _inheritable_voxel_size(
    attributes: dict, *, ndim: int, where: object, holder: str, factors: list[float] | None
) -> list[Found]:
    """The x-first voxel size conventions (``resolution``, ``pixelResolution``) of a dataset or group.

    ``factors`` (z-first, a dataset's ``downsamplingFactors``) multiply them: n5-spark and
    n5-viewer store the full-resolution ``pixelResolution`` on every scale level, and
    neuroglancer multiplies it (and ``resolution``) by the level's factors.
    """
    units = axis_units(attributes.get("units"))
    found = []
    resolution = attribute(
        attributes,
        "resolution",
        units,
        ndim=ndim,
        source=f'the N5 attribute "resolution"{holder} (stored x y z)',
        where=where,
        reverse=True,
    )
    if resolution is not None:
        found.append(resolution)
    if "pixelResolution" in attributes:
        pixel = attributes["pixelResolution"]
        values, unit = (pixel.get("dimensions"), pixel.get("unit")) if isinstance(pixel, dict) else (pixel, units)
        if not isinstance(values, list):
            raise NeuropilError(f"{where}: N5 pixelResolution has no list of 'dimensions': {pixel}")
        source = f'the N5 attribute "pixelResolution"{holder} (stored x y z)'
        stated = attribute(
            {"pixelResolution": values}, "pixelResolution", unit, ndim=ndim, source=source, where=where, reverse=True
        )
        if stated is not None:
            found.append(stated._replace(stored=pixel))
    if factors is None:
        return found
    scaled = []
    for item in found:
        times = factors[-len(item.nanometres) :]
        if len(times) == len(item.nanometres):
            nanometres = tuple(v * f for v, f in zip(item.nanometres, times))
            source = f'{item.source} times "downsamplingFactors" {stored_text(factors[::-1])}'
            item = Found(nanometres, source, item.stored)
        scaled.append(item)
    return scaled


def _downsampling_factors(attributes: dict) -> list[float] | None:
    """A dataset's ``downsamplingFactors`` (one per axis, stored x-first) z-first, or None."""
    factors = attributes.get("downsamplingFactors")
    if not isinstance(factors, list) or not factors or not all(isinstance(f, (int, float)) for f in factors):
        return None  # absent, or a group's list of lists (BigDataViewer), which names no one level
    return [float(f) for f in reversed(factors)]


def voxel_metadata(where: VolumeAddress, folder: Path, attributes: dict, *, ndim: int) -> VoxelMetadata:
    """Voxel size and offset of the N5 dataset in ``folder`` (see the module docstring).

    Raises
    ------
    NeuropilError
        Two conventions that disagree, an unknown unit, a malformed ``pixelResolution``.
    """
    factors = _downsampling_factors(attributes)
    sizes = _inheritable_voxel_size(attributes, ndim=ndim, where=where, holder="", factors=factors)
    offsets: list[Found] = []
    funlib = "voxel_size" in attributes and "resolution" not in attributes
    units = axis_units(attributes.get("units"))
    for name, reverse, stored in (
        ("voxel_size", False, "z y x"),
        ("offset", not funlib, "x y z" if not funlib else "z y x"),
    ):
        found = attribute(
            attributes,
            name,
            units,
            ndim=ndim,
            source=f'the N5 attribute "{name}" (stored {stored})',
            where=where,
            reverse=reverse,
        )
        if found is not None:
            (offsets if name == "offset" else sizes).append(found)
    transform = attributes.get("transform")
    if isinstance(transform, dict):  # COSEM / OpenOrganelle: z-first ("C" ordering) unless it says "F"
        reverse = transform.get("ordering", "C") == "F"
        transform_units = transform.get("units")
        unit = transform_units if isinstance(transform_units, str) else axis_units(transform_units)
        for name, into in (("scale", sizes), ("translate", offsets)):
            source = f'the N5 attribute "transform" {name} (stored {"x y z" if reverse else "z y x"})'
            found = attribute(transform, name, unit, ndim=ndim, source=source, where=where, reverse=reverse)
            if found is not None:
                into.append(found)
    if not sizes:
        # n5-viewer and neuroglancer: a group's attributes hold for the datasets below it
        group = folder.parent
        while not sizes and where.path in (group, *group.parents):
            holder = " of the container" if group == where.path else f' of group "{group.relative_to(where.path)}"'
            inherited = _n5_attributes(group)
            sizes = _inheritable_voxel_size(inherited, ndim=ndim, where=where, holder=holder, factors=factors)
            group = group.parent
    return resolve(sizes, offsets, where=where)


class N5Backend(Backend):
    """An N5 dataset: ``attributes.json`` plus blocks at ``i_x/i_y/i_z`` (axes x-first on disk)."""

    def __init__(self, where: VolumeAddress):
        self.folder = where.path / where.key if where.key else where.path
        if not self.folder.is_dir():
            raise NeuropilError(f"{where.path}: no N5 dataset '{where.key}'")
        attributes = _n5_attributes(self.folder)
        if "dimensions" not in attributes:
            raise NeuropilError(f"{where}: is an N5 group, not a dataset; name the dataset as dir.n5/key")
        try:
            self.shape = tuple(int(n) for n in reversed(attributes["dimensions"]))
            self.block = tuple(int(n) for n in reversed(attributes["blockSize"]))
            self.dtype = np.dtype(attributes["dataType"]).newbyteorder(">")
        except (KeyError, TypeError) as error:
            raise NeuropilError(f"{where}: N5 attributes lack {first_line(error)}") from error
        compression = attributes.get("compression")
        if compression is None:  # N5 before 1.0 named only the type
            compression = {"type": attributes.get("compressionType", "raw")}
        if compression.get("type", "raw") not in _N5_CODECS:
            raise NeuropilError(f"{where}: N5 compression '{compression.get('type')}' is not supported")
        self.compression = compression
        self.chunks = self.block
        self.attributes = attributes
        found = voxel_metadata(where, self.folder, attributes, ndim=len(self.shape))
        self.voxel_size, self.voxel_size_source, self.offset, self.offset_source = found

    def _block_path(self, grid: tuple[int, ...]) -> Path:
        return self.folder.joinpath(*(str(i) for i in reversed(grid)))

    def missing_chunks(self, region):
        """Blocks (z-first grid indices) of the region without a file; N5 reads them as zeros."""
        return [index for index in region_chunks(region, self.block) if not self._block_path(index).is_file()]

    def _read_block(self, grid: tuple[int, ...]) -> NDArray | None:
        path = self._block_path(grid)
        if not path.is_file():
            return None
        data = path.read_bytes()
        mode, ndim = struct.unpack(">HH", data[:4])
        if mode not in (0, 1):
            raise ValueError(f"block {path.name} has mode {mode}; only default and varlength blocks are read")
        sizes = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        start = 4 + 4 * ndim + (4 if mode == 1 else 0)
        shape = tuple(reversed(sizes))
        raw = _n5_decompress(data[start:], self.compression)
        count = int(np.prod(shape))
        values = np.frombuffer(raw, dtype=self.dtype, count=count)
        return values.reshape(shape)

    def read(self, region):
        lower = [s.start for s in region]
        upper = [max(s.start, s.stop) for s in region]
        dense = np.zeros([high - low for low, high in zip(lower, upper)], dtype=self.dtype.newbyteorder("="))
        if dense.size:
            ranges = [range(low // size, (high - 1) // size + 1) for low, high, size in zip(lower, upper, self.block)]
            for grid in np.ndindex(*[len(r) for r in ranges]):
                block_index = tuple(r[g] for r, g in zip(ranges, grid))
                block = self._read_block(block_index)
                if block is None:
                    continue
                origin = [i * b for i, b in zip(block_index, self.block)]
                source, target = [], []
                for axis, (corner, low, high) in enumerate(zip(origin, lower, upper)):
                    begin, end = max(corner, low), min(corner + block.shape[axis], high)
                    source.append(slice(begin - corner, end - corner))
                    target.append(slice(begin - low, end - low))
                dense[tuple(target)] = block[tuple(source)]
        return dense[tuple(slice(None, None, s.step) for s in region)]


def write_n5(
    where: VolumeAddress, array: NDArray, *, voxel_size, chunks, compression: str = "gzip", attributes=None
) -> None:
    """Write ``array`` as N5 dataset ``where.key`` (default ``data``) under a temporary name, then move it.

    ``attributes`` (name -> JSON-like value) go into the dataset's ``attributes.json``.
    """
    key = where.key or "data"
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise NeuropilError(f"{where}: N5 stores integer and float arrays, not {dtype}")
    where.path.mkdir(parents=True, exist_ok=True)
    root_attributes = where.path / "attributes.json"
    if not root_attributes.exists():
        root_attributes.write_text(json.dumps({"n5": "2.0.0"}))
    block = tuple(chunks) if chunks else tuple(min(n, 64) for n in array.shape)
    final = where.path / key
    temporary = where.path / f"{key}.partial"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    metadata = {
        "dimensions": list(reversed(array.shape)),
        "blockSize": [max(1, b) for b in reversed(block)],
        "dataType": dtype.name,
        "compression": {"type": compression, "useZlib": False} if compression == "gzip" else {"type": compression},
    }
    if voxel_size is not None:
        metadata["resolution"] = [float(v) for v in reversed(voxel_size)]
    try:
        _write_n5_blocks(temporary, array, {**(attributes or {}), **metadata}, block, compression, where)
    except BaseException:
        remove_path(temporary)
        raise
    swap_in(temporary, final)


def _write_n5_blocks(temporary: Path, array: NDArray, attributes: dict, block, compression: str, where) -> None:
    dtype = np.dtype(array.dtype)
    (temporary / "attributes.json").write_text(json.dumps(attributes))
    block = tuple(max(1, b) for b in block)
    grid = [range(0, max(n, 1), b) for n, b in zip(array.shape, block)] if array.size else []
    for origin in np.ndindex(*[len(r) for r in grid]) if grid else ():
        start = [r[i] for r, i in zip(grid, origin)]
        piece = array[tuple(slice(s, s + b) for s, b in zip(start, block))]
        body = np.ascontiguousarray(piece, dtype=dtype.newbyteorder(">")).tobytes()
        if compression == "gzip":
            body = gzip.compress(body)
        elif compression != "raw":
            raise NeuropilError(f"{where}: writing N5 with '{compression}' compression is not supported (raw, gzip)")
        header = struct.pack(f">HH{piece.ndim}I", 0, piece.ndim, *reversed(piece.shape))
        path = temporary.joinpath(*(str(s // b) for s, b in zip(reversed(start), reversed(block))))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(header + body)
