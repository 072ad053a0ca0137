import numpy as np
import pytest

from neuropil.errors import NeuropilError
from neuropil.evaluate import evaluate
from neuropil.segment.affinities import affinities_from_boundaries
from neuropil.segment.watershed import fragments, fragments_from_boundaries
from neuropil.targets import affinities_from_labels


def affinities_of(labels):
    """Nearest-neighbour affinities of a label volume: 1 inside an object, else 0."""
    affinities = np.zeros((labels.ndim, *labels.shape), dtype=np.float32)
    for axis in range(labels.ndim):
        here = [slice(None)] * labels.ndim
        there = [slice(None)] * labels.ndim
        here[axis] = slice(1, None)
        there[axis] = slice(None, -1)
        same = (labels[tuple(here)] == labels[tuple(there)]) & (labels[tuple(here)] != 0)
        affinities[axis][tuple(here)] = same
    return affinities


def test_objects_separated_by_zero_affinities_never_share_a_fragment():
    rng = np.random.default_rng(0)
    labels = np.ones((6, 20, 20), dtype=np.uint64)
    labels[:, :, 10:] = 2  # two objects touching, no boundary voxels between them
    affinities = affinities_of(labels)
    # noisy but positive affinities inside the objects
    affinities *= rng.uniform(0.2, 1.0, size=affinities.shape).astype(np.float32)
    result, max_id = fragments(affinities, threshold=0.5, min_size=50)
    for fragment_id in range(1, max_id + 1):
        assert len(np.unique(labels[result == fragment_id])) == 1


def test_clean_affinities_give_one_fragment_per_object():
    labels = np.zeros((4, 12, 12), dtype=np.uint64)
    labels[:, :6] = 1
    labels[:, 6:] = 2
    result, max_id = fragments(affinities_of(labels), threshold=0.5, min_size=0)
    assert max_id == 2
    assert evaluate(result, labels).voi == pytest.approx(0.0)


def test_every_voxel_in_mask_gets_an_id_and_ids_are_contiguous():
    rng = np.random.default_rng(1)
    affinities = rng.uniform(0, 1, size=(3, 8, 16, 16)).astype(np.float32)
    mask = np.zeros((8, 16, 16), dtype=bool)
    mask[:, 2:14, 3:] = True
    result, max_id = fragments(affinities, threshold=0.5, min_size=5, mask=mask)
    assert result.dtype == np.uint64
    assert (result[mask] > 0).all()
    assert (result[~mask] == 0).all()
    assert max_id == result.max()
    assert np.array_equal(np.unique(result[mask]), np.arange(1, max_id + 1))


def test_min_size_merges_small_fragments():
    rng = np.random.default_rng(2)
    affinities = rng.uniform(0.01, 1, size=(3, 8, 16, 16)).astype(np.float32)
    result, max_id = fragments(affinities, threshold=0.5, min_size=30)
    sizes = np.bincount(result.ravel())[1:]
    assert sizes.min() >= 30
    _unmerged, unmerged_max_id = fragments(affinities, threshold=0.5, min_size=0)
    assert unmerged_max_id > max_id


def test_an_object_without_a_seed_is_not_flooded_from_its_neighbour():
    # a slab 4 voxels thick beside a large object: the smoothed distance transform gives
    # it no seed of its own; the contact between them has affinity 0.1
    labels = np.ones((4, 16, 16), np.uint64)
    labels[:, :, 12:] = 2
    same = affinities_from_labels(labels).affinities > 0
    affinities = np.where(same, 0.95, 0.1).astype(np.float32)
    _flooded, flooded_max_id = fragments(affinities, flood_threshold=0.0, min_size=5)
    assert flooded_max_id == 1  # the old rule: any positive affinity is crossed
    result, max_id = fragments(affinities, min_size=5)
    assert max_id == 2
    assert len(np.unique(result[labels == 1])) == 1
    assert len(np.unique(result[labels == 2])) == 1
    assert result[0, 0, 0] != result[0, 0, 15]


