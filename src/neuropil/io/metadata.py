"""Voxel sizes and offsets as a file's metadata conventions state them, and where each came from.

A reader collects what each convention it knows states on one array (a :class:`Found`:
nanometres, z-first, and its source, e.g. ``the HDF5 attribute "resolution"``);
:func:`resolve` keeps the first of each kind after checking that the others agree. Two
conventions on one array that disagree are an error naming both, never a silent choice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from neuropil.errors import NeuropilError
from neuropil.io.backend import spatial_tail
from neuropil.io.units import to_nm

VOXEL_SIZE_RTOL = 1e-3
"""Voxel sizes that differ by less than this fraction agree (metadata stored as float32, or rounded)."""

OFFSET_ATOL_NM = 1e-3
"""Offsets that differ by less than this many nanometres agree."""


class Found(NamedTuple):
    """A voxel size or an offset as one metadata convention of an array states it."""

    nanometres: tuple[float, ...]
    """nm, z-first, matched to the array's axes (3 entries for a (c, z, y, x) array)."""
    source: str
    """Where it came from, as a noun phrase: ``the HDF5 attribute "resolution"``."""
    stored: object
    """The value as the file stores it (a list, a mapping), quoted in errors."""


class VoxelMetadata(NamedTuple):
    """An array's voxel size and offset (nm, z-first, or None) and where each came from (or None)."""

    voxel_size: tuple[float, ...] | None
    voxel_size_source: str | None
    offset: tuple[float, ...] | None
    offset_source: str | None


def attribute(
    attributes: Mapping,
    name: str,
    unit: str | Sequence[str] | None = None,
    *,
    ndim: int,
    source: str,
    where: object,
    reverse: bool = False,
) -> Found | None:
    """What the attribute ``name`` states, in nm and z-first.

    Parameters
    ----------
    attributes : mapping
        The array's attributes.
    name : str
        The attribute: a vector of lengths.
    unit : str or sequence of str or None
        One unit for all entries, or one per entry in the stored order (None: nm).
    ndim : int
        The array's number of axes (see :func:`neuropil.io.backend.spatial_tail`).
    source : str
        The attribute as :attr:`Found.source` names it.
    where : object
        The address, named in errors.
    reverse : bool
        The attribute is stored x-first (N5): entries and units are reversed.

    Returns
    -------
    Found or None
        None where the attribute is absent, not a vector of numbers, or of a length that
        matches no axes of the array.

    Raises
    ------
    NeuropilError
        An unknown unit, or a number of units that differs from the number of entries.
    """
    if name not in attributes:
        return None
    stored = attributes[name]
    try:
        values = np.asarray(stored, dtype=np.float64).reshape(-1).tolist()
    except (TypeError, ValueError):
        return None
    units = unit if unit is None or isinstance(unit, str) else list(unit)
    if reverse:
        values = values[::-1]
        units = units[::-1] if isinstance(units, list) else units
    nanometres = spatial_tail(to_nm(values, units, source=f"{where} ({name})"), ndim)
    return None if nanometres is None else Found(nanometres, source, stored)


def agreed(found: Sequence[Found], *, what: str, where: object, rtol: float = 0.0, atol: float = 0.0) -> Found | None:
    """The first of ``found`` (None when empty), once every other agrees with it.

    Raises
    ------
    NeuropilError
        When two disagree; the one-line message names both, their stored values and nm.
    """
    if not found:
        return None
    first = found[0]
    for other in found[1:]:
        same = len(other.nanometres) == len(first.nanometres) and np.allclose(
            other.nanometres, first.nanometres, rtol=rtol, atol=atol
        )
        if not same:
            raise NeuropilError(
                f"{where}: {what} metadata disagree: {describe(first)}, but {describe(other)} "
                f"({axis_names(len(first.nanometres))})"
            )
    return first


def resolve(sizes: Sequence[Found], offsets: Sequence[Found], *, where: object) -> VoxelMetadata:
    """The voxel size and offset that all of ``sizes`` and all of ``offsets`` agree on, with their sources.

    Raises
    ------
    NeuropilError
        When two voxel sizes (relative difference over :data:`VOXEL_SIZE_RTOL`) or two
        offsets (over :data:`OFFSET_ATOL_NM`) disagree.
    """
    size = agreed(sizes, what="voxel size", where=where, rtol=VOXEL_SIZE_RTOL)
    offset = agreed(offsets, what="offset", where=where, atol=OFFSET_ATOL_NM)
    return VoxelMetadata(
        None if size is None else size.nanometres,
        None if size is None else size.source,
        None if offset is None else offset.nanometres,
        None if offset is None else offset.source,
    )


def describe(found: Found) -> str:
    """``the HDF5 attribute "element_size_um" [0.05, 0.004, 0.004] says 50x4x4 nm``."""
    return f"{found.source} {stored_text(found.stored)} says {lengths_text(found.nanometres)} nm"


def lengths_text(values: Sequence[float]) -> str:
    """``40x4x4``: lengths joined by ``x``, each in its shortest form."""
    return "x".join(f"{float(v):g}" for v in values)


def axis_names(count: int) -> str:
    """The axes of a z-first vector of ``count`` entries: ``z y x``, ``c z y x``, ``y x``."""
    names = ["c", "z", "y", "x"]
    return " ".join(names[-count:]) if count <= len(names) else f"{count} axes"


def stored_text(value) -> str:
    """A stored metadata value, short: numbers in their shortest form, text quoted."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {stored_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(stored_text(item) for item in value) + "]"
    return str(value)
