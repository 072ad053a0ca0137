"""The one segmentation pipeline: affinities (or a boundary map) -> watershed fragments -> segments.

Every caller composes the stages here: ``neuropil segment``, the Python API, the demo
and the experiments, and each block of :func:`neuropil.blockwise.segment_blockwise`. The
voxel size is required, because the watershed's seeds are the maxima of a distance
transform in nanometres: the same affinities at 25x13x13 nm and at 13x13x13 nm give
different fragments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError
from neuropil.segment import watershed
from neuropil.segment.affinities import check_boundaries, check_unit_range
from neuropil.segment.agglomerate import agglomerate

FLOOD_THRESHOLD_AFFINITIES = 0.5
"""The watershed floods affinities above this by default (see :func:`neuropil.segment.watershed.fragments`)."""
FLOOD_THRESHOLD_BOUNDARIES = 0.0
"""A boundary map's watershed floods every positive affinity by default
(see :func:`neuropil.segment.watershed.fragments_from_boundaries`)."""


class Segmentation(NamedTuple):
    """The fragments of one run and its segmentation at each threshold."""

    fragments: NDArray[np.uint64]
    """(z, y, x) watershed fragments (or the given ones)."""
    segmentations: list[NDArray[np.uint64]]
    """(z, y, x) segmentation per threshold, in the order of ``thresholds``."""
    thresholds: tuple[float, ...]


def default_flood_threshold(ndim: int) -> float:
    """The watershed's flood threshold for an input of ``ndim`` dimensions (4: affinities, 3: a boundary map)."""
    return FLOOD_THRESHOLD_BOUNDARIES if ndim == 3 else FLOOD_THRESHOLD_AFFINITIES


def fragments(
    values: NDArray,
    *,
    voxel_size: Sequence[float] | None,
    threshold: float = 0.5,
    flood_threshold: float | None = None,
    min_size: int = 20,
    mask: NDArray | None = None,
) -> tuple[NDArray[np.uint64], int]:
    """Watershed fragments of affinities or of a boundary map.

    Parameters
    ----------
    values : (c, z, y, x) ndarray of float, or (z, y, x) ndarray of float
        Nearest-neighbour affinities (1 = same object) or a boundary map (1 = boundary),
        in [0, 1] (:func:`neuropil.segment.affinities.check_unit_range`).
    voxel_size : (z, y, x) tuple of float
        Voxel size in nm, for the seeds' distance transform (None is a one-line error).
    threshold, min_size, mask
        See :func:`neuropil.segment.watershed.fragments`.
    flood_threshold : float, optional
        Default: :func:`default_flood_threshold` of the input (0.5 for affinities, 0 for
        a boundary map).

    Returns
    -------
    fragments : (z, y, x) ndarray of uint64
    max_id : int
    """
    values = np.asarray(values)
    if values.ndim not in (3, 4):
        raise NeuropilError(
            f"expected affinities (c, z, y, x) or a boundary map (z, y, x), not an array of shape {values.shape}"
        )
    voxel_size = check_voxel_size(voxel_size, 3)
    if not 0.0 <= float(threshold) <= 1.0:
        raise NeuropilError(f"the fragment threshold must lie in [0, 1], not {float(threshold):g}")
    if values.ndim == 3:
        check_boundaries(values)  # affinities are checked by the watershed (check_affinities)
    flood = default_flood_threshold(values.ndim) if flood_threshold is None else float(flood_threshold)
    make = watershed.fragments_from_boundaries if values.ndim == 3 else watershed.fragments
    return make(values, threshold=threshold, flood_threshold=flood, min_size=min_size, mask=mask, voxel_size=voxel_size)


