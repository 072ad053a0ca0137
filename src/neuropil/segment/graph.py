"""Region adjacency graph of fragments, built in a few vectorized passes.

Every pair of face-adjacent voxels ``(p, p + offset[c])`` that lie in different
fragments (both non-zero) is one *contact* of the two fragments; its value is the
affinity of channel ``c`` at ``p`` (1 = same object). A boundary map (1 = boundary)
is first turned into such affinities by
:func:`neuropil.segment.affinities.affinities_from_boundaries`. Edge statistics are sums over
contacts, so that the statistics of merged regions are sums too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
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
    start: tuple[int, int, int] = (0, 0, 0)
    """Only contacts whose voxel ``p`` lies at or after ``start`` (z, y, x) were walked."""

    @property
    def n_nodes(self) -> int:
        return int(self.ids.size)

    @property
    def n_edges(self) -> int:
        return int(self.u.size)

    def paint(self, node_ids: NDArray[np.uint64]) -> NDArray[np.uint64]:
        """Volume with each voxel's ``node_ids[node]`` (0 where there is no fragment)."""
        return paint(self.node, node_ids)

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


def contacts(values: NDArray[np.float32], fragments: NDArray, *, start: tuple[int, ...] | None = None) -> Contacts:
    """All contacts between fragments, with the affinity across each.

    Parameters
    ----------
    values : (ndim, z, y, x) ndarray of float32
        Nearest-neighbour affinities (channel ``c`` relates ``p`` and ``p`` minus one
        voxel along axis ``c``).
    fragments : (z, y, x) ndarray of int
        Fragment ids, 0 = no fragment.
    start : tuple of int, optional
        Only the contacts ``(p, p - e_c)`` with ``p >= start`` on every axis: a block
        read with a layer of voxels before it walks its own contacts and those across
        its lower faces, so that blocks count every contact of a volume once.

    Returns
    -------
    Contacts
    """
    ids, node = node_indices(fragments)
    n = max(int(ids.size), 1)
    values = np.ascontiguousarray(values, dtype=np.float32)
    node3 = node.reshape((1,) * (3 - node.ndim) + node.shape)
    values3 = values.reshape((values.shape[0],) + node3.shape)
    # a 2-D (or 1-D) volume is a 3-D one with leading axes of size 1, whose channels
    # are the last ones
    first_axis = 3 - node.ndim
    start3 = _start3(start, node.ndim)
    keys, contact_values = _contact_keys(node3, values3, first_axis, n, start3)
    edge_keys, edge = _distinct(keys, n * n)
    return Contacts(
        ids=ids,
        u=edge_keys // n,
        v=edge_keys % n,
        edge=edge,
        value=contact_values,
        node=node,
        start=start3,
    )


def _start3(start: tuple[int, ...] | None, ndim: int) -> tuple[int, int, int]:
    """``start`` of an ``ndim``-D volume as the start of the 3-D volume it is walked as."""
    if start is None:
        return (0, 0, 0)
    if len(start) != ndim or any(int(s) < 0 for s in start):
        raise NeuropilError(f"start {tuple(start)} needs {ndim} non-negative values")
    padded = (0,) * (3 - ndim) + tuple(int(s) for s in start)
    return (padded[0], padded[1], padded[2])


