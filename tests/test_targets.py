import numpy as np
import pytest

from neuropil.conventions import LabelZero
from neuropil.errors import NeuropilError
from neuropil.targets import affinities_from_labels


def test_two_objects_along_x():
    labels = np.array([[[1, 1, 2, 2]]], dtype=np.uint64)
    affinities, mask = affinities_from_labels(labels)
    # channel 2 is (0, 0, -1): voxel x relates to voxel x - 1
    np.testing.assert_array_equal(affinities[2, 0, 0], [0, 1, 0, 1])
    np.testing.assert_array_equal(mask[2, 0, 0], [0, 1, 1, 1])
    # a single section and a single row: no z or y partners
    assert mask[0].sum() == 0 and mask[1].sum() == 0


def test_boundary_zero_gives_known_zero_affinity_but_unknown_zero_is_masked():
    labels = np.array([[[1, 0, 1]]], dtype=np.uint64)
    affinities, mask = affinities_from_labels(labels, label_zero=LabelZero.BOUNDARY)
    np.testing.assert_array_equal(affinities[2, 0, 0], [0, 0, 0])
    np.testing.assert_array_equal(mask[2, 0, 0], [0, 1, 1])
    _, mask = affinities_from_labels(labels, label_zero=LabelZero.UNKNOWN)
    np.testing.assert_array_equal(mask[2, 0, 0], [0, 0, 0])


def test_two_object_volume_by_hand():
    labels = np.zeros((2, 2, 2), dtype=np.uint64)
    labels[0] = 1
    labels[1] = 2
    affinities, mask = affinities_from_labels(labels)
    assert affinities[0, 1].sum() == 0  # across the z boundary: different objects
    assert mask[0, 1].sum() == 4 and mask[0, 0].sum() == 0
    assert affinities[1, :, 1, :].sum() == 4  # in-plane y neighbours are the same object
    assert affinities[2, :, :, 1].sum() == 4


def test_long_range_offsets_and_2d():
    labels = np.array([[1, 1, 1, 2]], dtype=np.uint64)
    affinities, mask = affinities_from_labels(labels, offsets=[(0, -2)])
    np.testing.assert_array_equal(affinities[0, 0], [0, 0, 1, 0])
    np.testing.assert_array_equal(mask[0, 0], [0, 0, 1, 1])


def test_in_plane_only_masks_z_and_known_masks_pairs():
    labels = np.ones((2, 1, 3), dtype=np.uint64)
    _, mask = affinities_from_labels(labels, in_plane_only=True)
    assert mask[0].sum() == 0 and mask[2].sum() == 4
    known = np.ones_like(labels, dtype=bool)
    known[:, :, 0] = False
    _, mask = affinities_from_labels(labels, known=known)
    np.testing.assert_array_equal(mask[2, 0, 0], [0, 0, 1])


def test_input_is_not_modified_and_float_labels_rejected():
    labels = np.array([[[1, 0, 2]]], dtype=np.uint64)
    before = labels.copy()
    affinities_from_labels(labels)
    np.testing.assert_array_equal(labels, before)
    with pytest.raises(NeuropilError, match="integer"):
        affinities_from_labels(labels.astype(float))


def test_in_plane_only_needs_sections():
    # For (y, x) labels the first offset entry is y, so "z offset != 0" would mask y pairs.
    with pytest.raises(NeuropilError, match=r"in_plane_only needs \(z, y, x\) labels"):
        affinities_from_labels(np.ones((2, 3), dtype=np.uint64), offsets=[(-1, 0), (0, -1)], in_plane_only=True)
