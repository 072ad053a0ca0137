"""Region adjacency graph of fragments, built in a few compiled passes on every core.

Every pair of face-adjacent voxels ``(p, p + offset[c])`` that lie in different
fragments (both non-zero) is one *contact* of the two fragments; its value is the
affinity of channel ``c`` at ``p`` (1 = same object). A boundary map (1 = boundary)
stands for such affinities by
:func:`neuropil.segment.affinities.affinities_from_boundaries`
(:func:`contacts_of_boundaries` computes them at the contacts only). Edge statistics are
sums over contacts, so that the statistics of merged regions are sums too.
:func:`run_in_parts` runs the compiled kernels of the segmentation stages on every core.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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


_thread_limit: int | None = None


def cores() -> int:
    """The number of cores this process's kernels use: those it may run on, at most :func:`limit_threads`'."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return available if _thread_limit is None else max(1, min(available, _thread_limit))


def limit_threads(threads: int | None) -> None:
    """Run this process's kernels in at most ``threads`` threads (None: one per core).

    Each of N worker processes of a blockwise job gets its share of the cores, so that N
    processes do not each start a thread per core.
    """
    global _thread_limit
    _thread_limit = None if threads is None else max(1, int(threads))


def run_in_parts(kernel: Callable[..., object], size: int, *args, each: Sequence[tuple] | None = None) -> list:
    """``kernel(*args, start, stop)`` over consecutive parts of ``range(size)``, one part per core.

    The kernels are compiled with ``nogil``, so the parts run at once in threads (the
    first in the calling thread, the others in a pool kept for the process). Plain
    threads rather than numba's parallel loops: any numba threading layer will do, and
    several volumes may be segmented at once in threads of one process (Dask's threaded
    scheduler), which numba's default workqueue layer does not allow. ``each`` gives
    more arguments per part (after ``args``); its length fixes the number of parts (see
    :func:`part_bounds`). Returns each part's result, in order.
    """
    bounds = part_bounds(size, len(each) if each is not None else None)
    extra = [() if each is None else tuple(each[k]) for k in range(len(bounds) - 1)]
    if len(bounds) == 2:
        return [kernel(*args, *extra[0], bounds[0], bounds[1])]
    pool = _pool(len(bounds) - 2)
    futures = [pool.submit(kernel, *args, *extra[k], bounds[k], bounds[k + 1]) for k in range(1, len(bounds) - 1)]
    first = kernel(*args, *extra[0], bounds[0], bounds[1])
    return [first] + [future.result() for future in futures]


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool of ``workers`` threads, made once per process (a forked child makes its own)."""
    key = (os.getpid(), workers)
    if key not in _pools:
        _pools[key] = ThreadPoolExecutor(workers, thread_name_prefix="neuropil-parts")
    return _pools[key]


def part_bounds(size: int, parts: int | None = None) -> list[int]:
    """Bounds of the parts :func:`run_in_parts` splits ``range(size)`` into: one per core (at most ``size``)."""
    if parts is None:
        parts = max(1, min(cores(), size))
    return [size * k // parts for k in range(parts + 1)]


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
    values = np.ascontiguousarray(values, dtype=np.float32)
    return _contacts(values, fragments, start, from_boundaries=False)


def contacts_of_boundaries(
    boundaries: NDArray[np.float32], fragments: NDArray, *, start: tuple[int, ...] | None = None
) -> Contacts:
    """:func:`contacts` across the affinities ``1 - mean`` of a boundary map's voxel pairs.

    The same contacts as ``contacts(affinities_from_boundaries(boundaries, combine="mean"),
    fragments)``, to the last bit, without the affinities of every voxel pair (three
    volumes of float32): each contact's value is computed where it is found.

    Parameters
    ----------
    boundaries : (z, y, x) ndarray of float32
        Boundary map in [0, 1] (1 = boundary), checked by the caller.
    fragments, start
        As for :func:`contacts`.
    """
    boundaries = np.ascontiguousarray(boundaries, dtype=np.float32)
    return _contacts(boundaries[np.newaxis], fragments, start, from_boundaries=True)


def _contacts(values: NDArray[np.float32], fragments: NDArray, start, *, from_boundaries: bool) -> Contacts:
    ids, node = node_indices(fragments)
    n = max(int(ids.size), 1)
    node3 = node.reshape((1,) * (3 - node.ndim) + node.shape)
    values3 = values.reshape((values.shape[0],) + node3.shape)
    # a 2-D (or 1-D) volume is a 3-D one with leading axes of size 1, whose channels
    # are the last ones
    first_axis = 3 - node.ndim
    start3 = _start3(start, node.ndim)
    keys, contact_values = _contact_keys(node3, values3, first_axis, n, start3, from_boundaries)
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
        return np.flatnonzero(present).astype(np.int64, copy=False), _looked_up(keys, table)
    # far fewer distinct keys than keys (an edge has many contacts, often one after the
    # other): a hash table finds each key's edge in one pass, and only the distinct keys
    # are sorted (4x faster than sorting the keys and searching each on 5 M contacts)
    distinct, first_seen = _hash_distinct(keys)
    order = np.argsort(distinct)
    rank = np.empty(distinct.size, dtype=np.int64)
    rank[order] = np.arange(distinct.size)
    run_in_parts(_lookup, first_seen.size, first_seen, rank, first_seen)  # in place: no second array
    return distinct[order], first_seen


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
    _, out = _contact_keys(node3, values3, 3 - node.ndim, max(contacts.n_nodes, 1), contacts.start, False)
    return out


def paint(node: NDArray[np.int64], node_ids: NDArray) -> NDArray[np.uint64]:
    """``node_ids[node]`` for each voxel of a node-index volume (from :func:`node_indices`), 0 where ``node`` is -1."""
    flat = node.ravel()
    out = np.empty(flat.size, dtype=np.uint64)
    run_in_parts(_paint, flat.size, flat, np.asarray(node_ids, dtype=np.uint64), out)
    return out.reshape(node.shape)


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
        return ids, _looked_up(flat, table).reshape(fragments.shape)
    ids, inverse = np.unique(flat, return_inverse=True)
    node = inverse.astype(np.int64, copy=False).reshape(fragments.shape)
    if ids[0] == 0:
        ids = ids[1:]
        node = node - 1
    return ids.astype(np.uint64, copy=False), node


def _contact_keys(
    node: NDArray[np.int64],
    values: NDArray[np.float32],
    first_axis: int,
    n: int,
    start: tuple[int, int, int],
    from_boundaries: bool,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Pair keys ``min * n + max`` and values of every contact ``(p, p - e_axis)`` with ``p >= start``.

    Axis by axis, each in raster order of ``p``. Slabs of planes are walked at once on
    every core: a first walk counts each slab's contacts per axis, which places each
    slab's part of the output, and a second writes them there. ``values`` are
    affinities (one channel per axis), or ``from_boundaries`` a boundary map (one
    channel) whose value across a contact is ``1 - mean`` of its two voxels'.
    """
    depth = node.shape[0]
    origin = np.array(start)
    counts = np.array(run_in_parts(_count_contacts, depth, node, first_axis, origin))
    # the output holds axis 0's contacts slab after slab, then axis 1's, then axis 2's
    offsets = np.cumsum(np.concatenate([[0], counts.T.ravel()]))[:-1].reshape(3, -1).T.copy()
    ends = offsets + counts
    total = int(counts.sum())
    keys = np.empty(total, dtype=np.int64)
    out = np.empty(total, dtype=np.float32)
    run_in_parts(
        _fill_contacts,
        depth,
        node,
        values,
        from_boundaries,
        first_axis,
        n,
        origin,
        keys,
        out,
        each=[(offset, end) for offset, end in zip(offsets, ends)],
    )
    return keys, out