def _distinct(keys: NDArray[np.int64], n_keys: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Sorted distinct ``keys`` (all in ``0..n_keys-1``), and the index of each key among them."""
    if n_keys <= 4 * keys.size + (1 << 16):
        # few fragments: a table over every possible key, no sort
        present = np.zeros(n_keys, dtype=bool)
        present[keys] = True
        table = np.cumsum(present, dtype=np.int64) - 1
        return np.flatnonzero(present).astype(np.int64, copy=False), table[keys]
    # each key finds its place by bisection (faster than a unique with inverse:
    # there are far fewer distinct keys than keys)
    sorted_keys = np.sort(keys)
    starts = np.empty(sorted_keys.size, dtype=bool)
    starts[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=starts[1:])
    distinct = sorted_keys[starts]
    return distinct, np.searchsorted(distinct, keys).astype(np.int64, copy=False)


def contact_values(contacts: Contacts, values: NDArray[np.float32]) -> NDArray[np.float32]:
    """(n_contacts,) value of another affinity-like array across each contact, in the order of ``contacts``.

    ``values`` is (ndim, z, y, x) like the affinities the contacts were built from;
    the voxel pairs are walked in the same order, so entry ``i`` belongs to contact ``i``.
    """
    node = contacts.node
    node3 = node.reshape((1,) * (3 - node.ndim) + node.shape)
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.shape[1:] != node.shape:
        raise NeuropilError(f"values shape {values.shape[1:]} does not match fragments shape {node.shape}")
    values3 = values.reshape((values.shape[0],) + node3.shape)
    _, out = _contact_keys(node3, values3, 3 - node.ndim, max(contacts.n_nodes, 1), contacts.start)
    return out


def paint(node: NDArray[np.int64], node_ids: NDArray) -> NDArray[np.uint64]:
    """``node_ids[node]`` for each voxel of a node-index volume (from :func:`node_indices`), 0 where ``node`` is -1."""
    return _paint(node.ravel(), np.asarray(node_ids, dtype=np.uint64)).reshape(node.shape)


def node_indices(fragments: NDArray) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """Sorted non-zero fragment ids, and the index of each voxel's id among them (-1 for 0)."""
    flat = fragments.ravel()
    if flat.size == 0:
        return np.zeros(0, dtype=np.uint64), np.full(fragments.shape, -1, dtype=np.int64)
    largest = int(flat.max())
    if largest <= 4 * flat.size + 1024:
        # ids are small: a dense table instead of a sort
        present = _present(flat, largest)
        table = np.cumsum(present, dtype=np.int64) - 1
        table[0] = -1
        ids = np.flatnonzero(present).astype(np.uint64)
        return ids, _lookup(flat, table).reshape(fragments.shape)
    ids, inverse = np.unique(flat, return_inverse=True)
    node = inverse.astype(np.int64, copy=False).reshape(fragments.shape)
    if ids[0] == 0:
        ids = ids[1:]
        node = node - 1
    return ids.astype(np.uint64, copy=False), node


@numba.njit(cache=True)
def _contact_keys(node, values, first_axis, n, start):
    """Pair keys ``min * n + max`` and values of every contact ``(p, p - e_axis)`` with ``p >= start``, axis by axis.

    A counting pass sizes the output (an upper bound where ``start`` leaves voxels
    out), so the filling pass has no growth checks.
    """
    depth, height, width = node.shape
    flat = node.ravel()
    value_flat = values.ravel()
    total = flat.size
    strides = (height * width, width, 1)
    capacity = 0
    for axis in range(first_axis, 3):
        stride = strides[axis]
        for i in range(stride, total):
            capacity += flat[i] != flat[i - stride]
    keys = np.empty(capacity, dtype=np.int64)
    out = np.empty(capacity, dtype=np.float32)
    count = 0
    for axis in range(first_axis, 3):
        stride = strides[axis]
        channel = (axis - first_axis) * total
        for z in range(max(start[0], 1 if axis == 0 else 0), depth):
            for y in range(max(start[1], 1 if axis == 1 else 0), height):
                row = (z * height + y) * width
                for x in range(max(start[2], 1 if axis == 2 else 0), width):
                    i = row + x
                    a = flat[i]
                    b = flat[i - stride]
                    if a != b and a >= 0 and b >= 0:
                        keys[count] = min(a, b) * n + max(a, b)
                        out[count] = value_flat[channel + i]
                        count += 1
    return keys[:count], out[:count]


@numba.njit(cache=True)
def _present(flat, largest):
    present = np.zeros(largest + 1, dtype=np.bool_)
    for i in range(flat.size):
        present[flat[i]] = True
    present[0] = False
    return present


@numba.njit(cache=True)
def _lookup(flat, table):
    out = np.empty(flat.size, dtype=table.dtype)
    for i in range(flat.size):
        out[i] = table[flat[i]]
    return out


@numba.njit(cache=True)
def _paint(node, node_ids):
    out = np.zeros(node.size, dtype=np.uint64)
    for i in range(node.size):
        if node[i] >= 0:
            out[i] = node_ids[node[i]]
    return out
