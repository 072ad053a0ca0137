"""Watershed fragments (supervoxels) from nearest-neighbour affinities or a boundary map.

Seeds are the maxima of the distance transform of the voxels whose mean affinity is
above ``threshold``; every other voxel joins a seed along the path of highest
affinities (a seeded watershed cut of the affinity graph, computed as a maximum
spanning forest with Kruskal's algorithm). Small fragments are then merged into the
neighbour they share the highest affinity with. Edges whose affinity is 0 are never
crossed, so objects separated by zero affinities never share a fragment.

References
----------
Cousty, J., Bertrand, G., Najman, L. & Couprie, M. (2009). Watershed cuts: minimum
spanning forests and the drop of water principle. IEEE TPAMI 31(8), 1362-1374.
doi:10.1109/TPAMI.2008.173
Zlateski, A. & Seung, H. S. (2015). Image segmentation by size-dependent single
linkage clustering of a watershed basin graph. arXiv:1505.00249
"""

from __future__ import annotations

import logging
import os

import edt
import numba
import numpy as np
import scipy.ndimage
from numpy.typing import NDArray

from neuropil.conventions import LABEL_DTYPE
from neuropil.errors import NeuropilError
from neuropil.segment.affinities import affinities_from_boundaries, check_affinities, mean_affinity, shifted_slices

logger = logging.getLogger(__name__)

AFFINITY_LEVELS = 1024
"""Affinities are sorted after quantization to this many levels (a linear-time sort)."""


def fragments(
    affinities: NDArray,
    *,
    threshold: float = 0.5,
    flood_threshold: float = 0.5,
    min_size: int = 20,
    mask: NDArray | None = None,
    voxel_size: tuple[float, ...] | None = None,
) -> tuple[NDArray[np.uint64], int]:
    """Watershed supervoxels from nearest-neighbour affinities.

    Parameters
    ----------
    affinities : (c, z, y, x) ndarray of float
        Affinities in [0, 1] (1 = same object); the first ``ndim`` channels are the
        nearest neighbours ``(-1, 0, 0), (0, -1, 0), (0, 0, -1)``, further channels
        are ignored. Channel ``c`` at voxel ``p`` relates ``p`` and ``p + offset[c]``.
    threshold : float
        Voxels whose mean affinity to their neighbours is above this are interior;
        seeds are the maxima of the (slightly smoothed) distance transform of the
        interior.
    flood_threshold : float
        The flood from the seeds only crosses affinities above this; voxels it does
        not reach start fragments of their own. Without it an object that got no
        seed (thin, or with a noisy interior) is flooded from a neighbour through
        their low-affinity contact, a merge no agglomeration can undo. Boundary
        voxels left out of the flood join a neighbour through the ``min_size``
        merge below, or, where many touch (a membrane sheet), stay a fragment of
        their own between the objects. 0 floods every positive affinity.
    min_size : int
        Fragments with fewer voxels are merged into the neighbour they share the
        highest affinity with (through any positive affinity, never across 0).
    mask : (z, y, x) ndarray of bool, optional
        Only voxels inside the mask get an id; outside it the result is 0.
    voxel_size : tuple of float, optional
        Voxel size in nm, ``(z, y, x)``, for the distance transform; isotropic if
        not given.

    Returns
    -------
    fragments : (z, y, x) ndarray of uint64
        Fragment ids ``1..max_id``, each id used; 0 only outside the mask.
    max_id : int
        The number of fragments.
    """
    affinities = check_affinities(affinities)
    shape = affinities.shape[1:]
    ndim = len(shape)
    affinities = affinities[:ndim]
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != shape:
            raise NeuropilError(f"mask shape {mask.shape} does not match affinities shape {shape}")
        mask = mask.astype(bool, copy=False)
    if voxel_size is not None and len(voxel_size) != ndim:
        raise NeuropilError(f"voxel_size {tuple(voxel_size)} needs {ndim} values, (z, y, x) in nm")
    if min_size < 0:
        raise NeuropilError(f"min_size must be >= 0, not {min_size}")
    if not 0.0 <= flood_threshold < 1.0:
        raise NeuropilError(f"flood_threshold must be in [0, 1), not {flood_threshold}")

    seeds = _distance_transform_seeds(affinities, threshold=threshold, mask=mask, voxel_size=voxel_size)
    valid = np.ones(shape, dtype=bool) if mask is None else mask
    labels = _watershed_cut(affinities, seeds, valid, shape, int(min_size), float(flood_threshold))
    max_id = int(labels.max(initial=0))
    logger.debug("%d fragments from %d seeds", max_id, int(seeds.max(initial=0)))
    return labels.reshape(shape).astype(LABEL_DTYPE, copy=False), max_id


