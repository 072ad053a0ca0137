"""Affinity inputs of the segmentation stages: checked affinities, and affinities from a boundary map.

Nearest-neighbour affinities are ``(c, z, y, x)``, channel ``c`` relating voxel ``p``
and ``p`` minus one voxel along axis ``c`` (1 = same object). A model may predict
more channels (long-range offsets, :func:`neuropil.conventions.check_offsets`); they
follow the nearest neighbours, so the segmentation stages read channels 0-2 and
leave the others to the methods that ask for them. A boundary map is ``(z, y, x)``
(1 = boundary, like gala's p1).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from neuropil.conventions import AFFINITY_DTYPE
from neuropil.errors import NeuropilError

RANGE_TOLERANCE = 1e-6
"""How far outside [0, 1] affinities and boundary values may lie (float noise) and still be accepted."""


def check_unit_range(values: NDArray, what: str) -> None:
    """A one-line error unless every value of ``values`` lies in [0, 1] (within :data:`RANGE_TOLERANCE`).

    Parameters
    ----------
    values : ndarray of float
    what : str
        What the values are (``"affinities"``, ``"boundary map"``), for the message.

    Raises
    ------
    NeuropilError
        A NaN or infinite value, or values below 0 or above 1; the message gives the
        minimum and maximum found.
    """
    if values.size == 0:
        return
    low, high = float(np.min(values)), float(np.max(values))  # NaN if any value is NaN
    if np.isnan(low) or np.isnan(high):
        raise NeuropilError(f"{what} contain NaN values; they must lie in [0, 1]")
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise NeuropilError(f"{what} must lie in [0, 1], found values from {low:g} to {high:g}")


def affinities_from_boundaries(boundaries: NDArray, *, combine: str = "max") -> NDArray[np.float32]:
    """Nearest-neighbour affinities ``1 - max(b[p], b[p + offset])`` from a boundary map.

    Parameters
    ----------
    boundaries : (z, y, x) ndarray of float
        Boundary probability in [0, 1] (1 = boundary).
    combine : {"max", "mean"}
        How the two voxels' boundary values make one: the larger (a voxel watershed's
        flooding level) or their mean (keeps both sides of a contact).

    Returns
    -------
    affinities : (ndim, z, y, x) ndarray of float32
        Channel ``c`` relates ``p`` and ``p`` minus one voxel along axis ``c``; 0 in
        the first plane of each axis, where there is no such neighbour.
    """
    boundaries = np.asarray(boundaries)
    if boundaries.ndim < 2:
        raise NeuropilError(f"a boundary map needs 2 or 3 dimensions, not shape {boundaries.shape}")
    if not np.issubdtype(boundaries.dtype, np.floating):
        raise NeuropilError(f"boundary map must be float in [0, 1], not {boundaries.dtype}")
    if not np.isfinite(boundaries).all():
        raise NeuropilError("boundary map contains NaN or infinite values")
    boundaries = boundaries.astype(AFFINITY_DTYPE, copy=False)
    affinities = np.zeros((boundaries.ndim, *boundaries.shape), dtype=AFFINITY_DTYPE)
    for axis in range(boundaries.ndim):
        here = shifted_slices(boundaries.ndim, axis, 1)
        there = shifted_slices(boundaries.ndim, axis, 0)
        if combine == "max":
            affinities[axis][here] = 1 - np.maximum(boundaries[here], boundaries[there])
        elif combine == "mean":
            affinities[axis][here] = 1 - (boundaries[here] + boundaries[there]) / 2
        else:
            raise NeuropilError(f"combine must be 'max' or 'mean', not {combine!r}")
    return affinities


def shifted_slices(ndim: int, axis: int, start: int) -> tuple[slice, ...]:
    """Slices selecting voxels ``p`` (start 1) or ``p - 1`` along ``axis`` (start 0)."""
    index = [slice(None)] * ndim
    index[axis] = slice(1, None) if start else slice(None, -1)
    return tuple(index)


def check_affinities(affinities: NDArray) -> NDArray[np.float32]:
    """The nearest-neighbour channels of affinities, checked, as contiguous float32.

    Parameters
    ----------
    affinities : (c, z, y, x) or (c, y, x) ndarray of float
        At least one channel per axis; channels ``0..ndim-1`` are the nearest neighbours,
        further channels (long-range ones) are dropped.

    Returns
    -------
    (ndim, z, y, x) ndarray of float32
    """
    affinities = np.asarray(affinities)
    if affinities.ndim not in (3, 4) or affinities.shape[0] < affinities.ndim - 1:
        raise NeuropilError(
            f"affinities must be (c, z, y, x) with at least one channel per axis, not shape {affinities.shape}"
        )
    if not np.issubdtype(affinities.dtype, np.floating):
        raise NeuropilError(f"affinities must be float in [0, 1], not {affinities.dtype}")
    if 0 in affinities.shape[1:]:
        raise NeuropilError(f"affinities have an empty axis: shape {affinities.shape}")
    affinities = np.ascontiguousarray(affinities[: affinities.ndim - 1], dtype=AFFINITY_DTYPE)
    check_unit_range(affinities, "affinities")
    return affinities


def check_boundaries(boundaries: NDArray) -> None:
    """A one-line error unless ``boundaries`` is a float boundary map with every value in [0, 1] (:func:`check_unit_range`)."""
    boundaries = np.asarray(boundaries)
    if not np.issubdtype(boundaries.dtype, np.floating):
        raise NeuropilError(f"boundary map must be float in [0, 1], not {boundaries.dtype}")
    check_unit_range(boundaries, "boundary map values")


def mean_affinity(affinities: NDArray[np.float32]) -> NDArray[np.float32]:
    """Mean affinity of each voxel to its (up to 2 * ndim) neighbours."""
    ndim = affinities.ndim - 1
    total = np.zeros(affinities.shape[1:], dtype=np.float32)
    count = np.zeros(affinities.shape[1:], dtype=np.float32)
    for axis in range(ndim):
        here = shifted_slices(ndim, axis, 1)
        there = shifted_slices(ndim, axis, 0)
        total[here] += affinities[axis][here]
        count[here] += 1
        total[there] += affinities[axis][here]
        count[there] += 1
    return (total / np.maximum(count, 1)).astype(AFFINITY_DTYPE, copy=False)


def as_affinities(affinities_or_boundaries: NDArray) -> NDArray[np.float32]:
    """Nearest-neighbour affinities ``(3, z, y, x)`` from a 4-D affinity array (its channels 0-2,
    :func:`check_affinities`) or a 3-D boundary map, checked."""
    array = np.asarray(affinities_or_boundaries)
    if array.ndim == 3:
        check_boundaries(array)
        # the mean keeps the boundary values of both sides of each contact
        return affinities_from_boundaries(array, combine="mean")
    if array.ndim == 4:
        return check_affinities(array)
    raise NeuropilError(
        f"expected affinities (c, z, y, x) or a boundary map (z, y, x), not an array of shape {array.shape}"
    )
