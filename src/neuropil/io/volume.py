"""The lazily read :class:`Volume` and the format-independent entry points.

:func:`open_volume`, :func:`read_volume` and :func:`write_volume` pick the reader or
writer of an address's format (:mod:`neuropil.io.hdf5`, :mod:`neuropil.io.zarr`,
:mod:`neuropil.io.n5`, :mod:`neuropil.io.tiff`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError
from neuropil.io.addresses import VolumeAddress, parse_address
from neuropil.io.backend import READ_ERRORS, Backend, first_line, region_shape, require_exists
from neuropil.io.hdf5 import Hdf5Backend, is_neuroproof_groundtruth, write_hdf5
from neuropil.io.metadata import VOXEL_SIZE_RTOL
from neuropil.io.n5 import N5Backend, write_n5
from neuropil.io.tiff import SlicesBackend, TiffBackend, write_tiff
from neuropil.io.zarr import ZarrBackend, is_ome_zarr, write_ome_zarr, write_zarr

logger = logging.getLogger(__name__)

GIVEN = "given"
"""The :attr:`Volume.voxel_size_source` of a voxel size the file does not store, given to :func:`open_volume`."""

_MISSING_CHUNKS_ALLOWED = contextvars.ContextVar("neuropil_missing_chunks_allowed", default=False)


@contextlib.contextmanager
def allowing_missing_chunks(allowed: bool = True) -> Iterator[None]:
    """Within this block, volumes opened without ``allow_missing_chunks`` read missing chunks as the fill value.

    For callers that open volumes through other functions, as ``neuropil data info
    --allow-missing-chunks`` does; ``allowed=False`` keeps the default.
    """
    token = _MISSING_CHUNKS_ALLOWED.set(bool(allowed))
    try:
        yield
    finally:
        _MISSING_CHUNKS_ALLOWED.reset(token)


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


def _open_backend(where: VolumeAddress) -> Backend:
    require_exists(where.path)
    try:
        if where.kind == "hdf5":
            return Hdf5Backend(where)
        if where.kind == "zarr":
            return N5Backend(where) if where.is_n5 else ZarrBackend(where)
        if where.kind == "tiff":
            return TiffBackend(where)
        return SlicesBackend(where)
    except NeuropilError:
        raise
    except READ_ERRORS as error:
        raise NeuropilError(f"{where}: cannot read: {first_line(error)}") from error


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
    voxel_size_source : str or None
        Where the voxel size came from, as a noun phrase: the metadata convention
        (``the HDF5 attribute "resolution"``, ``the OME-Zarr 0.4 multiscales (dataset "0"
        scale)``, ...; see :mod:`neuropil.io.metadata`), :data:`GIVEN` for the
        ``voxel_size`` given to :func:`open_volume`, None when unknown.
    offset : tuple of float or None
        Position of voxel 0 in nanometres, z-first, where the file stores one.
    offset_source : str or None
        Where the offset came from, like ``voxel_size_source``.
    chunks : tuple of int or None
        The storage chunk shape; reading whole chunks is fastest.
    attributes : dict
        The array's own metadata (HDF5 dataset attributes, zarr attributes, N5
        ``attributes.json``; empty for TIFF and slices), e.g. ``neuropil`` as
        :func:`neuropil.predict.predict_file` writes it.

    allow_missing_chunks : bool
        Whether a read whose region holds chunks that are not stored (zarr, N5) reads them
        as the fill value rather than raising.

    A volume holds an open file; use it as a context manager or call :meth:`close`.
    It pickles (without the handle) so data-loader workers can each reopen it.
    """

    def __init__(
        self,
        address: str | os.PathLike | VolumeAddress,
        *,
        voxel_size: Sequence[float] | None = None,
        mapping: str | os.PathLike | NDArray | None = None,
        allow_missing_chunks: bool | None = None,
    ):
        self.address = parse_address(address)
        self.allow_missing_chunks = (
            _MISSING_CHUNKS_ALLOWED.get() if allow_missing_chunks is None else bool(allow_missing_chunks)
        )
        self._backend: Backend | None = None
        if mapping is None and is_neuroproof_groundtruth(self.address):
            logger.info("%s: mapping supervoxels in 'stack' to bodies with 'transforms'", self.address)
            mapping = f"{self.address.path}:transforms"
            self.address = VolumeAddress(self.address.path, "stack", "hdf5")
        self._mapping = _load_mapping(mapping) if mapping is not None else None
        backend = self._open()
        self.shape: tuple[int, ...] = backend.shape
        self.dtype: np.dtype = np.dtype(backend.dtype).newbyteorder("=")
        self.chunks = backend.chunks
        self.offset = backend.offset
        self.offset_source: str | None = backend.offset_source
        self.attributes: dict = dict(backend.attributes or {})
        stored, source = backend.voxel_size, backend.voxel_size_source
        if voxel_size is not None:
            given = tuple(float(v) for v in voxel_size)
            if len(given) != len(self.shape) and not (len(self.shape) == 4 and len(given) == 3):
                raise NeuropilError(
                    f"{self.address}: voxel_size {given} has {len(given)} entries for {len(self.shape)} axes"
                )
            if stored is not None and not np.allclose(stored, given, rtol=VOXEL_SIZE_RTOL):
                raise NeuropilError(
                    f"{self.address}: voxel size mismatch: the file says {stored} nm ({source}), given {given} nm"
                )
            if stored is None:
                stored, source = given, GIVEN
        self.voxel_size: tuple[float, ...] | None = stored
        self.voxel_size_source: str | None = source

    def _open(self) -> Backend:
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
        if any(n == 0 for n in region_shape(region)):
            data = np.zeros(region_shape(region), dtype=self.dtype)
        else:
            backend = self._open()
            if not self.allow_missing_chunks:
                self._check_chunks(backend, region)
            try:
                data = np.asarray(backend.read(region))
            except NeuropilError:
                raise
            except READ_ERRORS as error:
                raise NeuropilError(f"{self.address}: cannot read: {first_line(error)}") from error
            data = data.astype(self.dtype, copy=False)
        if self._mapping is not None:
            data = _apply_mapping(data, *self._mapping)
        return data.reshape([n for axis, n in enumerate(data.shape) if axis not in dropped])

    def _check_chunks(self, backend: Backend, region: tuple[slice, ...]) -> None:
        if backend.unfinished:
            raise NeuropilError(
                f"{self.address}: unfinished: the blockwise job writing it has not finished (run it again to finish "
                "it); pass --allow-missing-chunks to read it as it is"
            )
        try:
            missing = backend.missing_chunks(region)
        except READ_ERRORS as error:
            raise NeuropilError(f"{self.address}: cannot list its chunks: {first_line(error)}") from error
        if missing:
            raise NeuropilError(
                f"{self.address}: {len(missing)} chunk(s) missing in the region read (e.g. chunk {missing[0]}); "
                "pass --allow-missing-chunks to read them as the fill value"
            )

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
    allow_missing_chunks: bool | None = None,
) -> Volume:
    """Open the array at ``address`` lazily.

    Parameters
    ----------
    address : str or path
        See :mod:`neuropil.io`.
    voxel_size : tuple of float, optional
        Nanometres, z-first, used when the file stores none; a value that disagrees
        with the file's raises.
    mapping : address or (n, 2) ndarray, optional
        A ``(supervoxel, body)`` table applied to every read (NeuroProof ground truth).
        A ``groundtruth.h5`` with ``stack`` and ``transforms`` opened without a key
        gets its ``transforms`` applied without asking.
    allow_missing_chunks : bool, optional
        zarr and N5 read a chunk that is not stored as the fill value. By default (False,
        or what :func:`allowing_missing_chunks` sets) a read whose region holds such chunks
        raises, and so does any read of an array whose blockwise job has not finished;
        True reads them as the fill value. A finished blockwise output of neuropil is
        marked complete and read without a look at its chunks; for other arrays each read
        checks which of its region's chunks are stored (neuropil's own writers store every
        chunk, those of fill values too).

    Raises
    ------
    NeuropilError
        When the file, the key or the slices are missing, unreadable or truncated, the
        file's voxel size metadata names an unknown length unit, or two of its metadata
        conventions state voxel sizes (or offsets) that disagree; on reading, for chunks
        that are missing or unreadable.
    """
    return Volume(address, voxel_size=voxel_size, mapping=mapping, allow_missing_chunks=allow_missing_chunks)


