"""Skeletons of ground truth (kimimaro) and the expected run length of segmentations on them, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from neuropil.errors import NeuropilError
from neuropil.skeletons import ErlScores, Skeleton, erl_scores, expected_run_length, skeletonize

VOXEL = (8.0, 8.0, 8.0)


def _tubes(n: int = 1, length: int = 120) -> np.ndarray:
    """``n`` parallel straight tubes along x, labelled 1..n, 6x6 voxels thick, ``length`` voxels long."""
    labels = np.zeros((12, 12 * n, length + 10), np.uint32)
    for i in range(n):
        labels[3:9, 12 * i + 3 : 12 * i + 9, 5 : 5 + length] = i + 1
    return labels


def _line(label: int, y: int, n: int = 11, voxel_size=VOXEL) -> Skeleton:
    """A hand-made straight skeleton at (z 0, y), nodes at x 0..n-1, one edge between neighbours."""
    voxels = np.stack([np.zeros(n, np.int64), np.full(n, y, np.int64), np.arange(n, dtype=np.int64)], axis=1)
    edges = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1)
    return Skeleton(label, voxels, edges, voxel_size)


# --- skeletons ---------------------------------------------------------------------------------------------------


def test_skeleton_of_a_tube_runs_its_length():
    labels = _tubes(length=120)
    skeletons = skeletonize(labels, voxel_size=VOXEL, dust_threshold=0)
    assert list(skeletons) == [1]  # no skeleton for background 0
    skeleton = skeletons[1]
    assert skeleton.label == 1 and skeleton.voxel_size == VOXEL
    assert np.all(labels[tuple(skeleton.voxels.T)] == 1)  # every node inside its object
    assert 0.95 * 119 * 8 < skeleton.length < 1.1 * 119 * 8
    np.testing.assert_allclose(skeleton.vertices, skeleton.voxels * 8.0)
    assert len(skeleton.edges) == len(skeleton.voxels) - 1  # one path, no loop


def test_skeletons_are_traced_at_the_voxel_size():
    """A column along z of 30 sections at 40 nm is 1.2 um long, however few voxels that is."""
    labels = np.zeros((34, 40, 40), np.uint32)
    labels[2:32, 15:25, 15:25] = 4
    (skeleton,) = skeletonize(labels, voxel_size=(40, 4, 4), dust_threshold=0).values()
    assert 0.95 * 29 * 40 < skeleton.length < 1.1 * 29 * 40


def test_small_objects_are_dust():
    labels = _tubes(n=2, length=120)
    labels[labels == 2] = 0
    labels[4:6, 16:18, 20:22] = 2  # 8 voxels
    assert list(skeletonize(labels, voxel_size=VOXEL, dust_threshold=100)) == [1]


def test_skeletonize_refuses():
    with pytest.raises(NeuropilError, match="3-D"):
        skeletonize(np.zeros((4, 4), np.uint32), voxel_size=VOXEL)
    with pytest.raises(NeuropilError, match="integer labels"):
        skeletonize(np.zeros((4, 4, 4), np.float32), voxel_size=VOXEL)
    with pytest.raises(NeuropilError, match="voxel size must be 3 positive"):
        skeletonize(np.zeros((4, 4, 4), np.uint32), voxel_size=(8, 0, 8))


# --- ERL on kimimaro's skeletons ----------------------------------------------------------------------------------


def test_ground_truth_against_itself_has_nerl_1():
    labels = _tubes(n=3, length=120)
    labels[:, :, 5:40][labels[:, :, 5:40] == 3] = 9  # objects of any length and id
    scores = erl_scores(labels, labels, voxel_size=VOXEL, dust_threshold=0)
    assert scores.n_skeletons == 4
    assert scores.nerl == 1.0 and scores.erl == scores.gt_erl
    assert scores.merged_skeleton_length == 0 and scores.split_skeleton_length == 0 and scores.n_merging_segments == 0
    lengths = np.array([s.length for s in skeletonize(labels, voxel_size=VOXEL, dust_threshold=0).values()])
    assert scores.skeleton_length == pytest.approx(lengths.sum())
    assert scores.gt_erl == pytest.approx((lengths**2).sum() / lengths.sum())  # each object one run


def test_a_tube_split_in_two_halves_halves_erl():
    labels = _tubes(length=120)
    segmentation = labels.copy()
    segmentation[:, :, 65:][segmentation[:, :, 65:] == 1] = 2  # the second half another segment
    scores = erl_scores(segmentation, labels, voxel_size=VOXEL, dust_threshold=0)
    assert scores.nerl == pytest.approx(0.5, abs=0.03)
    assert scores.erl == pytest.approx(scores.gt_erl / 2, rel=0.06)
    assert 0 < scores.split_skeleton_length <= 8 * np.sqrt(3)  # the one edge across the cut
    assert scores.merged_skeleton_length == 0


def test_two_merged_tubes_score_nerl_0():
    labels = _tubes(n=2, length=120)
    segmentation = np.where(labels > 0, 7, 0).astype(np.uint32)  # both in one segment: every edge is wrong
    scores = erl_scores(segmentation, labels, voxel_size=VOXEL, dust_threshold=0)
    assert scores.erl == 0 and scores.nerl == 0
    assert scores.n_merging_segments == 1
    assert scores.merged_skeleton_length == pytest.approx(scores.skeleton_length)


def test_one_segment_covering_everything_scores_far_lower():
    labels = _tubes(n=4, length=120)
    everything = np.ones_like(labels)
    assert erl_scores(everything, labels, voxel_size=VOXEL, dust_threshold=0).nerl == 0
    assert erl_scores(labels, labels, voxel_size=VOXEL, dust_threshold=0).nerl == 1


def test_mask_limits_the_skeletons():
    labels = _tubes(n=2, length=120)
    mask = np.zeros(labels.shape, bool)
    mask[:, :12] = True  # the first tube only
    segmentation = np.where(labels > 0, 7, 0).astype(np.uint32)
    scores = erl_scores(segmentation, labels, voxel_size=VOXEL, mask=mask, dust_threshold=0)
    assert scores.n_skeletons == 1 and scores.nerl == 1  # no second skeleton: no merge


def test_erl_scores_refuses():
    labels = _tubes(length=40)
    with pytest.raises(NeuropilError, match="does not match ground truth shape"):
        erl_scores(labels[:-1], labels, voxel_size=VOXEL)
    with pytest.raises(NeuropilError, match="no skeleton edges"):
        erl_scores(labels, np.zeros_like(labels), voxel_size=VOXEL)
    with pytest.raises(NeuropilError, match="mask shape"):
        erl_scores(labels, labels, voxel_size=VOXEL, mask=np.ones((2, 2, 2)))


# --- ERL on hand-made skeletons: the definition, exactly -----------------------------------------------------------


def test_runs_are_connected_pieces_of_correct_edges():
    """Line a (10 edges of 8 nm) is cut by a segment 0 gap and then split; line b is whole."""
    a, b = _line(1, y=0), _line(2, y=4)
    segmentation = np.zeros((1, 5, 11), np.uint32)
    segmentation[0, 0, :4] = 1  # nodes 0-3: 3 correct edges
    segmentation[0, 0, 5:8] = 1  # node 4 in 0; nodes 5-7 in segment 1 again: 2 correct edges, a run of their own
    segmentation[0, 0, 8:] = 3  # nodes 8-10: 2 correct edges
    segmentation[0, 4, :] = 2
    scores = expected_run_length(segmentation, [a, b])
    runs = np.array([3, 2, 2, 10]) * 8.0
    assert scores.erl == pytest.approx((runs**2).sum() / 160)
    assert scores.gt_erl == pytest.approx((80**2 + 80**2) / 160)
    assert scores.nerl == pytest.approx(scores.erl / scores.gt_erl)
    assert scores.split_skeleton_length == pytest.approx(3 * 8)  # 3-4, 4-5 (segment 0) and 7-8 (1 to 3)
    assert scores.merged_skeleton_length == 0


def test_a_merge_makes_the_whole_segment_wrong_on_every_skeleton():
    """Segment 1 covers all of line a and one node of line b: all of a is wrong, and b's edges at that node."""
    a, b = _line(1, y=0), _line(2, y=4)
    segmentation = np.zeros((1, 5, 11), np.uint32)
    segmentation[0, 0, :] = 1
    segmentation[0, 4, :] = 2
    segmentation[0, 4, 10] = 1  # b's last node
    scores = expected_run_length(segmentation, {1: a, 2: b})
    assert scores.n_merging_segments == 1
    assert scores.erl == pytest.approx(72**2 / 160)  # b's 9 edges in segment 2 are its one run
    assert scores.merged_skeleton_length == pytest.approx(80)  # a's 10 edges
    assert scores.split_skeleton_length == pytest.approx(8)  # b's edge into segment 1