def fragments_from_boundaries(
    boundaries: NDArray,
    *,
    threshold: float = 0.5,
    flood_threshold: float = 0.0,
    min_size: int = 20,
    mask: NDArray | None = None,
    voxel_size: tuple[float, ...] | None = None,
) -> tuple[NDArray[np.uint64], int]:
    """Watershed supervoxels from a boundary map (1 = boundary, as gala's p1).

    The boundary map becomes nearest-neighbour affinities, ``1 - max`` of the two
    voxels' boundary values (so the cut floods voxels at their own level, like a
    voxel watershed), and goes to :func:`fragments` with the same options. A
    boundary value of 1 is a sure boundary but not a wall: its affinities are
    raised to a tiny positive value so that every boundary voxel joins a fragment.

    The flood crosses every positive affinity by default (``flood_threshold=0``),
    unlike :func:`fragments`' 0.5: in a voxel boundary map a membrane is voxels
    whose affinities to all their neighbours are low, so a flood threshold leaves
    whole membranes out of the flood, as fragments of their own or merged into
    either side by size. On fib-gala's p1 maps that made mean agglomeration's best
    VOI 0.77 (train volume) and 1.23 (test volume) instead of 0.23 and 0.47.

    Parameters
    ----------
    boundaries : (z, y, x) ndarray of float
        Boundary probability in [0, 1].

    Returns
    -------
    fragments : (z, y, x) ndarray of uint64
    max_id : int
    """
    affinities = np.maximum(affinities_from_boundaries(boundaries), np.float32(1e-6))
    return fragments(
        affinities,
        threshold=threshold,
        flood_threshold=flood_threshold,
        min_size=min_size,
        mask=mask,
        voxel_size=voxel_size,
    )


def _distance_transform_seeds(
    affinities: NDArray[np.float32],
    *,
    threshold: float,
    mask: NDArray | None,
    voxel_size: tuple[float, ...] | None,
) -> NDArray[np.int64]:
    """Seeds: connected plateaus of maxima of the distance to low-affinity voxels."""
    interior = mean_affinity(affinities) > threshold
    if mask is not None:
        interior &= mask
    if interior.all():
        # nothing to measure a distance to: edt gives inf everywhere (one seed across every
        # object), scipy the distance from the first voxel (one seed, in a corner)
        distance = scipy.ndimage.distance_transform_edt(interior, sampling=voxel_size).astype(np.float32)
    else:
        # seung-lab's edt: the same distances as scipy's distance_transform_edt (checked in the
        # tests), 5-10x faster and without scipy's feature transform (3 int32 arrays)
        anisotropy = tuple(float(v) for v in voxel_size) if voxel_size is not None else (1.0,) * interior.ndim
        distance = edt.edt(np.ascontiguousarray(interior), anisotropy=anisotropy, parallel=os.cpu_count() or 1)
        distance = distance.astype(np.float32, copy=False)
    # smoothing removes the many maxima that the distance transform's ridges have
    distance = scipy.ndimage.gaussian_filter(distance, sigma=1.0)
    maxima = (distance == scipy.ndimage.maximum_filter(distance, size=3)) & interior
    seeds, _ = scipy.ndimage.label(maxima, structure=scipy.ndimage.generate_binary_structure(maxima.ndim, 1))
    return seeds.astype(np.int64, copy=False)


@numba.njit(cache=True)
def _find(parent, node):
    root = node
    while parent[root] != root:
        root = parent[root]
    while parent[node] != root:  # path compression
        parent[node], node = root, parent[node]
    return root


