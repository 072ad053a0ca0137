"""Training targets: affinities from labels, with a mask of the voxel pairs whose affinity is known."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from neuropil.conventions import NEAREST_NEIGHBOURS, LabelZero
from neuropil.errors import NeuropilError


class AffinityTargets(NamedTuple):
    affinities: NDArray[np.float32]
    """(c, *spatial) 1 where voxel p and p + offset[c] are the same object, else 0."""
    mask: NDArray[np.float32]
    """(c, *spatial) 1 where that affinity is known (inside the volume and labelled)."""


def offset_slices(shape: Sequence[int], offset: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices ``(here, there)`` such that ``array[there]`` is ``array[here]`` moved by ``offset``.

    Works for any number of dimensions; ``here`` covers every voxel p whose partner
    p + offset lies inside an array of ``shape``.
    """
    if len(offset) != len(shape):
        raise NeuropilError(f"offset {tuple(offset)} has {len(offset)} axes, the volume has {len(shape)}")
    here, there = [], []
    for size, step in zip(shape, offset):
        step = int(step)
        if abs(step) >= size:
            here.append(slice(0, 0))
            there.append(slice(0, 0))
        elif step <= 0:
            here.append(slice(-step, size))
            there.append(slice(0, size + step))
        else:
            here.append(slice(0, size - step))
            there.append(slice(step, size))
    return tuple(here), tuple(there)


def affinities_from_labels(
    labels: NDArray,
    *,
    offsets: Sequence[Sequence[int]] = NEAREST_NEIGHBOURS,
    label_zero: LabelZero | str = LabelZero.BOUNDARY,
    known: NDArray | None = None,
    in_plane_only: bool = False,
) -> AffinityTargets:
    """Affinities of a label volume for any list of offsets.

    Parameters
    ----------
    labels : (z, y, x) or (y, x) ndarray of int
        Object ids; 0 means no object (see ``label_zero``).
    offsets : sequence of int tuples
        One per output channel, pointing backwards by convention (``(-1, 0, 0)`` is the
        voxel one section above); any length: a long-range offset such as ``(0, -9, 0)``
        relates voxels 9 rows apart, 1 only when both are the same object, whatever lies
        between them. Pairs whose partner is outside the volume are masked.
    label_zero : LabelZero
        ``boundary`` or ``extracellular``: affinities touching 0 are known and 0.
        ``unknown``: affinities touching 0 are masked out.
    known : ndarray of bool, optional
        Voxels whose label can be trusted (e.g. labelled objects of a partially labelled
        volume); a pair is known only when both voxels are.
    in_plane_only : bool
        Labels are 2-D per section: affinities across sections (every offset with a z
        component) are unknown.

    Returns
    -------
    AffinityTargets
        ``affinities`` and ``mask``, both float32 of shape ``(len(offsets), *labels.shape)``.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise NeuropilError(f"labels must hold integer ids, got dtype {labels.dtype}")
    label_zero = LabelZero(label_zero)
    if in_plane_only and labels.ndim != 3:
        raise NeuropilError(f"in_plane_only needs (z, y, x) labels, got shape {labels.shape}")
    if known is not None:
        known = np.asarray(known, dtype=bool)
        if known.shape != labels.shape:
            raise NeuropilError(f"known-voxel mask shape {known.shape} does not match labels shape {labels.shape}")
    for offset in offsets:
        if len(offset) != labels.ndim:
            raise NeuropilError(f"offset {tuple(offset)} has {len(offset)} axes, the labels have {labels.ndim}")
        if not any(offset):
            raise NeuropilError(f"offset {tuple(offset)} relates a voxel to itself")
    affinities = np.zeros((len(offsets), *labels.shape), dtype=np.float32)
    mask = np.zeros_like(affinities)
    for channel, offset in enumerate(offsets):
        if in_plane_only and offset[0] != 0:
            continue
        here, there = offset_slices(labels.shape, offset)
        a, b = labels[here], labels[there]
        affinities[channel][here] = (a == b) & (a != 0)
        pair_known = np.ones(a.shape, dtype=bool)
        if label_zero is LabelZero.UNKNOWN:
            pair_known &= (a != 0) & (b != 0)
        if known is not None:
            pair_known &= known[here] & known[there]
        mask[channel][here] = pair_known
    affinities *= mask
    return AffinityTargets(affinities, mask)