def test_boundary_map_fragments_follow_boundaries():
    boundaries = np.zeros((4, 16, 16), dtype=np.float32)
    boundaries[:, :, 8] = 1.0  # a membrane plane
    result, max_id = fragments_from_boundaries(boundaries, flood_threshold=0.0, min_size=0)
    assert max_id == 2
    assert len(np.unique(result[:, :, :8])) == 1
    assert len(np.unique(result[:, :, 9:])) == 1
    assert result[0, 0, 0] != result[0, 0, 15]
    # the default floods every positive affinity: the membrane sheet joins a side
    default, _ = fragments_from_boundaries(boundaries, min_size=0)
    np.testing.assert_array_equal(default, result)
    # above a flood threshold the membrane sheet stays out of both sides
    result, max_id = fragments_from_boundaries(boundaries, flood_threshold=0.5)
    assert len(np.unique(result[:, :, :8])) == 1
    assert len(np.unique(result[:, :, 9:])) == 1
    assert result[0, 0, 0] != result[0, 0, 15]
    assert not set(np.unique(result[:, :, 8])) & {result[0, 0, 0], result[0, 0, 15]}


def test_affinities_from_boundaries_take_the_larger_boundary_value():
    boundaries = np.array([[[0.0, 0.2, 0.9]]], dtype=np.float32)
    affinities = affinities_from_boundaries(boundaries)
    assert affinities.shape == (3, 1, 1, 3)
    np.testing.assert_allclose(affinities[2, 0, 0], [0.0, 0.8, 0.1], atol=1e-6)
    assert (affinities[0] == 0).all() and (affinities[1] == 0).all()


def test_fragments_do_not_modify_input():
    rng = np.random.default_rng(3)
    affinities = rng.uniform(0, 1, size=(3, 4, 8, 8)).astype(np.float32)
    before = affinities.copy()
    fragments(affinities)
    assert np.array_equal(affinities, before)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((3, 2, 4, 4), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((4, 4), dtype=np.float32), "affinities must be"),
        (np.zeros((3, 2, 4, 4), dtype=np.int32), "float"),
    ],
)
def test_bad_affinities_raise_one_line_errors(array, message):
    with pytest.raises(NeuropilError, match=message):
        fragments(array)


def test_nan_boundaries_raise():
    with pytest.raises(NeuropilError, match="NaN"):
        fragments_from_boundaries(np.full((2, 4, 4), np.nan, dtype=np.float32))


@pytest.mark.parametrize("voxel_size", [None, (29.0, 6.0, 6.0), (25.0, 13.0, 13.0)])
def test_seed_distances_equal_scipy_distance_transform(voxel_size):
    import edt
    import scipy.ndimage

    rng = np.random.default_rng(0)
    interior = scipy.ndimage.gaussian_filter(rng.random((20, 40, 50)), 2) > 0.5
    expected = scipy.ndimage.distance_transform_edt(interior, sampling=voxel_size).astype(np.float32)
    distance = edt.edt(interior, anisotropy=voxel_size or (1.0, 1.0, 1.0), parallel=2).astype(np.float32)
    np.testing.assert_array_equal(distance, expected)
    flat = interior[0]
    np.testing.assert_array_equal(
        edt.edt(np.ascontiguousarray(flat), anisotropy=(6.0, 6.0)).astype(np.float32),
        scipy.ndimage.distance_transform_edt(flat, sampling=(6.0, 6.0)).astype(np.float32),
    )


# A plain reference of the whole watershed: scipy for the seeds, a heap for the flood and
# Python loops for the merge of small fragments, written for clarity rather than speed.


def reference_seeds(affinities, threshold, mask, voxel_size):
    import scipy.ndimage

    from neuropil.segment.affinities import mean_affinity

    interior = mean_affinity(affinities) > threshold
    if mask is not None:
        interior &= mask
    distance = scipy.ndimage.distance_transform_edt(interior, sampling=voxel_size).astype(np.float32)
    smooth = scipy.ndimage.gaussian_filter(distance, sigma=1.0)
    maxima = (smooth == scipy.ndimage.maximum_filter(smooth, size=3)) & interior
    seeds, _ = scipy.ndimage.label(maxima, structure=scipy.ndimage.generate_binary_structure(maxima.ndim, 1))
    return seeds