@numba.njit(cache=True)
def _flood(affinities, seeds, valid, shape, floor):
    """Seeded watershed by flooding on edge weights ``1 - affinity``, a FIFO bucket queue.

    A voxel takes the label of the neighbour that reaches it first through an edge
    of affinity above ``floor`` (labelled when queued, as in scikit-image); ties are broken
    first in, first out, so plateaus are split evenly between basins. Voxels no seed
    reaches start fragments of their own.

    affinities : (ndim, n) float32; seeds : (n,) int64, 0 = no seed; valid : (n,) bool.
    Returns (n,) int64 labels, 0 where invalid.
    """
    ndim = shape.size
    n = seeds.size
    levels = AFFINITY_LEVELS
    strides = np.ones(ndim, dtype=np.int64)
    for axis in range(ndim - 2, -1, -1):
        strides[axis] = strides[axis + 1] * shape[axis + 1]
    labels = np.zeros(n, dtype=np.int64)
    following = np.full(n, -1, dtype=np.int64)
    head = np.full(levels, -1, dtype=np.int64)
    tail = np.full(levels, -1, dtype=np.int64)
    next_label = seeds.max() + 1 if n else 1
    start = 0
    while True:
        queued = 0
        if start == 0:
            for p in range(n):
                if seeds[p] != 0 and valid[p]:
                    labels[p] = seeds[p]
                    if tail[0] < 0:
                        head[0] = p
                    else:
                        following[tail[0]] = p
                    tail[0] = p
                    queued += 1
            start = 1
        else:
            while start < n + 1 and (labels[start - 1] != 0 or not valid[start - 1]):
                start += 1
            if start == n + 1:
                break
            p = start - 1
            labels[p] = next_label
            next_label += 1
            head[0] = p
            tail[0] = p
            queued = 1
        level = 0
        while queued > 0:
            while head[level] < 0:
                level += 1
            p = head[level]
            head[level] = following[p]
            if head[level] < 0:
                tail[level] = -1
            queued -= 1
            remainder = p
            for axis in range(ndim):
                coordinate = remainder // strides[axis]
                remainder -= coordinate * strides[axis]
                for direction in range(2):
                    if direction == 0:
                        if coordinate == 0:
                            continue
                        q = p - strides[axis]
                        affinity = affinities[axis, p]
                    else:
                        if coordinate == shape[axis] - 1:
                            continue
                        q = p + strides[axis]
                        affinity = affinities[axis, q]
                    if labels[q] != 0 or not valid[q] or not affinity > floor:
                        continue  # never cross an affinity at or below the floor
                    labels[q] = labels[p]
                    bucket = int((1 - min(affinity, 1.0)) * (levels - 1))
                    bucket = max(bucket, level)
                    if tail[bucket] < 0:
                        head[bucket] = q
                    else:
                        following[tail[bucket]] = q
                    tail[bucket] = q
                    following[q] = -1
                    queued += 1
    return labels


@numba.njit(cache=True)
def _merge_small(u, v, n_labels, sizes, min_size):
    """Kruskal over fragment edges (sorted by decreasing affinity): absorb small fragments."""
    parent = np.arange(n_labels)
    size = sizes.copy()
    for k in range(u.size):
        root_u = _find(parent, u[k])
        root_v = _find(parent, v[k])
        if root_u == root_v or (size[root_u] >= min_size and size[root_v] >= min_size):
            continue
        if size[root_u] < size[root_v]:
            root_u, root_v = root_v, root_u
        parent[root_v] = root_u
        size[root_u] += size[root_v]
    for node in range(n_labels):
        parent[node] = _find(parent, node)
    return parent


def _watershed_cut(affinities, seeds, valid, shape, min_size, floor=0.0):
    """Flood from seeds over affinities above ``floor``, merge fragments smaller than
    ``min_size`` through any positive affinity, renumber 1..max_id."""
    ndim = len(shape)
    labels = _flood(
        affinities.reshape(ndim, -1), seeds.ravel(), valid.ravel(), np.array(shape, dtype=np.int64), np.float32(floor)
    )
    labels = labels.reshape(shape)
    n_labels = int(labels.max(initial=0)) + 1
    if min_size > 1 and n_labels > 2:
        sizes = np.bincount(labels.ravel(), minlength=n_labels)
        sources, targets, values = [], [], []
        for axis in range(ndim):
            here = shifted_slices(ndim, axis, 1)
            there = shifted_slices(ndim, axis, 0)
            a, b, value = labels[here], labels[there], affinities[axis][here]
            # a pair of fragments both at least min_size is never merged (sizes only grow)
            small = (sizes[a] < min_size) | (sizes[b] < min_size)
            contact = small & (a != b) & (a != 0) & (b != 0) & (value > 0)
            sources.append(a[contact])
            targets.append(b[contact])
            values.append(value[contact])
        order = np.argsort(-np.concatenate(values), kind="stable")
        roots = _merge_small(
            np.concatenate(sources)[order], np.concatenate(targets)[order], n_labels, sizes, int(min_size)
        )
        roots[0] = 0
        labels = roots[labels]
    # renumber 1..max_id in the labels' order, keeping 0 (outside the mask) as 0: the
    # labels are below n_labels, so a table does it without np.unique's sort (10x faster)
    present = np.zeros(max(n_labels, 1), dtype=bool)
    present[labels.ravel()] = True
    present[0] = False
    table = np.cumsum(present, dtype=np.int64)
    return table[labels]
