"""What every format's reader shares: the open-array interface, read errors, region shapes, chunk grids."""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError

READ_ERRORS = (OSError, ValueError, KeyError, EOFError, RuntimeError, TypeError, struct.error, zlib.error)
"""Errors that libraries raise for unreadable, truncated or malformed files."""

COMPLETE_ATTRIBUTE = "neuropil_complete"
"""The attribute of the zarr arrays neuropil writes blockwise: false while the job writes the
array, true once every block is written. Reading an array marked complete looks at none of its
chunks; reading one marked false is an error unless missing chunks are allowed."""


class Backend:
    """One open array: ``shape``, ``dtype``, ``chunks``, metadata, and ``read(region)``.

    ``voxel_size`` and ``offset`` are in nanometres, z-first, or None where the file
    stores none; ``voxel_size_source`` and ``offset_source`` say which metadata each
    came from (:mod:`neuropil.io.metadata`). ``attributes`` are the array's own metadata
    as JSON-like values (None where a format has none).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...] | None = None
    voxel_size: tuple[float, ...] | None = None
    offset: tuple[float, ...] | None = None
    voxel_size_source: str | None = None
    offset_source: str | None = None
    attributes: dict | None = None

    unfinished: bool = False
    """True for an array whose writer recorded that it has not finished writing it."""

    def read(self, region: tuple[slice, ...]) -> NDArray:  # pragma: no cover - interface
        raise NotImplementedError

    def missing_chunks(self, region: tuple[slice, ...]) -> list[tuple[int, ...]]:
        """Grid indices of the storage chunks that ``region`` reads and that are not stored.

        Empty for formats that store every voxel (HDF5, TIFF) or cannot tell.
        """
        return []

    def close(self) -> None:
        pass


def require_exists(path: Path) -> None:
    if not path.exists():
        raise NeuropilError(f"{path}: no such file or folder")


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def region_shape(region: tuple[slice, ...]) -> tuple[int, ...]:
    return tuple(len(range(s.start, s.stop, s.step)) for s in region)


def region_chunks(region: tuple[slice, ...], chunks: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    """Grid indices of the chunks of shape ``chunks`` holding the voxels that a non-empty ``region`` selects."""
    axes: list[Sequence[int]] = []
    for axis, size in zip(region, chunks):
        if axis.step in (None, 1):
            axes.append(range(axis.start // size, (axis.stop - 1) // size + 1))
        else:
            axes.append(sorted({i // size for i in range(axis.start, axis.stop, axis.step)}))
    return itertools.product(*axes)


def spatial_tail(values: tuple[float, ...] | None, ndim: int) -> tuple[float, ...] | None:
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