def test_erl_weights_skeletons_by_length():
    """The ERL is the length-weighted mean of each skeleton's own expected run."""
    long_line, short_line = _line(1, y=0, n=21), _line(2, y=2, n=6)
    segmentation = np.zeros((1, 3, 21), np.uint32)
    segmentation[0, 0, :10] = 1
    segmentation[0, 0, 10:] = 2
    segmentation[0, 2, :6] = 3
    scores = expected_run_length(segmentation, [long_line, short_line])
    own = {160: (72**2 + 80**2) / 160, 40: 40.0}  # skeleton length -> its expected run
    assert scores.erl == pytest.approx(sum(length / 200 * run for length, run in own.items()))
    assert isinstance(scores, ErlScores) and set(scores.as_dict()) >= {"erl", "nerl", "gt_erl"}


def test_expected_run_length_refuses():
    with pytest.raises(NeuropilError, match="no skeleton edges"):
        expected_run_length(np.zeros((2, 2, 2), np.uint32), [])
    with pytest.raises(NeuropilError, match="outside the segmentation"):
        expected_run_length(np.zeros((1, 1, 5), np.uint32), [_line(1, y=0)])


def test_evaluate_erl_json_gives_nerl_1_for_the_ground_truth_and_far_lower_for_one_segment(tmp_path, capsys):
    import json

    from neuropil.cli import main
    from neuropil.io import write_volume

    truth = _tubes(2)
    write_volume(f"{tmp_path / 'gt.h5'}:gt", truth, voxel_size=VOXEL)
    write_volume(f"{tmp_path / 'one.h5'}:seg", np.ones_like(truth), voxel_size=VOXEL)
    assert main(["evaluate", f"{tmp_path / 'gt.h5'}:gt", f"{tmp_path / 'gt.h5'}:gt", "--erl", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["nerl"] == pytest.approx(1.0)
    assert main(["evaluate", f"{tmp_path / 'one.h5'}:seg", f"{tmp_path / 'gt.h5'}:gt", "--erl", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["nerl"] < 0.1
    write_volume(f"{tmp_path / 'bare.h5'}:gt", truth)  # no voxel size stored
    assert main(["evaluate", f"{tmp_path / 'one.h5'}:seg", f"{tmp_path / 'bare.h5'}:gt", "--erl"]) == 2
    assert "voxel size" in capsys.readouterr().err
