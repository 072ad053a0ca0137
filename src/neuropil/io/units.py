"""Length units of voxel sizes and offsets, converted to nanometres in one place.

Every reader passes the unit its format names (an OME-Zarr axis ``unit``, an N5
``pixelResolution`` ``unit`` or ``units`` list, a zarr or HDF5 ``units`` attribute, an
ImageJ TIFF ``unit``) through :func:`to_nm`. A unit is matched after Unicode
compatibility folding and case folding, so the micro sign ``µm`` (U+00B5) and the Greek
small letter mu ``μm`` (U+03BC) are the same micrometre, and ImageJ's escaped
``\\u00B5m`` is read as ``µm``. An unknown unit raises instead of being guessed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from neuropil.errors import NeuropilError

MICRO = "\u03bc"
"""GREEK SMALL LETTER MU, which the MICRO SIGN (U+00B5) folds to (NFKC)."""

LENGTH_UNITS_NM: dict[str, float] = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "nanometers": 1.0,
    "nanometres": 1.0,
    "um": 1e3,
    MICRO + "m": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "micrometers": 1e3,
    "micrometres": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "millimeters": 1e6,
    "millimetres": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "centimetre": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "meters": 1e9,
    "metres": 1e9,
    "\u00e5": 0.1,  # Å (U+00C5) and the ANGSTROM SIGN (U+212B) fold to å
    "angstrom": 0.1,
    "angstroms": 0.1,
    "\u00e5ngstr\u00f6m": 0.1,
    "pm": 1e-3,
    "picometer": 1e-3,
    "picometre": 1e-3,
}
"""Nanometres per unit, keyed by the folded name (see :func:`canonical_unit`)."""

PIXEL_UNITS = frozenset({"pixel", "pixels", "px"})
"""Names that say a file stores no physical size (an uncalibrated ImageJ image)."""

_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def canonical_unit(unit: str) -> str:
    """The folded form of a unit name: ``\\uXXXX`` escapes decoded, NFKC, stripped, case-folded.

    The micro sign (U+00B5) and ImageJ's escaped ``\\u00B5`` both become the Greek mu (U+03BC);
    ``Å`` (U+00C5) and the angstrom sign (U+212B) both become ``å``.
    """
    text = _ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), str(unit))
    return unicodedata.normalize("NFKC", text).strip().casefold()


def unit_to_nm(unit: str, *, source: object) -> float:
    """Nanometres in one ``unit``.

    Parameters
    ----------
    unit : str
        A length unit as a file names it: ``nm``, ``um``, ``µm``, ``μm``, ``micron``,
        ``micrometer``, ``Å``, ``angstrom``, ``mm``, ``m``, ...
    source : object
        The file (or address and attribute) the unit was read from, named in the error.

    Raises
    ------
    NeuropilError
        When the unit is not a known length unit.
    """
    factor = LENGTH_UNITS_NM.get(canonical_unit(unit))
    if factor is None:
        raise NeuropilError(
            f"{source}: unknown length unit '{unit}' in the voxel size metadata; "
            "expected nm, um (µm, μm, micron, micrometer), Å (angstrom), mm or m"
        )
    return factor


def axis_units(stored) -> list[str] | None:
    """A per-axis ``units`` attribute (a list or array of str or bytes, as funlib writes it) as a list of str.

    A single string is not a per-axis list: in the CF and xarray conventions a ``units``
    string names the unit of the array's values, so it is left alone (None).
    """
    if stored is None or isinstance(stored, (str, bytes)):
        return None
    items = np.asarray(stored, dtype=object).reshape(-1).tolist()
    return [item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item) for item in items]


def to_nm(values, unit: str | Sequence[str] | None = "nm", *, source: object) -> tuple[float, ...] | None:
    """Convert a metadata vector of lengths to nanometres.

    Parameters
    ----------
    values : sequence of float or None
        Lengths as stored (a voxel size or an offset), in the file's axis order.
    unit : str or sequence of str or None
        One unit for all values, or one per value. None or an empty string means the
        format's own default: nanometres.
    source : object
        The file (or address and attribute) the values were read from, named in errors.

    Returns
    -------
    tuple of float or None
        The lengths in nanometres, in the same order; None when ``values`` is None or
        not a vector of numbers.

    Raises
    ------
    NeuropilError
        When a unit is unknown or the number of units does not match the number of values.
    """
    if values is None:
        return None
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    if unit is None or isinstance(unit, str):
        units = [unit] * len(array)
    else:
        units = [str(u) for u in unit]
        if len(units) != len(array):
            raise NeuropilError(f"{source}: {len(units)} units {units} for {len(array)} values {array.tolist()}")
    factors = [unit_to_nm(u, source=source) if u else 1.0 for u in units]
    return tuple(float(v) * f for v, f in zip(array, factors))
