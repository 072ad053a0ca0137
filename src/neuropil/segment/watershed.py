"""Watershed fragments (supervoxels) from nearest-neighbour affinities or a boundary map.

Seeds are the maxima of the (slightly smoothed) distance transform of the voxels whose
mean affinity is above ``threshold``; every other voxel is flooded from the seeds in
order of decreasing affinity (a seeded watershed by flooding: a priority flood whose
queue holds affinities quantized to :data:`AFFINITY_LEVELS` levels). Small fragments
are then merged into the neighbour they share the highest affinity with (Kruskal's
algorithm over the fragments' contacts). Edges whose affinity is 0 are never crossed,
so objects separated by zero affinities never share a fragment.

How it is made fast (one process, every core): each step is one pass over the volume
in a compiled kernel; the kernels that can run on slabs of the volume at once do so in
threads (they release the GIL). The flood works on a copy of the volume padded by one
voxel of "never flood" on every side, so that a voxel's neighbours are found by adding
fixed offsets instead of dividing its index into coordinates, and its queue keeps the
level being flooded in local variables. The tests check the fragments, voxel for voxel,
against a plain priority-queue flood from seeds found with scipy.

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

import cc3d
import edt
import numba
import numpy as np
import scipy.ndimage
from numpy.typing import NDArray

from neuropil.conventions import LABEL_DTYPE
from neuropil.errors import NeuropilError
from neuropil.segment.affinities import affinities_from_boundaries, check_affinities
from neuropil.segment.graph import cores, part_bounds, run_in_parts

logger = logging.getLogger(__name__)

AFFINITY_LEVELS = 1024
"""Affinities are sorted after quantization to this many levels (a linear-time sort)."""
LABEL_BITS = 31
"""The flood keeps each voxel in one int64: its label in the low 31 bits, then an 11-bit level per axis."""
LABEL_MASK = np.int64((1 << LABEL_BITS) - 1)
OUTSIDE = LABEL_MASK
"""The label field of voxels never flooded: the padding around the volume and voxels outside the mask."""
LEVEL_BITS = 11
LEVEL_MASK = np.int64((1 << LEVEL_BITS) - 1)
NO_EDGE = LEVEL_MASK
"""The level of an edge the flood never crosses (affinity at or below the flood threshold); above every level."""
MAX_VOXELS = (1 << LABEL_BITS) - 2
"""The largest (padded) volume the watershed takes at once: its labels fit the label field; split larger ones in blocks."""
SEED_SIGMA = 1.0
"""Standard deviation (voxels) of the Gaussian that smooths the distance transform before its maxima are taken."""
SEED_TRUNCATE = 4.0
"""The smoothing kernel reaches ``SEED_TRUNCATE * SEED_SIGMA`` voxels (scipy's default truncation)."""


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

    volume = _Volume(affinities, mask)
    seeds = _distance_transform_seeds(volume, threshold=threshold, voxel_size=voxel_size)
    labels, max_id = _watershed_cut(volume, seeds, int(min_size), float(flood_threshold))
    logger.debug("%d fragments from %d seeds", max_id, int(seeds.max(initial=0)))
    return labels.reshape(shape), max_id


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
    affinities = affinities_from_boundaries(boundaries)
    np.maximum(affinities, np.float32(1e-6), out=affinities)  # in place: no second full-size array
    return fragments(
        affinities,
        threshold=threshold,
        flood_threshold=flood_threshold,
        min_size=min_size,
        mask=mask,
        voxel_size=voxel_size,
    )


class _Volume:
    """The input of the watershed seen as 3-D: a 2-D image is one plane of a volume (a leading axis of 1).

    ``affinities`` keeps its ``ndim`` channels (channel ``c`` belongs to 3-D axis
    ``c + first_axis``); ``mask`` is a (z, y, x) bool array, or a one-voxel array
    when there is no mask (``has_mask`` False).
    """

    def __init__(self, affinities: NDArray[np.float32], mask: NDArray[np.bool_] | None):
        self.shape = affinities.shape[1:]
        self.ndim = len(self.shape)
        self.first_axis = 3 - self.ndim
        self.shape3 = (1,) * self.first_axis + tuple(self.shape)
        self.affinities = affinities.reshape((self.ndim, *self.shape3))
        self.has_mask = mask is not None
        self.mask = np.ascontiguousarray(mask).reshape(self.shape3) if mask is not None else np.ones((1, 1, 1), bool)


def _distance_transform_seeds(
    volume: _Volume, *, threshold: float, voxel_size: tuple[float, ...] | None
) -> NDArray[np.unsignedinteger]:
    """Seeds: connected plateaus of maxima of the distance to low-affinity voxels, (z, y, x) as 3-D.

    The same seeds as scipy's ``gaussian_filter``, ``maximum_filter`` and ``label`` of
    the distance transform of ``mean_affinity(affinities) > threshold`` (checked in
    the tests), computed by kernels that run on every core.
    """
    interior = np.empty(volume.shape3, dtype=np.uint8)
    # compare as numpy would compare the float32 mean with the threshold: a Python
    # float is compared in float32, a numpy float64 in float64
    comparison = np.result_type(np.float32, threshold)
    run_in_parts(
        _interior_kernel,
        volume.shape3[0],
        volume.affinities,
        volume.first_axis,
        comparison.type(threshold),
        volume.mask,
        volume.has_mask,
        interior,
    )
    anisotropy = tuple(float(v) for v in voxel_size) if voxel_size is not None else (1.0,) * volume.ndim
    plain = interior.reshape(volume.shape)
    if interior.all():
        # nothing to measure a distance to: edt gives inf everywhere (one seed across every
        # object), scipy the distance from the first voxel (one seed, in a corner)
        distance = scipy.ndimage.distance_transform_edt(plain.view(bool), sampling=voxel_size).astype(np.float32)
    else:
        # seung-lab's edt: the same distances as scipy's distance_transform_edt (checked in the
        # tests), 5-10x faster and without scipy's feature transform (3 int32 arrays); it is
        # faster again (about 1.7x) given uint8 rather than bool
        distance = edt.edt(plain, anisotropy=anisotropy, parallel=cores()).astype(np.float32, copy=False)
    distance = distance.reshape(volume.shape3)
    # smoothing removes the many maxima that the distance transform's ridges have
    smooth = _gaussian(distance, volume.first_axis)
    del distance
    maxima = np.empty(volume.shape3, dtype=np.uint8)
    run_in_parts(_maxima_kernel, volume.shape3[0], smooth, interior, maxima)
    del smooth, interior
    # cc3d numbers components in the order scipy.ndimage.label does (raster order), 4x faster
    out_dtype = np.uint32 if maxima.size < 2**32 else np.uint64
    return cc3d.connected_components(maxima, connectivity=6, out_dtype=out_dtype)


def _gaussian(volume: NDArray[np.float32], first_axis: int) -> NDArray[np.float32]:
    """scipy's ``gaussian_filter(volume, SEED_SIGMA)`` (mode ``"reflect"``) over axes ``first_axis..2``, bit for bit.

    scipy filters one axis after the other into a float32 array, each voxel summed
    in float64 as ``w0 * v + sum_j w_j * (left_j + right_j)`` from the outermost tap
    in; the kernel below does the same arithmetic in the same order, on every core
    (scipy's runs on one). ``volume`` is overwritten.
    """
    radius = int(SEED_TRUNCATE * SEED_SIGMA + 0.5)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    # the taps of scipy's own kernel: its response to an impulse is its weights, exactly
    taps = scipy.ndimage.gaussian_filter1d(impulse, SEED_SIGMA, truncate=SEED_TRUNCATE, mode="constant")
    weights = np.ascontiguousarray(taps[radius:])  # weights[j]: the taps at -j and +j (the kernel is symmetric)
    source, target = volume, np.empty_like(volume)
    for axis in range(first_axis, 3):
        run_in_parts(_smooth_axis, volume.shape[0], source, target, axis, weights)
        source, target = target, source
    return source


@numba.njit(cache=True, nogil=True)
def _reflect(index, length):
    """scipy's ``"reflect"`` extension (``d c b a | a b c d | d c b a``), for any line length."""
    if 0 <= index < length:
        return index
    if -length <= index < 0:
        return -1 - index
    period = 2 * length
    index %= period  # lines shorter than the kernel reflect more than once
    return index if index < length else period - 1 - index


@numba.njit(cache=True, nogil=True)
def _interior_kernel(affinities, first_axis, threshold, mask, has_mask, out, start, stop):
    """``mean_affinity(affinities) > threshold`` (and inside the mask) for planes ``start..stop-1``.

    The mean of each voxel's affinities to its neighbours is summed in float32 in the
    order :func:`neuropil.segment.affinities.mean_affinity` sums it, so it is the same
    float32 number.
    """
    depth, height, width = out.shape
    for z in range(start, stop):
        for y in range(height):
            for x in range(width):
                total = np.float32(0.0)
                count = 0
                if first_axis == 0:
                    if z >= 1:
                        total += affinities[0, z, y, x]
                        count += 1
                    if z < depth - 1:
                        total += affinities[0, z + 1, y, x]
                        count += 1
                channel = 1 - first_axis
                if y >= 1:
                    total += affinities[channel, z, y, x]
                    count += 1
                if y < height - 1:
                    total += affinities[channel, z, y + 1, x]
                    count += 1
                channel = 2 - first_axis
                if x >= 1:
                    total += affinities[channel, z, y, x]
                    count += 1
                if x < width - 1:
                    total += affinities[channel, z, y, x + 1]
                    count += 1
                inside = total / np.float32(max(count, 1)) > threshold
                if has_mask:
                    inside = inside and mask[z, y, x]
                out[z, y, x] = inside


@numba.njit(cache=True, nogil=True)
def _smooth_axis(source, target, axis, weights, start, stop):
    """One axis of :func:`_gaussian`, for output planes ``start..stop-1`` (``source`` and ``target`` differ)."""
    depth, height, width = source.shape
    radius = weights.size - 1
    row = np.empty(width, dtype=np.float64)
    for z in range(start, stop):
        for y in range(height):
            for x in range(width):
                row[x] = np.float64(source[z, y, x]) * weights[0]
            if axis == 2:
                for j in range(radius, 0, -1):
                    weight = weights[j]
                    # the middle of the row without the reflection's branches (vectorized), then its ends
                    middle = row[j : width - j]
                    lefts = source[z, y, : max(width - 2 * j, 0)]
                    rights = source[z, y, 2 * j :]
                    for x in range(middle.size):
                        middle[x] += (np.float64(lefts[x]) + np.float64(rights[x])) * weight
                    for x in range(min(j, width)):
                        left, right = _reflect(x - j, width), _reflect(x + j, width)
                        row[x] += (np.float64(source[z, y, left]) + np.float64(source[z, y, right])) * weight
                    for x in range(max(width - j, j), width):
                        left, right = _reflect(x - j, width), _reflect(x + j, width)
                        row[x] += (np.float64(source[z, y, left]) + np.float64(source[z, y, right])) * weight
            elif axis == 1:
                for j in range(radius, 0, -1):
                    weight = weights[j]
                    up, down = _reflect(y - j, height), _reflect(y + j, height)
                    for x in range(width):
                        row[x] += (np.float64(source[z, up, x]) + np.float64(source[z, down, x])) * weight
            else:
                for j in range(radius, 0, -1):
                    weight = weights[j]
                    before, after = _reflect(z - j, depth), _reflect(z + j, depth)
                    for x in range(width):
                        row[x] += (np.float64(source[before, y, x]) + np.float64(source[after, y, x])) * weight
            for x in range(width):
                target[z, y, x] = np.float32(row[x])


@numba.njit(cache=True, nogil=True)
def _maxima_kernel(smooth, interior, out, start, stop):
    """Interior voxels not below any of their (up to 26) neighbours, for planes ``start..stop-1``.

    The same as ``(smooth == maximum_filter(smooth, size=3)) & interior``: scipy's
    reflected border only repeats voxels of the window. The 3x3x3 maximum is taken
    one axis after the other (x, y within a plane, then z over three planes kept in
    a ring), in loops the compiler vectorizes.
    """
    depth, height, width = smooth.shape
    ring = np.empty((3, height, width), dtype=smooth.dtype)  # the in-plane maxima of planes z - 1, z, z + 1
    rows = np.empty((height, width), dtype=smooth.dtype)
    for z in range(start, stop):
        for neighbour in range(max(z - 1, 0) if z == start else z + 1, min(z + 2, depth)):
            _plane_maximum(smooth[neighbour], rows, ring[neighbour % 3])
        before, here, after = ring[max(z - 1, 0) % 3], ring[z % 3], ring[min(z + 1, depth - 1) % 3]
        for y in range(height):
            values, inside, result = smooth[z, y], interior[z, y], out[z, y]
            a, b, c = before[y], here[y], after[y]
            for x in range(width):
                highest = max(max(a[x], b[x]), c[x])
                result[x] = inside[x] != 0 and values[x] >= highest


@numba.njit(cache=True, nogil=True)
def _plane_maximum(plane, rows, out):
    """``out[y, x]``: the maximum of ``plane`` over the 3x3 window around ``(y, x)`` (within the plane)."""
    height, width = plane.shape
    for y in range(height):
        line, row = plane[y], rows[y]
        if width == 1:
            row[0] = line[0]
            continue
        row[0] = max(line[0], line[1])
        row[width - 1] = max(line[width - 2], line[width - 1])
        lefts, middles, rights, inner = line[: width - 2], line[1 : width - 1], line[2:], row[1 : width - 1]
        for x in range(inner.size):
            inner[x] = max(max(lefts[x], middles[x]), rights[x])
    for y in range(height):
        a, b, c, result = rows[max(y - 1, 0)], rows[y], rows[min(y + 1, height - 1)], out[y]
        for x in range(width):
            result[x] = max(max(a[x], b[x]), c[x])


def _watershed_cut(
    volume: _Volume, seeds: NDArray, min_size: int, floor: float = 0.0
) -> tuple[NDArray[np.uint64], int]:
    """Flood from seeds over affinities above ``floor``, merge fragments smaller than
    ``min_size`` through any positive affinity, renumber 1..max_id.

    Returns the (z, y, x) uint64 fragments as 3-D and max_id.
    """
    shape3 = volume.shape3
    # one voxel of padding on each side of every axis with neighbours; an axis of one
    # voxel has none: its offset is 0, so its "neighbour" is the voxel itself, flooded
    pad = tuple(1 if size > 1 else 0 for size in shape3)
    padded = tuple(size + 2 * p for size, p in zip(shape3, pad))
    n_padded = int(np.prod(padded))
    if n_padded > MAX_VOXELS:
        raise NeuropilError(
            f"a volume of {n_padded} voxels (padded) is more than the watershed takes at once ({MAX_VOXELS}): "
            "segment it blockwise (neuropil.blockwise.segment_blockwise)"
        )
    # each voxel's label and levels in one int64: the flood reads a voxel's label and
    # its edges' levels from one cache line (about 20% faster on 1 Mvoxel than three arrays)
    records = np.empty(padded, dtype=np.int64)
    run_in_parts(
        _prepare_flood,
        padded[0],
        volume.affinities,
        volume.first_axis,
        seeds,
        volume.mask,
        volume.has_mask,
        np.float32(floor),
        records,
        np.array(pad, dtype=np.int64),
    )
    strides = np.array(
        [padded[1] * padded[2] if pad[0] else 0, padded[2] if pad[1] else 0, 1 if pad[2] else 0], dtype=np.int64
    )
    # the queues' links live in the output's memory until the output is written (one
    # fresh array less: new memory costs the kernel's zeroing of it)
    out = np.empty(shape3, dtype=LABEL_DTYPE)
    scratch = out.reshape(-1).view(np.int32)
    following = scratch[:n_padded] if scratch.size >= n_padded else np.empty(n_padded, dtype=np.int32)
    first_new = int(seeds.max(initial=0)) + 1
    n_labels = _flood(records.ravel(), following, strides, first_new)
    del following
    sizes = np.sum(run_in_parts(_label_sizes, padded[0], records, n_labels), axis=0)
    n_labels = int(np.flatnonzero(sizes)[-1]) + 1 if sizes.any() else 1  # labels.max() + 1
    sizes = sizes[:n_labels]
    roots = np.arange(n_labels)
    if min_size > 1 and n_labels > 2:
        # a pair of fragments both at least min_size is never merged (sizes only grow)
        capacity = 2 * int(sizes[sizes < min_size].sum())
        small = np.zeros(n_labels + 1, dtype=np.uint8)
        small[1:n_labels] = sizes[1:] < min_size
        # slabs of planes at once, each into buffers of its own (at most `capacity` per axis)
        parts = len(part_bounds(shape3[0])) - 1
        buffers = [
            (np.empty((3, capacity), np.int64), np.empty((3, capacity), np.int64), np.empty((3, capacity), np.float32))
            for _ in range(parts)
        ]
        counts = run_in_parts(
            _small_contacts,
            shape3[0],
            records,
            volume.affinities,
            volume.first_axis,
            np.array(pad),
            small,
            each=buffers,
        )
        # contacts axis by axis, each in raster order, then sorted by decreasing affinity
        source, target, value = (
            np.concatenate(
                [buffer[field][axis, : count[axis]] for axis in range(3) for buffer, count in zip(buffers, counts)]
            )
            for field in range(3)
        )
        order = np.argsort(-value, kind="stable")
        roots = _merge_small(source[order], target[order], n_labels, sizes, int(min_size))
    # renumber 1..max_id in the order of the roots' labels (0 stays 0): the labels are
    # below n_labels, so a table does it without np.unique's sort
    present = np.zeros(n_labels, dtype=bool)
    present[roots[sizes > 0]] = True
    present[0] = False
    final = np.cumsum(present, dtype=np.uint64)[roots]
    final[0] = 0
    run_in_parts(_write_fragments, shape3[0], records, final, np.array(pad, dtype=np.int64), out)
    return out, int(present.sum())


@numba.njit(cache=True, nogil=True)
def _prepare_flood(affinities, first_axis, seeds, mask, has_mask, floor, records, pad, start, stop):
    """The flood's padded records, for padded planes ``start..stop-1``.

    A voxel's record holds its label (the seed at ``p``, 0 if none; :data:`OUTSIDE`
    outside the volume or the mask) and, for each axis ``a``, the queue level of the
    edge between ``p`` and ``p`` minus one voxel along ``a`` (:data:`NO_EDGE` where
    the flood never crosses it).
    """
    _, depth, height, width = affinities.shape
    n_levels = AFFINITY_LEVELS
    _, padded_height, padded_width = records.shape
    for zp in range(start, stop):
        z = zp - pad[0]
        for yp in range(padded_height):
            y = yp - pad[1]
            for xp in range(padded_width):
                x = xp - pad[2]
                inside = 0 <= z < depth and 0 <= y < height and 0 <= x < width
                if inside and has_mask:
                    inside = mask[z, y, x]
                if not inside:
                    records[zp, yp, xp] = OUTSIDE
                    continue
                record = np.int64(seeds[z, y, x])
                for axis in range(3):
                    level = NO_EDGE
                    if axis >= first_axis:
                        affinity = affinities[axis - first_axis, z, y, x]
                        if affinity > floor:  # never cross an affinity at or below the floor
                            level = np.int64((1.0 - min(np.float64(affinity), 1.0)) * (n_levels - 1))
                    record |= level << (LABEL_BITS + LEVEL_BITS * axis)
                records[zp, yp, xp] = record


@numba.njit(cache=True, nogil=True)
def _flood(records, following, strides, next_label):
    """Seeded watershed by flooding on edge weights ``1 - affinity``, a FIFO bucket queue.

    A voxel takes the label of the neighbour that reaches it first through an edge
    of affinity above the floor (labelled when queued, as in scikit-image); ties are
    broken first in, first out, so plateaus are split evenly between basins. Voxels no
    seed reaches start fragments of their own, numbered from ``next_label`` in raster
    order.

    records : (n,) int64, padded (see :func:`_prepare_flood`), flooded in place;
    following : (n,) int32, the queues' links. Returns the number of labels (the
    largest + 1).

    The queue of each level is a linked list through ``following``; the level being
    flooded, where most voxels are queued, lives in local variables (``first``,
    ``last``), which the compiler keeps in registers.
    """
    plane, row, column = strides[0], strides[1], strides[2]
    n = records.size
    head = np.full(AFFINITY_LEVELS, -1, dtype=np.int64)
    tail = np.full(AFFINITY_LEVELS, -1, dtype=np.int64)
    start = 0
    while True:
        if start == 0:
            # the seeds, in raster order
            for p in range(n):
                label = records[p] & LABEL_MASK
                if label != 0 and label != OUTSIDE:
                    if tail[0] < 0:
                        head[0] = p
                    else:
                        following[tail[0]] = p
                    tail[0] = p
            if tail[0] >= 0:
                following[tail[0]] = -1
            start = 1
        else:
            while start < n + 1 and records[start - 1] & LABEL_MASK != 0:
                start += 1
            if start == n + 1:
                break
            p = start - 1
            records[p] |= next_label
            next_label += 1
            head[0] = p
            tail[0] = p
            following[p] = -1
        level = 0
        first, last = head[0], tail[0]
        head[0] = -1
        tail[0] = -1
        while True:
            if first < 0:
                level += 1
                while level < AFFINITY_LEVELS and head[level] < 0:
                    level += 1
                if level == AFFINITY_LEVELS:
                    break
                first, last = head[level], tail[level]
                head[level] = -1
                tail[level] = -1
            p = first
            first = np.int64(following[p])
            if first < 0:
                last = -1
            here = records[p]
            label = here & LABEL_MASK
            for k in range(6):
                # axis by axis, the neighbour before p (the edge is p's), then the one after (q's)
                axis = k // 2
                if k == 0:
                    q = p - plane
                elif k == 1:
                    q = p + plane
                elif k == 2:
                    q = p - row
                elif k == 3:
                    q = p + row
                elif k == 4:
                    q = p - column
                else:
                    q = p + column
                there = records[q]
                if there & LABEL_MASK != 0:
                    continue  # flooded, outside the volume or the mask, or p itself (an axis of one voxel)
                edge = ((here if k % 2 == 0 else there) >> (LABEL_BITS + LEVEL_BITS * axis)) & LEVEL_MASK
                if edge == NO_EDGE:
                    continue
                records[q] = there | label
                following[q] = -1
                if edge <= level:
                    if last < 0:
                        first = q
                    else:
                        following[last] = q
                    last = q
                else:
                    if tail[edge] < 0:
                        head[edge] = q
                    else:
                        following[tail[edge]] = q
                    tail[edge] = q
    return next_label


@numba.njit(cache=True, nogil=True)
def _label_of(record):
    """The label in a flood record, -1 outside the volume or the mask."""
    label = record & LABEL_MASK
    return -1 if label == OUTSIDE else label


@numba.njit(cache=True, nogil=True)
def _label_sizes(records, n_labels, start, stop):
    """The voxels of each label in padded planes ``start..stop-1``."""
    sizes = np.zeros(n_labels, dtype=np.int64)
    flat = records[start:stop].ravel()
    for p in range(flat.size):
        label = _label_of(flat[p])
        if label > 0:
            sizes[label] += 1
    return sizes


@numba.njit(cache=True, nogil=True)
def _small_contacts(records, affinities, first_axis, pad, small, sources, targets, values, start, stop):
    """Contacts ``(p, p - e_axis)`` of two fragments, at least one of them ``small``, across a positive affinity.

    For ``p`` in planes ``start..stop-1``. ``small[label]`` is 1 for a fragment below
    the minimum size (its last entry, read for label -1, is 0). Written per axis in
    raster order of ``p`` (``sources`` is p's label, ``targets`` the other's, ``values``
    the affinity); returns the count per axis.
    """
    _, _, height, width = affinities.shape
    _, padded_height, padded_width = records.shape
    flat = records.ravel()
    # an axis without neighbours (one voxel long, or a 2-D image's first) reads p itself: no contact
    plane = padded_height * padded_width if pad[0] else 0
    row = padded_width if pad[1] else 0
    column = 1 if pad[2] else 0
    counts = np.zeros(3, dtype=np.int64)
    for z in range(start, stop):
        for y in range(height):
            base = ((z + pad[0]) * padded_height + (y + pad[1])) * padded_width + pad[2]
            for x in range(width):
                p = base + x
                here = _label_of(flat[p])
                before, above, left = _label_of(flat[p - plane]), _label_of(flat[p - row]), _label_of(flat[p - column])
                # most voxels touch no small fragment: one test without branches finds them
                if not (small[here] | small[before] | small[above] | small[left]):
                    continue
                if here <= 0:
                    continue
                for axis in range(first_axis, 3):
                    if axis == 0:
                        if z == 0:
                            continue
                        there = before
                    elif axis == 1:
                        if y == 0:
                            continue
                        there = above
                    else:
                        if x == 0:
                            continue
                        there = left
                    if there == here or there <= 0 or not (small[here] or small[there]):
                        continue
                    value = affinities[axis - first_axis, z, y, x]
                    if not value > 0:
                        continue
                    sources[axis, counts[axis]] = here
                    targets[axis, counts[axis]] = there
                    values[axis, counts[axis]] = value
                    counts[axis] += 1
    return counts


@numba.njit(cache=True)
def _find(parent, node):
    root = node
    while parent[root] != root:
        root = parent[root]
    while parent[node] != root:  # path compression
        parent[node], node = root, parent[node]
    return root


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


@numba.njit(cache=True, nogil=True)
def _write_fragments(records, final, pad, out, start, stop):
    """``final[label]`` of each voxel (0 outside the mask), unpadded, for planes ``start..stop-1``."""
    _, height, width = out.shape
    for z in range(start, stop):
        for y in range(height):
            for x in range(width):
                label = _label_of(records[z + pad[0], y + pad[1], x + pad[2]])
                out[z, y, x] = final[label] if label > 0 else 0
