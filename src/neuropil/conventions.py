"""Conventions shared by every stage, stated once.

Arrays are ``(z, y, x)``; multi-channel arrays are ``(c, z, y, x)``.
``voxel_size`` is in nanometres, ``(z, y, x)``. An affinity of 1 means "same
object"; offsets point backwards. Label ids are ``uint64``; 0 means "no object
here", and what it stands for is declared per dataset by :class:`LabelZero`.
The method trains and predicts at one target voxel size, :data:`METHOD_VOXEL_SIZE`.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

LABEL_DTYPE = np.uint64
"""dtype of every label, fragment and segmentation array."""

AFFINITY_DTYPE = np.float32
"""dtype of predicted affinities (probabilities in [0, 1])."""

METHOD_VOXEL_SIZE: tuple[float, float, float] = (25.0, 13.0, 13.0)
"""The method's target voxel size, nm ``(z, y, x)``: every domain is rescaled to it."""

NEAREST_NEIGHBOURS: tuple[tuple[int, int, int], ...] = ((-1, 0, 0), (0, -1, 0), (0, 0, -1))
"""Default affinity offsets, ``(z, y, x)``, pointing backwards."""


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