def read_volume(address: str | os.PathLike | VolumeAddress, *, allow_missing_chunks: bool | None = None) -> NDArray:
    """Read the whole array at ``address`` into memory.

    ``allow_missing_chunks``: see :func:`open_volume`.

    Raises
    ------
    NeuropilError
        When the file, the key or the slices are missing or unreadable, or chunks are missing.
    """
    with open_volume(address, allow_missing_chunks=allow_missing_chunks) as volume:
        return volume.read()


def write_volume(
    address: str | os.PathLike,
    array: NDArray,
    *,
    voxel_size: tuple[float, ...] | None = None,
    chunks: tuple[int, ...] | None = None,
    compression: str | None = "gzip",
    zarr_format: int | None = None,
    attributes: dict | None = None,
    labels: bool | None = None,
) -> VolumeAddress:
    """Write ``array`` to ``address`` atomically: to a temporary name first, then renamed.

    HDF5 files keep their other datasets; the dataset is replaced in a copy of the file.
    ``voxel_size`` (nm, z-first) is stored as the ``resolution`` attribute (HDF5, zarr;
    x-first in N5, as N5 tools expect), and in a TIFF as ImageJ calibration or in its
    description (:func:`neuropil.io.tiff.write_tiff`).

    A container named ``*.ome.zarr`` (``name.ome.zarr``: the container is the image;
    ``name.ome.zarr/key``: an image in a group of it) receives an OME-Zarr multiscale
    image that viewers read directly (:func:`neuropil.io.zarr.write_ome_zarr`, levels
    down to :data:`~neuropil.io.zarr.SMALLEST_LEVEL` voxels): ``voxel_size`` is each
    level's ``scale`` and must be given; ``attributes`` are stored on the image's group.

    Parameters
    ----------
    compression : {"gzip", "lzf", None}
        HDF5 filter (N5: gzip or raw). zarr uses its default codec.
    zarr_format : {2, 3}, optional
        zarr format version; zarr's default (3) when None, except for OME-Zarr: 2
        (OME-Zarr 0.4) when None.
    attributes : dict, optional
        Metadata (name -> JSON-like value) stored on the array (HDF5, zarr, N5), read
        back as :attr:`Volume.attributes`; a TIFF cannot hold them (a warning says so).
    labels : bool, optional
        OME-Zarr only: whether ``array`` holds ids (a segmentation, a mask), whose coarser
        levels take the most frequent id of each block and which is marked as a label
        image, or an image (mean of each block). None: ids for bool and for integers of
        more than 16 bits.
    """
    # An existing dir.zarr is a container, not a folder of slices: parse the address as given.
    where = parse_address(address)
    if where.kind == "slices":
        raise NeuropilError(f"{where.path}: writing a folder of slices is not supported; use .h5, .zarr or .tif")
    array = np.asarray(array)
    where.path.parent.mkdir(parents=True, exist_ok=True)
    if where.kind == "hdf5":
        write_hdf5(where, array, voxel_size=voxel_size, chunks=chunks, compression=compression, attributes=attributes)
    elif is_ome_zarr(where):
        if voxel_size is None:
            raise NeuropilError(f"{where}: OME-Zarr output needs a voxel size (nm) for its scale metadata")
        if labels is None:
            labels = array.dtype == bool or (np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize > 2)
        write_ome_zarr(
            where.path,
            array,
            voxel_size=voxel_size[-3:],
            levels=None,
            kind="labels" if labels else "image",
            chunks=chunks,
            zarr_format=3 if zarr_format == 3 else 2,
            attributes=attributes,
            key=where.key,
        )
    elif where.kind == "zarr" and where.is_n5:
        write_n5(
            where, array, voxel_size=voxel_size, chunks=chunks, compression=compression or "raw", attributes=attributes
        )
    elif where.kind == "zarr":
        write_zarr(where, array, voxel_size=voxel_size, chunks=chunks, zarr_format=zarr_format, attributes=attributes)
    else:
        if attributes:
            logger.warning("%s: a TIFF stores no attributes; %s not written", where, ", ".join(attributes))
        write_tiff(where, array, voxel_size=voxel_size)
    return where
