"""Region adjacency graph of fragments, built in a few vectorized passes.

Every pair of face-adjacent voxels ``(p, p + offset[c])`` that lie in different
fragments (both non-zero) is one *contact* of the two fragments; its value is the
affinity of channel ``c`` at ``p`` (1 = same object). A boundary map (1 = boundary)
is first turned into such affinities by
:func:`neuropil.watershed.affinities_from_boundaries`. Edge statistics are sums over
contacts, so that the statistics of merged regions are sums too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError


@dataclass(frozen=True)
class Contacts:
    """Every voxel contact between two different fragments."""

    ids: NDArray[np.uint64]
    """(n_nodes,) original fragment id of each node (node index = position)."""
    u: NDArray[np.int64]
    """(n_edges,) smaller node index of each edge."""
    v: NDArray[np.int64]
    """(n_edges,) larger node index of each edge."""
    edge: NDArray[np.int64]
    """(n_contacts,) edge index of each contact."""
    value: NDArray[np.float32]
    """(n_contacts,) affinity across each contact, in [0, 1]."""
    node: NDArray[np.int64]
    """Node index of each voxel, -1 where the fragment id is 0; shape of the volume."""

    @property
    def n_nodes(self) -> int:
        return int(self.ids.size)

    @property
    def n_edges(self) -> int:
        return int(self.u.size)

    def edge_sums(self, weights: NDArray | None = None) -> NDArray[np.float64]:
        """(n_edges,) sum of ``weights`` (one per contact; 1 if not given) over each edge."""
        return np.bincount(self.edge, weights=weights, minlength=self.n_edges).astype(np.float64, copy=False)


def check_fragments(fragments: NDArray, shape: tuple[int, ...]) -> NDArray:
    """The fragments as an integer array of ``shape``, or a one-line error."""
    fragments = np.asarray(fragments)
    if fragments.shape != tuple(shape):
        raise NeuropilError(f"fragments shape {fragments.shape} does not match the input's shape {tuple(shape)}")
    if not (np.issubdtype(fragments.dtype, np.integer) or fragments.dtype == bool):
        raise NeuropilError(f"fragments must be integer ids, not {fragments.dtype}")
    if np.issubdtype(fragments.dtype, np.signedinteger) and fragments.size and fragments.min() < 0:
        raise NeuropilError("fragments contain negative ids")
    return fragments


def contacts(values: NDArray[np.float32], fragments: NDArray) -> Contacts:
    """All contacts between fragments, with the affinity across each.

    Parameters
    ----------
    values : (ndim, z, y, x) ndarray of float32
        Nearest-neighbour affinities (channel ``c`` relates ``p`` and ``p`` minus one
        voxel along axis ``c``).
    fragments : (z, y, x) ndarray of int
        Fragment ids, 0 = no fragment.

    Returns
    -------
    Contacts
    """
    ids, inverse = np.unique(fragments, return_inverse=True)
    node = inverse.reshape(fragments.shape).astype(np.int64, copy=False)
    if ids.size and ids[0] == 0:
        ids = ids[1:]
        node -= 1
    n = max(int(ids.size), 1)
    keys, contact_values = [], []
    for axis in range(fragments.ndim):
        here = [slice(None)] * fragments.ndim
        there = [slice(None)] * fragments.ndim
        here[axis] = slice(1, None)
        there[axis] = slice(None, -1)
        a, b = node[tuple(here)], node[tuple(there)]
        touching = (a != b) & (a >= 0) & (b >= 0)
        a, b = a[touching], b[touching]
        keys.append(np.minimum(a, b) * n + np.maximum(a, b))
        contact_values.append(values[axis][tuple(here)][touching])
    edge_keys, edge = np.unique(np.concatenate(keys), return_inverse=True)
    return Contacts(
        ids=ids.astype(np.uint64, copy=False),
        u=edge_keys // n,
        v=edge_keys % n,
        edge=edge.astype(np.int64, copy=False),
        value=np.concatenate(contact_values).astype(np.float32, copy=False),
        node=node,
    )
