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