@numba.njit(cache=True, nogil=True)
def _count_contacts(node, first_axis, start, z_start, z_stop):
    """The number of contacts ``(p, p - e_axis)`` per axis with ``p >= start`` and ``p`` in planes ``z_start..z_stop-1``."""
    _, height, width = node.shape
    counts = np.zeros(3, dtype=np.int64)
    for z in range(max(z_start, start[0]), z_stop):
        for y in range(start[1], height):
            here = node[z, y]
            # one loop per axis, without branches: the compiler vectorizes them
            if first_axis == 0 and z > 0:
                counts[0] += _row_contacts(here[start[2] :], node[z - 1, y, start[2] :])
            if first_axis <= 1 and y > 0:
                counts[1] += _row_contacts(here[start[2] :], node[z, y - 1, start[2] :])
            first = max(start[2], 1)
            counts[2] += _row_contacts(here[first:], here[first - 1 : width - 1])
    return counts


@numba.njit(cache=True, nogil=True)
def _row_contacts(here, there):
    count = 0
    for x in range(here.size):
        count += (here[x] != there[x]) & (here[x] >= 0) & (there[x] >= 0)
    return count


@numba.njit(cache=True, nogil=True)
def _fill_contacts(node, values, from_boundaries, first_axis, n, start, keys, out, offsets, ends, z_start, z_stop):
    """The key and value of each contact :func:`_count_contacts` counts, at ``offsets[axis]`` onwards.

    Every voxel pair is written at the next position, which only moves on at a
    contact (no branch to mispredict); ``ends`` keeps the writes inside this part.
    With ``from_boundaries``, ``values[0]`` is a boundary map and a contact's value
    ``1 - (b[p] + b[q]) / 2`` in float32, as ``affinities_from_boundaries(combine="mean")``
    computes it.
    """
    _, height, width = node.shape
    one, two = np.float32(1.0), np.float32(2.0)
    position = offsets.copy()
    for z in range(max(z_start, start[0]), z_stop):
        for y in range(start[1], height):
            here = node[z, y]
            for axis in range(first_axis, 3):
                if axis == 0:
                    if z == 0:
                        continue
                    there, there_values, shift = node[z - 1, y], values[0, z - 1, y], 0
                elif axis == 1:
                    if y == 0:
                        continue
                    there, there_values, shift = node[z, y - 1], values[0, z, y - 1], 0
                else:
                    there, there_values, shift = here, values[0, z, y], 1
                here_values = values[0 if from_boundaries else axis - first_axis, z, y]
                end = ends[axis]
                at = position[axis]
                for x in range(max(start[2], shift), width):
                    a, b = here[x], there[x - shift]
                    if at < end:
                        keys[at] = min(a, b) * n + max(a, b)
                        if from_boundaries:
                            out[at] = one - (here_values[x] + there_values[x - shift]) / two
                        else:
                            out[at] = here_values[x]
                    at += (a != b) & (a >= 0) & (b >= 0)
                position[axis] = at


