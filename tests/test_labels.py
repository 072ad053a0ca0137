import numpy as np
import pytest
from scipy import ndimage

from neuropil.data.labels import instances_from_semantic
from neuropil.errors import NeuropilError


def test_semantic_codes_by_hand():
    codes = np.array([[[255, 255, 0, 255], [0, 0, 0, 255], [255, 223, 159, 7]]], dtype=np.uint8)
    labels, known = instances_from_semantic(codes, interior=[255], boundary=[0, 159], unknown=[223])
    np.testing.assert_array_equal(labels, [[[1, 1, 0, 2], [0, 0, 0, 2], [3, 0, 0, 0]]])
    # 223 is unknown, 7 is named nowhere: both masked.
    np.testing.assert_array_equal(known, [[[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 1, 0]]])
    assert labels.dtype == np.uint64


def test_instances_match_scipy_per_section_and_never_span_sections():
    rng = np.random.default_rng(0)
    codes = np.where(rng.random((5, 40, 40)) > 0.35, 255, 0).astype(np.uint8)
    labels, known = instances_from_semantic(codes, interior=[255], boundary=[0])
    assert known.all()
    total = 0
    for z in range(codes.shape[0]):
        reference, count = ndimage.label(codes[z] == 255)  # 4-connectivity in 2-D
        total += count
        # Same partition: a one-to-one correspondence between components.
        pairs = np.unique(np.stack([labels[z][reference > 0], reference[reference > 0]]), axis=1)
        assert pairs.shape[1] == count == len(np.unique(labels[z][labels[z] > 0]))
    assert labels.max() == total and len(np.unique(labels)) == total + 1


def test_float_semantic_labels_raise():
    with pytest.raises(NeuropilError, match="must be integers"):
        instances_from_semantic(np.zeros((2, 2), np.float32), interior=[1])