def reference_flood(affinities, seeds, valid, floor):
    """A priority flood: lowest level first, first in first out within a level, labelled when queued."""
    import heapq

    shape = seeds.shape
    labels = np.where(valid, seeds, 0).astype(np.int64)
    heap, counter = [], 0
    for index in zip(*np.nonzero(labels)):
        heap.append((0, counter, index))
        counter += 1
    next_label = int(seeds.max()) + 1
    order = iter(np.ndindex(shape))
    while True:
        while heap:
            level, _, p = heapq.heappop(heap)
            for axis in range(len(shape)):
                for step in (-1, 1):
                    q = list(p)
                    q[axis] += step
                    q = tuple(q)
                    if not 0 <= q[axis] < shape[axis] or labels[q] != 0 or not valid[q]:
                        continue
                    affinity = affinities[axis][p if step < 0 else q]
                    if not affinity > floor:
                        continue
                    labels[q] = labels[p]
                    bucket = int((1 - min(float(affinity), 1.0)) * 1023)
                    heapq.heappush(heap, (max(bucket, level), counter, q))
                    counter += 1
        start = next((p for p in order if valid[p] and labels[p] == 0), None)
        if start is None:
            return labels
        labels[start] = next_label
        next_label += 1
        heap.append((0, counter, start))
        counter += 1


def reference_merge_small(affinities, labels, min_size):
    """Kruskal over the contacts with a small fragment, by decreasing affinity; then ids 1..n in label order."""
    sizes = np.bincount(labels.ravel())
    parent = list(range(sizes.size))
    size = list(sizes)

    def find(node):
        while parent[node] != node:
            node = parent[node]
        return node

    contacts = []
    for axis in range(labels.ndim):
        for p in np.ndindex(labels.shape):
            if p[axis] == 0:
                continue
            q = p[:axis] + (p[axis] - 1,) + p[axis + 1 :]
            a, b, value = labels[p], labels[q], affinities[axis][p]
            if a and b and a != b and value > 0 and (sizes[a] < min_size or sizes[b] < min_size):
                contacts.append((-value, len(contacts), a, b))
    for _, _, a, b in sorted(contacts) if min_size > 1 else []:
        root_a, root_b = find(a), find(b)
        if root_a == root_b or (size[root_a] >= min_size and size[root_b] >= min_size):
            continue
        if size[root_a] < size[root_b]:
            root_a, root_b = root_b, root_a
        parent[root_b] = root_a
        size[root_a] += size[root_b]
    roots = np.array([find(node) for node in range(sizes.size)])
    merged = np.where(labels > 0, roots[labels], 0)
    present = np.zeros(sizes.size, dtype=bool)
    present[merged.ravel()] = True
    present[0] = False
    return np.cumsum(present)[merged]


def smooth_affinities(shape, seed):
    """Random affinities with structure (smoothed noise), quantized to few values so that the flood meets ties."""
    import scipy.ndimage

    rng = np.random.default_rng(seed)
    boundaries = scipy.ndimage.gaussian_filter(rng.random(shape), 1.5)
    boundaries = (boundaries - boundaries.min()) / (boundaries.max() - boundaries.min())
    return affinities_from_boundaries(np.round(boundaries, 1).astype(np.float32))


