"""Volume addresses, lazy volumes and readers/writers.

An address names one array:

- ``file.h5:key`` (also ``.hdf5``, ``.hdf``): an HDF5 dataset (gzip, LZF, ... as h5py
  reads them). CREMI files are HDF5: ``sample_A.hdf:volumes/raw``,
  ``sample_A.hdf:volumes/labels/neuron_ids``. gala's files hold one dataset
  ``stack`` and need no key. A NeuroProof ``groundtruth.h5`` (``stack`` holding
  supervoxels, ``transforms`` mapping them to bodies) read without a key gives bodies.
- ``dir.zarr/key`` or ``dir.zarr``: a zarr v2 or v3 array; an OME-Zarr multiscale
  group gives its first (finest) level, ``image.ome.zarr/1`` a coarser one.
- ``dir.n5/key``: an N5 dataset (raw, gzip, bzip2, xz, blosc, zstd blocks).
- ``stack.tif`` (``.tiff``): a multi-page TIFF (SNEMI3D's AC3/AC4 stacks).
- ``folder/``: a folder of TIFF or PNG slices, one per z, in natural order
  (``im2.png`` before ``im10.png``).

:func:`open_volume` opens an address lazily: it returns a :class:`Volume` with
``shape``, ``dtype``, ``voxel_size`` and ``offset`` (from the file's metadata where it
stores them) whose numpy-style slicing reads only the region asked for.
:func:`read_volume` reads a whole array, :func:`write_volume` writes one atomically.

Voxel size metadata read, converted to nanometres and z-first:

========== ===================================================================
HDF5       dataset attribute ``resolution`` (nm, z-first, as CREMI), else
           ``element_size_um`` (um, z-first, as ilastik and Fiji); ``offset`` (nm)
zarr       attribute ``resolution`` or ``voxel_size`` (nm, z-first, as funlib); ``offset``
OME-Zarr   ``multiscales`` axes units and the level's ``scale``/``translation``
N5         ``resolution`` (x-first) or ``pixelResolution`` (``dimensions`` x-first,
           ``unit``); ``offset`` (x-first)
TIFF       ImageJ ``spacing``, ``unit`` and the X/Y resolution tags
========== ===================================================================
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
import os
import re
import shutil
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError
from neuropil.files import remove_path, swap_in

logger = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
CONTAINER_SUFFIXES = (".zarr", ".n5")
TIFF_SUFFIXES = (".tif", ".tiff")
SLICE_SUFFIXES = (".tif", ".tiff", ".png")

# Errors that libraries raise for unreadable, truncated or malformed files.
_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, RuntimeError, TypeError, struct.error, zlib.error)

_UNIT_TO_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "\u00b5m": 1e3,
    "micron": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "angstrom": 0.1,
    "pm": 1e-3,
    "picometer": 1e-3,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
}


@dataclass(frozen=True)
class VolumeAddress:
    """A parsed address: a file or folder ``path`` plus an optional ``key`` inside it."""

    path: Path
    key: str | None
    kind: str
    """One of ``hdf5``, ``zarr`` (zarr and N5 containers), ``tiff``, ``slices``."""

    def __str__(self) -> str:
        if self.key is None:
            return str(self.path)
        separator = ":" if self.kind == "hdf5" else "/"
        return f"{self.path}{separator}{self.key}"

    @property
    def is_n5(self) -> bool:
        """Whether the container is N5 (by suffix, or by an N5 root ``attributes.json``)."""
        if self.kind != "zarr":
            return False
        if self.path.suffix.lower() == ".n5":
            return True
        attributes = self.path / "attributes.json"
        return attributes.is_file() and not (self.path / ".zgroup").exists() and not (self.path / "zarr.json").exists()


def parse_address(address: str | os.PathLike) -> VolumeAddress:
    """Split an address into path, key and kind (see the module docstring)."""
    if isinstance(address, VolumeAddress):
        return address
    text = os.fspath(address)
    lowered = text.lower()
    for suffix in HDF5_SUFFIXES:
        position = lowered.find(suffix + ":")
        if position >= 0:
            end = position + len(suffix)
            return VolumeAddress(Path(text[:end]), text[end + 1 :].strip("/") or None, "hdf5")
        if lowered.endswith(suffix):
            return VolumeAddress(Path(text), None, "hdf5")
    for suffix in CONTAINER_SUFFIXES:
        match = re.search(re.escape(suffix) + r"(/|$)", lowered)
        if match:
            end = match.start() + len(suffix)
            return VolumeAddress(Path(text[:end]), text[end:].strip("/") or None, "zarr")
    if lowered.endswith(TIFF_SUFFIXES):
        return VolumeAddress(Path(text), None, "tiff")
    path = Path(text)
    if path.is_dir():
        return VolumeAddress(path, None, "slices")
    raise NeuropilError(
        f"cannot tell the format of '{text}': expected file.h5:key, dir.zarr/key, dir.n5/key, stack.tif "
        "or a folder of slices"
    )


def natural_key(name: str) -> list:
    """Sort key that orders ``im2.png`` before ``im10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def slice_files(folder: Path) -> list[Path]:
    """The TIFF/PNG slices of a folder in natural order."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SLICE_SUFFIXES]
    if not files:
        raise NeuropilError(f"{folder}: folder holds no .tif or .png slices")
    return sorted(files, key=lambda p: natural_key(p.name))


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise NeuropilError(f"{path}: no such file or folder")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# ----------------------------------------------------------------------------- indexing


def _normalize_index(index, shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[int, ...]]:
    """Turn a numpy-style basic index into one ``slice(start, stop, step)`` per axis.

    Returns the slices (step > 0, start <= stop) and the axes indexed by an integer,
    to be dropped from the result.
    """
    if not isinstance(index, tuple):
        index = (index,)
    if sum(item is Ellipsis for item in index) > 1:
        raise IndexError("an index can only have a single ellipsis")
    if Ellipsis in index:
        position = index.index(Ellipsis)
        fill = len(shape) - (len(index) - 1)
        index = index[:position] + (slice(None),) * fill + index[position + 1 :]
    if len(index) > len(shape):
        raise IndexError(f"too many indices for a volume of {len(shape)} axes")
    index = index + (slice(None),) * (len(shape) - len(index))
    slices, dropped = [], []
    for axis, (item, length) in enumerate(zip(index, shape)):
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            position = int(item) + (length if item < 0 else 0)
            if not 0 <= position < length:
                raise IndexError(f"index {item} is out of bounds for axis {axis} with size {length}")
            slices.append(slice(position, position + 1, 1))
            dropped.append(axis)
        elif isinstance(item, slice):
            start, stop, step = item.indices(length)
            if step <= 0:
                raise IndexError("volumes support only positive slice steps")
            slices.append(slice(start, max(start, stop), step))
        else:
            raise IndexError(f"volumes support integers and slices, not {type(item).__name__}")
    return tuple(slices), tuple(dropped)


def _region_shape(region: tuple[slice, ...]) -> tuple[int, ...]:
    return tuple(len(range(s.start, s.stop, s.step)) for s in region)


# ----------------------------------------------------------------------------- metadata


def _to_nm(values, unit: str | None = "nm") -> tuple[float, ...] | None:
    if values is None:
        return None
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    factor = _UNIT_TO_NM.get(str(unit).strip().lower(), None) if unit else 1.0
    if factor is None:
        logger.warning("unknown length unit '%s'; taking the values as nanometres", unit)
        factor = 1.0
    return tuple(float(v) * factor for v in array)


def _spatial_tail(values: tuple[float, ...] | None, ndim: int) -> tuple[float, ...] | None:
    """Match a metadata vector to the array's axes (CREMI stores 3 values for 3 axes).

    A channels-first ``(c, z, y, x)`` array (affinities) keeps its 3 spatial values.
    """
    if values is None or len(values) == 0:
        return None
    if len(values) == ndim or (ndim == 4 and len(values) == 3):
        return values
    if len(values) > ndim:
        return values[-ndim:]
    return None


# ----------------------------------------------------------------------------- backends


class _Backend:
    """One open array: ``shape``, ``dtype``, ``chunks``, metadata, and ``read(region)``."""

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...] | None = None
    voxel_size: tuple[float, ...] | None = None
    offset: tuple[float, ...] | None = None

    def read(self, region: tuple[slice, ...]) -> NDArray:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Hdf5Backend(_Backend):
    def __init__(self, where: VolumeAddress):
        import h5py

        self.file = h5py.File(where.path, "r")
        key = where.key
        if key is None:
            datasets = [name for name, item in self.file.items() if isinstance(item, h5py.Dataset)]
            if len(datasets) != 1:
                keys = sorted(self.file.keys())
                self.file.close()
                raise NeuropilError(f"{where.path}: name a dataset as file.h5:key; it holds {keys}")
            key = datasets[0]
        if key not in self.file or not isinstance(self.file[key], h5py.Dataset):
            keys = sorted(self.file.keys())
            self.file.close()
            raise NeuropilError(f"{where.path}: no dataset '{key}'; it holds {keys}")
        self.dataset = self.file[key]
        self.shape = tuple(self.dataset.shape)
        self.dtype = self.dataset.dtype
        self.chunks = self.dataset.chunks
        attrs = self.dataset.attrs
        ndim = len(self.shape)
        if "resolution" in attrs:
            self.voxel_size = _spatial_tail(_to_nm(attrs["resolution"]), ndim)
        elif "element_size_um" in attrs:
            self.voxel_size = _spatial_tail(_to_nm(attrs["element_size_um"], "um"), ndim)
        if "offset" in attrs:
            self.offset = _spatial_tail(_to_nm(attrs["offset"]), ndim)

    def read(self, region):
        return self.dataset[region]

    def close(self):
        self.file.close()


def _zarr_attributes(node) -> dict:
    try:
        return dict(node.attrs)
    except (AttributeError, TypeError):
        return {}


def _ome_multiscales(attributes: dict) -> list | None:
    if "multiscales" in attributes:
        return attributes["multiscales"]
    ome = attributes.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]
    return None


def _ome_transform(
    multiscale: dict, dataset: dict
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None, list[int]]:
    """Voxel size and offset (nm) of one OME-Zarr level, and the indices of its space axes."""
    axes = multiscale.get("axes") or [{"name": name, "type": "space"} for name in "zyx"]
    axes = [
        {"name": axis, "type": "space" if axis in "zyx" else "other"} if isinstance(axis, str) else axis
        for axis in axes
    ]
    spatial = [i for i, axis in enumerate(axes) if axis.get("type", "space") == "space"]
    scale = np.ones(len(axes))
    translation = np.zeros(len(axes))
    for transforms in (dataset.get("coordinateTransformations", []), multiscale.get("coordinateTransformations", [])):
        # The level's transform applies first, then the multiscale's (OME-NGFF 0.4).
        for transform in transforms:
            if transform.get("type") == "scale":
                level_scale = np.asarray(transform["scale"], dtype=np.float64)
                translation = translation * level_scale
                scale = scale * level_scale
            elif transform.get("type") == "translation":
                translation = translation + np.asarray(transform["translation"], dtype=np.float64)
    factors = np.array([_UNIT_TO_NM.get(str(axes[i].get("unit", "nm")).lower(), 1.0) for i in spatial])
    return (
        tuple(float(v) for v in scale[spatial] * factors),
        tuple(float(v) for v in translation[spatial] * factors),
        spatial,
    )


class _ZarrBackend(_Backend):
    def __init__(self, where: VolumeAddress):
        import zarr

        try:
            root = zarr.open(str(where.path), mode="r")
        except (FileNotFoundError, ValueError, KeyError) as error:
            raise NeuropilError(f"{where.path}: not a zarr container ({_first_line(error)})") from error
        node, parent = root, None
        if where.key is not None:
            try:
                node = root[where.key]
            except KeyError:
                raise NeuropilError(f"{where.path}: no array '{where.key}'") from None
            parent_key = where.key.rsplit("/", 1)[0] if "/" in where.key else None
            parent = root[parent_key] if parent_key else root
        multiscales = _ome_multiscales(_zarr_attributes(node))
        level_path = None
        if not hasattr(node, "dtype") and multiscales:
            level_path = multiscales[0]["datasets"][0]["path"]
            parent, node = node, node[level_path]
        elif hasattr(node, "dtype") and parent is not None:
            multiscales = _ome_multiscales(_zarr_attributes(parent))
            level_path = where.key.rsplit("/", 1)[-1]
        if not hasattr(node, "shape") or not hasattr(node, "dtype"):
            raise NeuropilError(f"{where}: is a group, not an array; name the array as dir.zarr/key")
        self.array = node
        self.shape = tuple(node.shape)
        self.dtype = np.dtype(node.dtype)
        self.chunks = tuple(node.chunks)
        ndim = len(self.shape)
        if multiscales and level_path is not None:
            for multiscale in multiscales:
                for dataset in multiscale.get("datasets", []):
                    if dataset.get("path") == level_path:
                        voxel_size, offset, spatial = _ome_transform(multiscale, dataset)
                        if len(spatial) != ndim:
                            raise NeuropilError(
                                f"{where}: OME-Zarr level has axes {[a for a in multiscale.get('axes', [])]}; "
                                "only arrays with space axes only are supported"
                            )
                        self.voxel_size, self.offset = voxel_size, offset
                        return
        attributes = _zarr_attributes(node)
        for name in ("resolution", "voxel_size"):
            if name in attributes:
                self.voxel_size = _spatial_tail(_to_nm(attributes[name]), ndim)
                break
        if "offset" in attributes:
            self.offset = _spatial_tail(_to_nm(attributes["offset"]), ndim)

    def read(self, region):
        return np.asarray(self.array[region])


# ----------------------------------------------------------------------------- N5

_N5_CODECS = ("raw", "gzip", "bzip2", "xz", "blosc", "zstd")


def _n5_attributes(folder: Path) -> dict:
    path = folder / "attributes.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise NeuropilError(f"{path}: cannot read N5 attributes ({_first_line(error)})") from error


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


class _N5Backend(_Backend):
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
            raise NeuropilError(f"{where}: N5 attributes lack {_first_line(error)}") from error
        compression = attributes.get("compression")
        if compression is None:  # N5 before 1.0 named only the type
            compression = {"type": attributes.get("compressionType", "raw")}
        if compression.get("type", "raw") not in _N5_CODECS:
            raise NeuropilError(f"{where}: N5 compression '{compression.get('type')}' is not supported")
        self.compression = compression
        self.chunks = self.block
        ndim = len(self.shape)
        if "resolution" in attributes:
            self.voxel_size = _spatial_tail(_to_nm(list(reversed(attributes["resolution"]))), ndim)
        elif "pixelResolution" in attributes:
            pixel = attributes["pixelResolution"]
            if isinstance(pixel, dict):
                values, unit = pixel.get("dimensions"), pixel.get("unit", "nm")
            else:
                values, unit = pixel, "nm"
            self.voxel_size = _spatial_tail(_to_nm(list(reversed(values)), unit), ndim)
        if "offset" in attributes:
            self.offset = _spatial_tail(_to_nm(list(reversed(attributes["offset"]))), ndim)

    def _read_block(self, grid: tuple[int, ...]) -> NDArray | None:
        path = self.folder.joinpath(*(str(i) for i in reversed(grid)))
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
        dense = np.zeros([u - l for l, u in zip(lower, upper)], dtype=self.dtype.newbyteorder("="))
        if dense.size:
            ranges = [range(l // b, (u - 1) // b + 1) for l, u, b in zip(lower, upper, self.block)]
            for grid in np.ndindex(*[len(r) for r in ranges]):
                block_index = tuple(r[g] for r, g in zip(ranges, grid))
                block = self._read_block(block_index)
                if block is None:
                    continue
                origin = [i * b for i, b in zip(block_index, self.block)]
                source, target = [], []
                for axis, (o, l, u) in enumerate(zip(origin, lower, upper)):
                    begin, end = max(o, l), min(o + block.shape[axis], u)
                    source.append(slice(begin - o, end - o))
                    target.append(slice(begin - l, end - l))
                dense[tuple(target)] = block[tuple(source)]
        return dense[tuple(slice(None, None, s.step) for s in region)]


def _write_n5(where: VolumeAddress, array: NDArray, *, voxel_size, chunks, compression: str = "gzip") -> None:
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
    attributes = {
        "dimensions": list(reversed(array.shape)),
        "blockSize": [max(1, b) for b in reversed(block)],
        "dataType": dtype.name,
        "compression": {"type": compression, "useZlib": False} if compression == "gzip" else {"type": compression},
    }
    if voxel_size is not None:
        attributes["resolution"] = [float(v) for v in reversed(voxel_size)]
    try:
        _write_n5_blocks(temporary, array, attributes, block, compression, where)
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


# ----------------------------------------------------------------------------- TIFF and slices


class _TiffBackend(_Backend):
    """A multi-page TIFF; z slices are read page by page."""

    def __init__(self, where: VolumeAddress):
        import tifffile

        self.path = where.path
        self.file = tifffile.TiffFile(where.path)
        series = self.file.series[0]
        self.shape = tuple(series.shape)
        self.dtype = np.dtype(series.dtype)
        self.paged = len(self.shape) == 3 and len(series.pages) == self.shape[0]
        self.chunks = (1,) + self.shape[1:] if self.paged else None
        self.voxel_size = self._imagej_voxel_size()

    def _imagej_voxel_size(self) -> tuple[float, ...] | None:
        metadata = self.file.imagej_metadata
        if not metadata or len(self.shape) != 3 or "unit" not in metadata:
            return None
        unit = str(metadata["unit"]).replace("\\u00B5", "u").replace("micron", "um")
        factor = _UNIT_TO_NM.get(unit.lower())
        page = self.file.pages[0]
        try:
            x_numerator, x_denominator = page.tags["XResolution"].value
            y_numerator, y_denominator = page.tags["YResolution"].value
        except KeyError:
            return None
        if factor is None or not x_numerator or not y_numerator:
            return None
        spacing = float(metadata.get("spacing", 1.0))
        return (spacing * factor, y_denominator / y_numerator * factor, x_denominator / x_numerator * factor)

    def read(self, region):
        if not self.paged:
            return self.file.asarray()[region]
        pages = list(range(region[0].start, region[0].stop, region[0].step))
        if not pages:
            return np.zeros(_region_shape(region), dtype=self.dtype)
        data = self.file.asarray(key=pages)
        if len(pages) == 1:
            data = data[np.newaxis]
        return data[(slice(None),) + region[1:]]

    def close(self):
        self.file.close()


class _SlicesBackend(_Backend):
    """A folder of 2-D slices, read one file per z."""

    def __init__(self, where: VolumeAddress):
        import imageio.v3 as iio

        self.files = slice_files(where.path)
        properties = iio.improps(self.files[0])
        if len(properties.shape) != 2:
            raise NeuropilError(f"{self.files[0]}: slice has shape {properties.shape}; expected a grayscale 2-D image")
        self.shape = (len(self.files),) + tuple(properties.shape)
        self.dtype = np.dtype(properties.dtype)
        self.chunks = (1,) + self.shape[1:]

    def read(self, region):
        import imageio.v3 as iio

        planes = []
        for z in range(region[0].start, region[0].stop, region[0].step):
            plane = np.asarray(iio.imread(self.files[z]))
            if plane.shape != self.shape[1:]:
                raise NeuropilError(f"{self.files[z]}: slice has shape {plane.shape}, the first slice {self.shape[1:]}")
            planes.append(plane[region[1:]].astype(self.dtype, copy=False))
        if not planes:
            return np.zeros(_region_shape(region), dtype=self.dtype)
        return np.stack(planes)


# ----------------------------------------------------------------------------- Volume


def _open_backend(where: VolumeAddress) -> _Backend:
    _require_exists(where.path)
    try:
        if where.kind == "hdf5":
            return _Hdf5Backend(where)
        if where.kind == "zarr":
            return _N5Backend(where) if where.is_n5 else _ZarrBackend(where)
        if where.kind == "tiff":
            return _TiffBackend(where)
        return _SlicesBackend(where)
    except NeuropilError:
        raise
    except _READ_ERRORS as error:
        raise NeuropilError(f"{where}: cannot read: {_first_line(error)}") from error


def _is_neuroproof_groundtruth(where: VolumeAddress) -> bool:
    if where.kind != "hdf5" or where.key is not None:
        return False
    import h5py

    try:
        with h5py.File(where.path, "r") as file:
            return "stack" in file and "transforms" in file
    except OSError:
        return False


class Volume:
    """A lazily read array at an address: ``volume[z0:z1, y0:y1, x0:x1]`` reads only that region.

    Attributes
    ----------
    address : VolumeAddress
    shape : tuple of int
        ``(z, y, x)``.
    dtype : numpy.dtype
        In native byte order.
    voxel_size : tuple of float or None
        Nanometres, z-first: from the file's metadata where it stores one, else the
        ``voxel_size`` given to :func:`open_volume`, else None. A ``(c, z, y, x)``
        array's voxel size may have the 3 spatial entries only.
    offset : tuple of float or None
        Position of voxel 0 in nanometres, where the file stores one.
    chunks : tuple of int or None
        The storage chunk shape; reading whole chunks is fastest.

    A volume holds an open file; use it as a context manager or call :meth:`close`.
    It pickles (without the handle) so data-loader workers can each reopen it.
    """

    def __init__(
        self,
        address: str | os.PathLike | VolumeAddress,
        *,
        voxel_size: Sequence[float] | None = None,
        mapping: str | os.PathLike | NDArray | None = None,
    ):
        self.address = parse_address(address)
        self._backend: _Backend | None = None
        if mapping is None and _is_neuroproof_groundtruth(self.address):
            logger.info("%s: mapping supervoxels in 'stack' to bodies with 'transforms'", self.address)
            mapping = f"{self.address.path}:transforms"
            self.address = VolumeAddress(self.address.path, "stack", "hdf5")
        self._mapping = _load_mapping(mapping) if mapping is not None else None
        backend = self._open()
        self.shape: tuple[int, ...] = backend.shape
        self.dtype: np.dtype = np.dtype(backend.dtype).newbyteorder("=")
        self.chunks = backend.chunks
        self.offset = backend.offset
        stored = backend.voxel_size
        if voxel_size is not None:
            given = tuple(float(v) for v in voxel_size)
            if len(given) != len(self.shape) and not (len(self.shape) == 4 and len(given) == 3):
                raise NeuropilError(
                    f"{self.address}: voxel_size {given} has {len(given)} entries for {len(self.shape)} axes"
                )
            if stored is not None and not np.allclose(stored, given, rtol=1e-3):
                raise NeuropilError(f"{self.address}: voxel size mismatch: the file says {stored} nm, given {given} nm")
            stored = stored or given
        self.voxel_size: tuple[float, ...] | None = stored

    def _open(self) -> _Backend:
        if self._backend is None:
            self._backend = _open_backend(self.address)
        return self._backend

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> NDArray:
        region, dropped = _normalize_index(index, self.shape)
        if any(n == 0 for n in _region_shape(region)):
            data = np.zeros(_region_shape(region), dtype=self.dtype)
        else:
            try:
                data = np.asarray(self._open().read(region))
            except NeuropilError:
                raise
            except _READ_ERRORS as error:
                raise NeuropilError(f"{self.address}: cannot read: {_first_line(error)}") from error
            data = data.astype(self.dtype, copy=False)
        if self._mapping is not None:
            data = _apply_mapping(data, *self._mapping)
        return data.reshape([n for axis, n in enumerate(data.shape) if axis not in dropped])

    def read(self) -> NDArray:
        """The whole array in memory."""
        return self[...]

    def __array__(self, dtype=None, copy=None):
        data = self.read()
        return data if dtype is None else data.astype(dtype)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_backend"] = None
        return state

    def __repr__(self) -> str:
        return f"Volume('{self.address}', shape={self.shape}, dtype={self.dtype}, voxel_size={self.voxel_size})"


def _load_mapping(mapping) -> tuple[NDArray, NDArray]:
    table = np.asarray(read_volume(mapping) if isinstance(mapping, (str, os.PathLike)) else mapping)
    if table.ndim != 2 or table.shape[1] != 2:
        raise NeuropilError(
            f"{mapping if isinstance(mapping, (str, os.PathLike)) else 'mapping'}: "
            f"expected an (n, 2) table of (supervoxel, body), got shape {table.shape}"
        )
    order = np.argsort(table[:, 0], kind="stable")
    return table[order, 0], table[order, 1]


def _apply_mapping(data: NDArray, keys: NDArray, values: NDArray) -> NDArray:
    """Replace each id found in ``keys`` by its value; other ids stay as they are."""
    if keys.size == 0:
        return data
    position = np.clip(np.searchsorted(keys, data), 0, keys.size - 1)
    found = keys[position] == data
    return np.where(found, values[position].astype(data.dtype, copy=False), data)


def open_volume(
    address: str | os.PathLike | VolumeAddress,
    *,
    voxel_size: Sequence[float] | None = None,
    mapping: str | os.PathLike | NDArray | None = None,
) -> Volume:
    """Open the array at ``address`` lazily.

    Parameters
    ----------
    address : str or path
        See the module docstring.
    voxel_size : tuple of float, optional
        Nanometres, z-first, used when the file stores none; a value that disagrees
        with the file's raises.
    mapping : address or (n, 2) ndarray, optional
        A ``(supervoxel, body)`` table applied to every read (NeuroProof ground truth).
        A ``groundtruth.h5`` with ``stack`` and ``transforms`` opened without a key
        gets its ``transforms`` applied without asking.

    Raises
    ------
    NeuropilError
        When the file, the key or the slices are missing, unreadable or truncated.
    """
    return Volume(address, voxel_size=voxel_size, mapping=mapping)


def read_volume(address: str | os.PathLike | VolumeAddress) -> NDArray:
    """Read the whole array at ``address`` into memory.

    Raises
    ------
    NeuropilError
        When the file, the key or the slices are missing or unreadable.
    """
    with open_volume(address) as volume:
        return volume.read()


# ----------------------------------------------------------------------------- writing


def write_volume(
    address: str | os.PathLike,
    array: NDArray,
    *,
    voxel_size: tuple[float, ...] | None = None,
    chunks: tuple[int, ...] | None = None,
    compression: str | None = "gzip",
    zarr_format: int | None = None,
) -> VolumeAddress:
    """Write ``array`` to ``address`` atomically: to a temporary name first, then renamed.

    HDF5 files keep their other datasets; the dataset is replaced in a copy of the file.
    ``voxel_size`` (nm, z-first) is stored as the ``resolution`` attribute (HDF5, zarr;
    x-first in N5, as N5 tools expect).

    Parameters
    ----------
    compression : {"gzip", "lzf", None}
        HDF5 filter (N5: gzip or raw). zarr uses its default codec.
    zarr_format : {2, 3}, optional
        zarr format version; zarr's default (3) when None.
    """
    # An existing dir.zarr is a container, not a folder of slices: parse the address as given.
    where = parse_address(address)
    if where.kind == "slices":
        raise NeuropilError(f"{where.path}: writing a folder of slices is not supported; use .h5, .zarr or .tif")
    array = np.asarray(array)
    where.path.parent.mkdir(parents=True, exist_ok=True)
    if where.kind == "hdf5":
        _write_hdf5(where, array, voxel_size=voxel_size, chunks=chunks, compression=compression)
    elif where.kind == "zarr" and where.is_n5:
        _write_n5(where, array, voxel_size=voxel_size, chunks=chunks, compression=compression or "raw")
    elif where.kind == "zarr":
        _write_zarr(where, array, voxel_size=voxel_size, chunks=chunks, zarr_format=zarr_format)
    else:
        import tifffile

        temporary = where.path.with_name(where.path.name + ".partial.tif")
        try:
            tifffile.imwrite(temporary, array, photometric="minisblack")
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        os.replace(temporary, where.path)
    return where


def _write_hdf5(where: VolumeAddress, array: NDArray, *, voxel_size, chunks, compression) -> None:
    import h5py

    key = where.key or "data"
    temporary = where.path.with_name(where.path.name + ".partial")
    # A temporary left by a crashed write must not be appended to.
    temporary.unlink(missing_ok=True)
    try:
        if where.path.exists():
            shutil.copyfile(where.path, temporary)
        with h5py.File(temporary, "a") as file:
            if key in file:
                del file[key]
            chunked = chunks if chunks else (True if array.size > 1 else None)
            dataset = file.create_dataset(key, data=array, chunks=chunked, compression=compression if chunked else None)
            if voxel_size is not None:
                dataset.attrs["resolution"] = np.asarray(voxel_size, dtype=np.float64)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, where.path)


def _write_zarr(where: VolumeAddress, array: NDArray, *, voxel_size, chunks, zarr_format=None) -> None:
    import zarr

    key = where.key or "data"
    root = zarr.open_group(str(where.path), mode="a", zarr_format=zarr_format)
    temporary_key = f"{key}.partial"
    temporary = where.path / temporary_key
    remove_path(temporary)
    try:
        target = root.create_array(
            temporary_key, shape=array.shape, dtype=array.dtype, chunks=chunks or "auto", overwrite=True
        )
        target[...] = array
        if voxel_size is not None:
            target.attrs["resolution"] = [float(v) for v in voxel_size]
    except BaseException:
        remove_path(temporary)
        raise
    # zarr stores have no rename; move the finished array's folder into place.
    swap_in(temporary, where.path / key)


def write_ome_zarr(
    path: str | os.PathLike,
    array: NDArray,
    *,
    voxel_size: Sequence[float],
    levels: int = 1,
    kind: str = "image",
    chunks: tuple[int, ...] | None = None,
    zarr_format: int = 3,
) -> Path:
    """Write a ``(z, y, x)`` OME-Zarr multiscale image (NGFF 0.5 for zarr v3, 0.4 for v2).

    Level ``i`` halves y and x ``i`` times (and z while its voxels are the smallest),
    rescaled with :func:`neuropil.data.resample.resample` as ``kind``.
    """
    import zarr

    from neuropil.data.resample import resample

    path = Path(path)
    if array.ndim != 3 or len(voxel_size) != 3:
        raise NeuropilError(f"{path}: OME-Zarr writing takes a (z, y, x) array and a 3-entry voxel_size")
    temporary = path.with_name(path.name + ".partial")
    shutil.rmtree(temporary, ignore_errors=True)
    root = zarr.open_group(str(temporary), mode="w", zarr_format=zarr_format)
    datasets, level_array, level_size = [], np.asarray(array), np.asarray(voxel_size, dtype=np.float64)
    for level in range(levels):
        if level > 0:
            factor = np.where(level_size * 2 <= level_size.max() * 1.5, 2.0, 1.0)
            factor[1:] = 2.0
            target = level_size * factor
            level_array = resample(level_array, voxel_size=level_size, target_voxel_size=target, kind=kind)
            level_size = target
        node = root.create_array(str(level), shape=level_array.shape, dtype=level_array.dtype, chunks=chunks or "auto")
        node[...] = level_array
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [{"type": "scale", "scale": [float(v) for v in level_size]}],
            }
        )
    multiscale = {
        "axes": [{"name": name, "type": "space", "unit": "nanometer"} for name in "zyx"],
        "datasets": datasets,
        "name": path.stem,
    }
    if zarr_format == 3:
        root.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        root.attrs["multiscales"] = [{"version": "0.4", **multiscale}]
    if path.exists():
        shutil.rmtree(path)
    os.replace(temporary, path)
    return path