@numba.njit(cache=True, nogil=True)
def _hash_distinct(keys):
    """Distinct non-negative ``keys`` in the order first seen, and the index of each key among them."""
    found = np.empty(keys.size, dtype=np.int64)
    capacity, shift = 1 << 16, 64 - 16
    distinct = np.empty(capacity // 2, dtype=np.int64)
    count, done = 0, 0
    while True:
        table_keys = np.full(capacity, -1, dtype=np.int64)
        table_ids = np.empty(capacity, dtype=np.int64)
        for known in range(count):
            _place(table_keys, table_ids, shift, distinct[known], known)
        count, done = _hash_keys(keys, done, table_keys, table_ids, shift, distinct, count, found)
        if done == keys.size:
            return distinct[:count].copy(), found
        # half full: a table twice the size, every known key placed again (the hot loop
        # above has no growth in it, which would slow it down 4x)
        capacity, shift = 2 * capacity, shift - 1
        grown = np.empty(capacity // 2, dtype=np.int64)
        grown[:count] = distinct[:count]
        distinct = grown


@numba.njit(cache=True, nogil=True)
def _hash_keys(keys, done, table_keys, table_ids, shift, distinct, count, found):
    """Index each of ``keys[done:]`` until the table is half full; returns the count of distinct keys and where it stopped."""
    capacity = table_keys.size
    last_key, last_id = -1, -1
    for i in range(done, keys.size):
        key = keys[i]
        if key != last_key:
            slot = _slot(key, shift)
            while table_keys[slot] >= 0 and table_keys[slot] != key:
                slot = (slot + 1) & (capacity - 1)
            if table_keys[slot] < 0:
                if 2 * (count + 1) > capacity:
                    return count, i
                table_keys[slot] = key
                table_ids[slot] = count
                distinct[count] = key
                count += 1
            last_key, last_id = key, table_ids[slot]
        found[i] = last_id
    return count, keys.size


@numba.njit(cache=True, nogil=True)
def _place(table_keys, table_ids, shift, key, index):
    slot = _slot(key, shift)
    while table_keys[slot] >= 0:
        slot = (slot + 1) & (table_keys.size - 1)
    table_keys[slot] = key
    table_ids[slot] = index


@numba.njit(cache=True, nogil=True)
def _slot(key, shift):
    """A key's first slot in a hash table of ``2**(64 - shift)`` slots: Fibonacci hashing (the product's top bits)."""
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(shift))


@numba.njit(cache=True)
def _present(flat, largest):
    present = np.zeros(largest + 1, dtype=np.bool_)
    for i in range(flat.size):
        present[flat[i]] = True
    present[0] = False
    return present


def _looked_up(flat: NDArray, table: NDArray) -> NDArray:
    """``table[flat]``, on every core."""
    out = np.empty(flat.size, dtype=table.dtype)
    run_in_parts(_lookup, flat.size, flat, table, out)
    return out


@numba.njit(cache=True, nogil=True)
def _lookup(flat, table, out, start, stop):
    for i in range(start, stop):
        out[i] = table[flat[i]]


@numba.njit(cache=True, nogil=True)
def _paint(node, node_ids, out, start, stop):
    for i in range(start, stop):
        out[i] = node_ids[node[i]] if node[i] >= 0 else 0
