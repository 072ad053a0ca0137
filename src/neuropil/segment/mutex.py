"""Mutex watershed (mwatershed) on the region adjacency graph of fragments.

References
----------
Wolf, S. et al. (2018). The mutex watershed: efficient, parameter-free image partitioning.
ECCV. doi:10.1007/978-3-030-01225-0_34
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from neuropil.conventions import AFFINITY_DTYPE, check_offsets
from neuropil.errors import NeuropilError
from neuropil.segment import graph
from neuropil.segment.affinities import as_affinities
from neuropil.targets import offset_slices


def mutex_watershed(
    affinities: NDArray,
    fragments: NDArray,
    *,
    threshold: float = 0.5,
    offsets: Sequence[Sequence[int]] | None = None,
) -> NDArray[np.uint64]:
    """Mutex watershed of the fragments, edges weighted by mean affinity minus ``1 - threshold``.

    Edges between touching fragments whose mean nearest-neighbour affinity is above
    ``1 - threshold`` attract (the same merge rule as the mean method at ``threshold``),
    the others repel. With ``offsets``, the long-range channels (3 and on) add repulsive
    edges: two fragments whose mean long-range affinity (over every long-range voxel
    pair between them, touching or not) is below ``1 - threshold`` repel by the
    difference. mwatershed processes all edges by decreasing magnitude and never merges
    across an active mutex constraint, so a strong long-range repulsion keeps two
    objects apart even where a weak spot of their contact attracts.

    Parameters
    ----------
    affinities : (c, z, y, x) ndarray of float, or (z, y, x) ndarray of float
        Affinities whose channels 0-2 are the nearest neighbours, or a boundary map
        (1 = boundary). Further channels are read only when ``offsets`` are given.
    fragments : (z, y, x) ndarray of int
        Fragment ids, 0 = no fragment.
    threshold : float
        Merge score threshold, as for the greedy methods.
    offsets : sequence of (z, y, x) int offsets, optional
        One per channel of ``affinities`` (:func:`neuropil.conventions.check_offsets`:
        the nearest neighbours first, then long-range ones pointing backwards).

    Returns
    -------
    segmentation : (z, y, x) ndarray of uint64
        Each segment keeps the id of one of its fragments.
    """
    import mwatershed

    values = as_affinities(affinities)
    fragments = graph.check_fragments(fragments, values.shape[1:])
    contacts = graph.contacts(values, fragments)
    weights = contacts.edge_sums(contacts.value) / np.maximum(contacts.edge_sums(), 1) - (1 - threshold)
    u, v = contacts.u, contacts.v
    if offsets is not None:
        long_u, long_v, long_weights = long_range_repulsion(affinities, offsets, contacts.node, threshold=threshold)
        u, v = np.concatenate([u, long_u]), np.concatenate([v, long_v])
        weights = np.concatenate([weights, long_weights])
    order = np.argsort(-np.abs(weights), kind="stable")
    # mwatershed wants node ids > 0
    edges = [(bool(weights[e] > 0), int(u[e]) + 1, int(v[e]) + 1) for e in order]
    roots = np.arange(contacts.n_nodes)
    if edges:
        mapping = np.array(mwatershed.cluster(edges), dtype=np.int64).reshape(-1, 2)
        segment = np.zeros(contacts.n_nodes + 1, dtype=np.int64)
        segment[mapping[:, 0]] = mapping[:, 1]
        segment = segment[1:]
        # isolated nodes (no edges) keep themselves; others take their segment's first node
        known = np.zeros(contacts.n_nodes, dtype=bool)
        known[mapping[:, 0] - 1] = True
        _, first = np.unique(segment[known], return_index=True)
        representative = dict(zip(segment[known][first], np.flatnonzero(known)[first]))
        roots[known] = [representative[s] for s in segment[known]]
    return contacts.paint(contacts.ids[roots])


def long_range_repulsion(
    affinities: NDArray, offsets: Sequence[Sequence[int]], node: NDArray[np.int64], *, threshold: float
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Repulsive edges between fragments from the long-range channels (3 and on).

    Parameters
    ----------
    affinities : (c, z, y, x) ndarray of float
        Every channel, one per offset.
    offsets : sequence of (z, y, x) int offsets
    node : (z, y, x) ndarray of int64
        Node index of each voxel, -1 where there is no fragment (:class:`graph.Contacts`).
    threshold : float
        Pairs whose mean long-range affinity is below ``1 - threshold`` repel.

    Returns
    -------
    u, v : (n,) ndarray of int64
        Node indices of each repulsive edge, ``u < v``.
    weights : (n,) ndarray of float64
        Mean long-range affinity minus ``1 - threshold``; all negative.
    """
    array = np.asarray(affinities)
    if array.ndim != 4:
        raise NeuropilError(f"long-range offsets need affinities (c, z, y, x), not an array of shape {array.shape}")
    try:
        offsets = check_offsets(offsets)
    except ValueError as error:
        raise NeuropilError(str(error)) from None
    if len(offsets) != array.shape[0]:
        raise NeuropilError(f"{len(offsets)} offsets for {array.shape[0]} affinity channels")
    if not np.issubdtype(array.dtype, np.floating):
        raise NeuropilError(f"affinities must be float in [0, 1], not {array.dtype}")
    n = max(int(node.max(initial=-1)) + 1, 1)
    keys, pair_values = [], []
    for channel in range(3, len(offsets)):
        here, there = offset_slices(node.shape, offsets[channel])
        a, b = node[here], node[there]
        between = (a != b) & (a >= 0) & (b >= 0)
        channel_values = np.asarray(array[channel][here][between], dtype=AFFINITY_DTYPE)
        if not np.isfinite(channel_values).all():
            raise NeuropilError(f"affinity channel {channel} contains NaN or infinite values")
        a, b = a[between], b[between]
        keys.append(np.minimum(a, b) * n + np.maximum(a, b))
        pair_values.append(channel_values)
    if not keys:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float64)
    pairs, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    sums = np.bincount(inverse, weights=np.concatenate(pair_values), minlength=pairs.size)
    counts = np.bincount(inverse, minlength=pairs.size)
    weights = sums / np.maximum(counts, 1) - (1 - threshold)
    repel = weights < 0
    return pairs[repel] // n, pairs[repel] % n, weights[repel]