@pytest.mark.parametrize(
    ("shape", "voxel_size", "flood_threshold", "min_size", "masked"),
    [
        ((6, 12, 14), (29.0, 6.0, 6.0), 0.0, 0, False),
        ((6, 12, 14), (10.0, 10.0, 10.0), 0.5, 8, True),
        ((1, 12, 14), None, 0.3, 4, False),
        ((13, 17), (6.0, 6.0), 0.0, 6, True),
    ],
)
def test_fragments_match_a_plain_priority_flood(shape, voxel_size, flood_threshold, min_size, masked):
    affinities = smooth_affinities(shape, seed=len(shape) + min_size)
    mask = None
    if masked:
        mask = np.ones(shape, dtype=bool)
        mask[..., : shape[-1] // 3, :4] = False
    result, max_id = fragments(
        affinities, flood_threshold=flood_threshold, min_size=min_size, mask=mask, voxel_size=voxel_size
    )
    seeds = reference_seeds(affinities, 0.5, mask, voxel_size)
    valid = np.ones(shape, dtype=bool) if mask is None else mask
    flooded = reference_flood(affinities, seeds, valid, np.float32(flood_threshold))
    expected = reference_merge_small(affinities, flooded, min_size)
    np.testing.assert_array_equal(result, expected)
    assert max_id == expected.max() > 1


@pytest.mark.parametrize("shape", [(7, 20, 33), (1, 3, 40), (2, 5, 7), (9, 1, 12), (3, 4, 1)])
def test_seed_smoothing_equals_scipy_gaussian_filter(shape):
    import scipy.ndimage

    from neuropil.segment.watershed import _gaussian

    distance = (np.random.default_rng(4).random(shape) * 30).astype(np.float32)
    expected = scipy.ndimage.gaussian_filter(distance, sigma=1.0)
    np.testing.assert_array_equal(_gaussian(distance.copy(), 0), expected)
    # a 2-D image is smoothed along its own two axes only
    plane = distance[:1]
    np.testing.assert_array_equal(_gaussian(plane.copy(), 1)[0], scipy.ndimage.gaussian_filter(plane[0], sigma=1.0))


@pytest.mark.parametrize("shape", [(6, 9, 11), (1, 5, 8), (4, 1, 1), (5, 6, 2)])
def test_seed_maxima_equal_maximum_filter(shape):
    import scipy.ndimage

    from neuropil.segment.graph import run_in_parts
    from neuropil.segment.watershed import _maxima_kernel

    rng = np.random.default_rng(5)
    smooth = rng.integers(0, 4, size=shape).astype(np.float32)  # few values: plateaus of equal maxima
    interior = rng.random(shape) < 0.8
    maxima = np.empty(shape, dtype=np.uint8)
    run_in_parts(_maxima_kernel, shape[0], smooth, interior.astype(np.uint8), maxima)
    expected = (smooth == scipy.ndimage.maximum_filter(smooth, size=3)) & interior
    np.testing.assert_array_equal(maxima.astype(bool), expected)


@pytest.mark.parametrize("threshold", [0.5, 0.3, np.float64(0.3), np.float32(0.3)])
def test_interior_is_the_mean_affinity_above_the_threshold(threshold):
    from neuropil.segment.affinities import mean_affinity
    from neuropil.segment.graph import run_in_parts
    from neuropil.segment.watershed import _interior_kernel, _Volume

    rng = np.random.default_rng(6)
    # values on a grid of tenths, so that some means equal the threshold in float32 but not in float64
    affinities = (rng.integers(0, 11, size=(3, 5, 6, 7)) / 10).astype(np.float32)
    mask = rng.random((5, 6, 7)) < 0.9
    volume = _Volume(affinities, mask)
    interior = np.empty(volume.shape3, dtype=np.uint8)
    kind = np.result_type(np.float32, threshold).type
    run_in_parts(_interior_kernel, 5, volume.affinities, 0, kind(threshold), volume.mask, True, interior)
    np.testing.assert_array_equal(interior.astype(bool), (mean_affinity(affinities) > threshold) & mask)


def test_a_volume_too_large_for_the_flood_is_refused(monkeypatch):
    from neuropil.segment import watershed

    monkeypatch.setattr(watershed, "MAX_VOXELS", 100)
    with pytest.raises(NeuropilError, match="blockwise"):
        fragments(np.ones((3, 4, 4, 4), dtype=np.float32))


@pytest.mark.parametrize("shape", [(2, 2, 2), (2, 30, 30), (3, 1, 9), (1, 1, 5), (4, 4)])
def test_thin_volumes_match_the_plain_priority_flood(shape):
    # thin volumes: the padding around them is larger than the volume
    affinities = smooth_affinities(shape, seed=sum(shape))
    result, max_id = fragments(affinities, flood_threshold=0.2, min_size=3)
    valid = np.ones(shape, dtype=bool)
    flooded = reference_flood(affinities, reference_seeds(affinities, 0.5, None, None), valid, np.float32(0.2))
    np.testing.assert_array_equal(result, reference_merge_small(affinities, flooded, 3))
    assert max_id == result.max()
