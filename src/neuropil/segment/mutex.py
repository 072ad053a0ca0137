"""Mutex watershed (mwatershed) on the region adjacency graph of fragments."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from neuropil.segment import graph
from neuropil.segment.affinities import as_affinities


def mutex_watershed(affinities: NDArray, fragments: NDArray, *, threshold: float = 0.5) -> NDArray[np.uint64]:
    """Mutex watershed of the fragments, edges weighted by mean affinity minus ``1 - threshold``.

    Edges whose mean affinity is above ``1 - threshold`` attract (the same merge rule as
    the mean method at ``threshold``), the others repel; mwatershed processes them by
    decreasing magnitude and never merges across an active mutex constraint.

    Parameters
    ----------
    affinities : (c, z, y, x) ndarray of float, or (z, y, x) ndarray of float
        Nearest-neighbour affinities, or a boundary map (1 = boundary).
    fragments : (z, y, x) ndarray of int
        Fragment ids, 0 = no fragment.
    threshold : float
        Merge score threshold, as for the greedy methods.

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
    order = np.argsort(-np.abs(weights), kind="stable")
    # mwatershed wants node ids > 0
    edges = [(bool(weights[e] > 0), int(contacts.u[e]) + 1, int(contacts.v[e]) + 1) for e in order]
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
