"""Conventions shared by every stage, stated once.

Arrays are ``(z, y, x)``; multi-channel arrays are ``(c, z, y, x)``.
``voxel_size`` is in nanometres, ``(z, y, x)``. An affinity of 1 means "same
object"; offsets point backwards. Label ids are ``uint64``; 0 means "no object
here", and what it stands for is declared per dataset by :class:`LabelZero`.
The method trains and predicts at one target voxel size, :data:`METHOD_VOXEL_SIZE`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np

LABEL_DTYPE = np.uint64
"""dtype of every label, fragment and segmentation array."""

AFFINITY_DTYPE = np.float32
"""dtype of predicted affinities (probabilities in [0, 1])."""

METHOD_VOXEL_SIZE: tuple[float, float, float] = (25.0, 13.0, 13.0)
"""The method's target voxel size, nm ``(z, y, x)``: every domain is rescaled to it."""

NEAREST_NEIGHBOURS: tuple[tuple[int, int, int], ...] = ((-1, 0, 0), (0, -1, 0), (0, 0, -1))
"""Default affinity offsets, ``(z, y, x)``, pointing backwards.

Longer offsets may follow them (long-range affinities, e.g. ``(0, -9, 0)``), but channels
0-2 are always these: the watershed and every agglomeration read only them.
"""


def check_offsets(offsets: Sequence[Sequence[int]]) -> tuple[tuple[int, int, int], ...]:
    """Affinity offsets as the model and the segmentation use them, or a one-line ``ValueError``.

    Each offset is three integers ``(z, y, x)``, non-zero and pointing backwards (no
    component positive, so a voxel's partners all lie before it on every axis, as for
    the nearest neighbours), without repeats; the first three are
    :data:`NEAREST_NEIGHBOURS` in their order.

    Parameters
    ----------
    offsets : sequence of 3-int sequences, one per affinity channel

    Returns
    -------
    tuple of (int, int, int)
    """
    checked: list[tuple[int, int, int]] = []
    for offset in offsets:
        values = tuple(offset)
        if len(values) != 3 or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
            raise ValueError(f"offset {values} must be three integers (z, y, x)")
        z, y, x = (int(v) for v in values)
        if (z, y, x) == (0, 0, 0):
            raise ValueError("offset (0, 0, 0) relates a voxel to itself")
        if z > 0 or y > 0 or x > 0:
            raise ValueError(f"offset {(z, y, x)} must point backwards (no positive component)")
        if (z, y, x) in checked:
            raise ValueError(f"offset {(z, y, x)} is given twice")
        checked.append((z, y, x))
    if tuple(checked[:3]) != NEAREST_NEIGHBOURS:
        raise ValueError(f"the first three offsets must be the nearest neighbours {NEAREST_NEIGHBOURS}")
    return tuple(checked)


def positive_voxel_size(value: tuple[float, ...]) -> tuple[float, ...]:
    """Validator shared by every config that holds a voxel size."""
    if any(v <= 0 for v in value):
        raise ValueError("voxel sizes must be positive nanometres")
    return value


class LabelZero(StrEnum):
    """What label 0 stands for in a dataset."""

    BOUNDARY = "boundary"
    """Thin boundaries (membranes) between objects: affinities across it are 0."""
    EXTRACELLULAR = "extracellular"
    """Extracellular space: not an object, affinities to it are 0."""
    UNKNOWN = "unknown"
    """Unlabelled: affinities touching it are unknown and masked out."""