def segment(
    values: NDArray,
    *,
    voxel_size: Sequence[float] | None,
    thresholds: Sequence[float] = (0.5,),
    method: str = "mean",
    fragment_ids: NDArray | None = None,
    quantile: int = 50,
    model=None,
    image: NDArray | None = None,
    offsets: Sequence[Sequence[int]] | None = None,
    fragment_threshold: float = 0.5,
    flood_threshold: float | None = None,
    min_size: int = 20,
    mask: NDArray | None = None,
) -> Segmentation:
    """Fragments by watershed (unless given), then agglomeration at each threshold, from one run.

    Parameters
    ----------
    values : (c, z, y, x) ndarray of float, or (z, y, x) ndarray of float
        Nearest-neighbour affinities (1 = same object) or a boundary map (1 = boundary);
        every channel in [0, 1] (:func:`neuropil.segment.affinities.check_unit_range`).
    voxel_size : (z, y, x) tuple of float, or None
        Voxel size in nm; required unless ``fragment_ids`` are given (only the watershed
        needs it).
    thresholds : sequence of float
        Merge thresholds in [0, 1] (see :func:`neuropil.segment.agglomerate.agglomerate`
        and :func:`check_thresholds`).
    method : {"mean", "quantile", "learned", "mutex"}
        Agglomeration method.
    fragment_ids : (z, y, x) ndarray of int, optional
        Given fragments (0 = no fragment); default: :func:`fragments` of ``values``.
    quantile, model, image, offsets
        Passed to :func:`neuropil.segment.agglomerate.agglomerate` (``offsets``: of every
        channel of ``values``, for the mutex method's long-range repulsion).
    fragment_threshold, flood_threshold, min_size, mask
        Passed to :func:`fragments` as ``threshold``, ``flood_threshold``, ``min_size``, ``mask``.

    Returns
    -------
    Segmentation
    """
    values = np.asarray(values)
    thresholds = check_thresholds(thresholds)
    if values.ndim == 4 and values.shape[0] > 3 and np.issubdtype(values.dtype, np.floating):
        # the nearest neighbours are checked where they are read (check_affinities)
        check_unit_range(values[3:], "long-range affinities")
    if fragment_ids is None:
        fragment_ids, _ = fragments(
            values,
            voxel_size=voxel_size,
            threshold=fragment_threshold,
            flood_threshold=flood_threshold,
            min_size=min_size,
            mask=mask,
        )
    elif voxel_size is not None:
        check_voxel_size(voxel_size, 3)
    segmentations = agglomerate(
        values,
        fragment_ids,
        method=method,
        thresholds=thresholds,
        quantile=quantile,
        model=model,
        image=image,
        offsets=offsets,
    )
    return Segmentation(np.asarray(fragment_ids, dtype=np.uint64), segmentations, thresholds)


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """Merge thresholds as floats, at least one and each in [0, 1], or a one-line error.

    The agglomeration scores (``1 - affinity``, ``1 - P(merge)``) lie in [0, 1], so a
    threshold outside it merges nothing or everything.
    """
    try:
        values = tuple(float(t) for t in np.atleast_1d(np.asarray(thresholds, dtype=np.float64)))
    except (TypeError, ValueError):
        raise NeuropilError(f"merge thresholds must be numbers in [0, 1], not {thresholds!r}") from None
    if not values:
        raise NeuropilError("no merge threshold given")
    outside = [t for t in values if not 0.0 <= t <= 1.0]
    if outside:
        raise NeuropilError(f"merge thresholds must lie in [0, 1], not {', '.join(f'{t:g}' for t in outside)}")
    return values


def check_voxel_size(voxel_size: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """``voxel_size`` as ``ndim`` positive floats (nm), or a one-line error."""
    if voxel_size is None:
        raise NeuropilError("the voxel size is needed (z, y, x in nm): the watershed's seeds depend on it")
    try:
        values = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        raise NeuropilError(f"voxel size must be {ndim} numbers in nm, not {voxel_size!r}") from None
    if len(values) != ndim or not all(v > 0 and np.isfinite(v) for v in values):
        raise NeuropilError(f"voxel size must be {ndim} positive numbers in nm (z, y, x), not {values}")
    return values
