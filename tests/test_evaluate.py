import json

import numpy as np
import pytest
import scipy.sparse
from skimage.metrics import adapted_rand_error as skimage_adapted_rand_error
from skimage.metrics import variation_of_information as skimage_variation_of_information

from neuropil.cli import main
from neuropil.errors import NeuropilError
from neuropil.evaluate import adapted_rand_error, evaluate, object_errors, variation_of_information
from neuropil.io import write_volume


def test_voi_of_pure_split_is_one_bit():
    split, merge = variation_of_information(np.array([1, 2, 3, 4]), np.array([1, 1, 8, 8]))
    assert split == pytest.approx(1.0)
    assert merge == pytest.approx(0.0)


def test_voi_of_pure_merge_is_in_merge_term():
    split, merge = variation_of_information(np.array([1, 1, 8, 8]), np.array([1, 2, 3, 4]))
    assert split == pytest.approx(0.0)
    assert merge == pytest.approx(1.0)


def test_identical_segmentations_score_zero_and_relabelling_does_not_matter():
    gt = np.random.default_rng(0).integers(1, 20, size=(4, 8, 8))
    scores = evaluate(gt * 7 + 3, gt)
    assert scores.voi == pytest.approx(0.0)
    assert scores.arand == pytest.approx(0.0)


def test_all_merged_has_no_split_error():
    gt = np.array([[1, 1, 2, 2, 3, 3]])
    scores = evaluate(np.ones_like(gt), gt)
    assert scores.voi_split == pytest.approx(0.0)
    assert scores.voi_merge == pytest.approx(np.log2(3))
    assert scores.arand_recall == pytest.approx(1.0)


def test_metrics_match_scikit_image_on_random_volumes():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, size=(6, 20, 20))
    seg = (gt + (rng.random(gt.shape) < 0.2) * rng.integers(1, 4, size=gt.shape)).astype(np.int64)
    keep = gt != 0
    # called as (gt, seg), skimage returns (H(seg | gt), H(gt | seg)): see the 1-bit case below
    seg_given_gt, gt_given_seg = skimage_variation_of_information(gt[keep], seg[keep])
    split, merge = variation_of_information(seg, gt)
    assert split == pytest.approx(seg_given_gt)
    assert merge == pytest.approx(gt_given_seg)
    # skimage divides by ground-truth pairs for its "precision"; ours is the fraction of
    # segmentation pairs that are true (merges lower it), so the two swap names.
    expected_error, expected_recall, expected_precision = skimage_adapted_rand_error(gt, seg)
    error, precision, recall = adapted_rand_error(seg, gt)
    assert error == pytest.approx(expected_error)
    assert precision == pytest.approx(expected_precision)
    assert recall == pytest.approx(expected_recall)


def test_mask_and_zero_ground_truth_are_not_scored():
    gt = np.array([[1, 1, 0, 2, 2]])
    seg = np.array([[5, 5, 9, 6, 7]])
    assert evaluate(seg, gt).n_voxels == 4
    mask = np.array([[1, 1, 1, 1, 0]], dtype=bool)
    scores = evaluate(seg, gt, mask=mask)
    assert scores.n_voxels == 3
    assert scores.voi == pytest.approx(0.0)


def test_shape_mismatch_raises():
    with pytest.raises(NeuropilError, match="shape"):
        evaluate(np.zeros((2, 2), int), np.zeros((2, 3), int))


def test_cli_evaluate_prints_json(tmp_path, capsys):
    gt = np.array([[[1, 1, 8, 8]]], dtype=np.uint64)
    seg = np.array([[[1, 2, 3, 4]]], dtype=np.uint64)
    write_volume(tmp_path / "v.h5:seg", seg)
    write_volume(tmp_path / "v.h5:gt", gt)
    assert main(["evaluate", f"{tmp_path}/v.h5:seg", f"{tmp_path}/v.h5:gt", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["voi_split"] == pytest.approx(1.0)
    assert result["voi_merge"] == pytest.approx(0.0)
    assert "arand" in result


@pytest.mark.parametrize(
    "seg_address, gt_address, message",
    [
        ("missing.h5:seg", "v.h5:gt", "no such file"),
        ("v.h5:nope", "v.h5:gt", "no dataset 'nope'"),
        ("v.h5:small", "v.h5:gt", "does not match"),
    ],
)
def test_cli_evaluate_bad_input_exits_2_with_one_line(tmp_path, capsys, seg_address, gt_address, message):
    write_volume(tmp_path / "v.h5:gt", np.ones((2, 3, 4), np.uint64))
    write_volume(tmp_path / "v.h5:small", np.ones((2, 3, 3), np.uint64))
    code = main(["evaluate", f"{tmp_path}/{seg_address}", f"{tmp_path}/{gt_address}"])
    error = capsys.readouterr().err
    assert code == 2
    assert message in error
    assert len(error.strip().splitlines()) == 1


def test_scikit_image_voi_order_on_the_one_bit_case():
    seg_given_gt, gt_given_seg = skimage_variation_of_information(np.array([1, 1, 8, 8]), np.array([1, 2, 3, 4]))
    assert (seg_given_gt, gt_given_seg) == pytest.approx((1.0, 0.0))


@pytest.mark.parametrize(
    "seg, gt, mask",
    [
        (np.zeros((0, 4, 4), np.uint64), np.zeros((0, 4, 4), np.uint64), None),  # empty volume
        (np.ones((2, 2), np.uint64), np.zeros((2, 2), np.uint64), None),  # ground truth all 0
        (np.ones((2, 2), np.uint64), np.ones((2, 2), np.uint64), np.zeros((2, 2), bool)),  # empty mask
    ],
)
def test_nothing_to_score_raises_instead_of_a_perfect_score(seg, gt, mask):
    for metric in (evaluate, variation_of_information, adapted_rand_error):
        with pytest.raises(NeuropilError, match="no voxels to score"):
            metric(seg, gt, mask=mask)


def test_cli_evaluate_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    labels = np.arange(8, dtype=np.uint64).reshape(2, 2, 2)
    write_volume(tmp_path / "v.h5:seg", labels)
    write_volume(tmp_path / "v.h5:short", labels[:1])
    write_volume(tmp_path / "v.h5:empty", labels[:0])
    for seg, gt, problem in [
        ("missing.h5:seg", "v.h5:seg", "no such file"),
        ("v.h5:nope", "v.h5:seg", "no dataset 'nope'"),
        ("v.h5:seg", "v.h5:short", "does not match"),
        ("v.h5:empty", "v.h5:empty", "no voxels to score"),
    ]:
        assert main(["evaluate", f"{tmp_path}/{seg}", f"{tmp_path}/{gt}"]) == 2
        error = capsys.readouterr().err
        assert error.startswith("neuropil: error: ") and error.count("\n") == 1 and problem in error


def test_scores_are_plain_python_floats():
    scores = evaluate(np.array([1, 2, 3, 4]), np.array([1, 1, 8, 8]))
    assert all(type(value) in (float, int) for value in scores.as_dict().values())


def test_section_ids_score_objects_within_sections_as_2d_labels_need():
    from neuropil.evaluate import section_ids

    # two columns through four sections; the 2-D labels number each section's objects anew
    columns = np.zeros((4, 6, 6), dtype=np.uint32)
    columns[:, :, :3], columns[:, :, 3:] = 1, 2
    per_section = columns + 10 * np.arange(4, dtype=np.uint32)[:, None, None]
    per_section[:, 0] = 0  # a boundary row, not scored
    assert evaluate(columns, per_section).voi_merge > 1.9  # every column "merges" four objects
    scores = evaluate(section_ids(columns), section_ids(per_section))
    assert scores.voi == pytest.approx(0.0, abs=1e-12) and scores.arand == pytest.approx(0.0, abs=1e-12)
    split = columns.copy()
    split[2:] += 5  # cut between sections 1 and 2: invisible within sections
    assert evaluate(section_ids(split), section_ids(per_section)).voi == pytest.approx(0.0, abs=1e-12)
    merged = np.ones_like(columns)  # the two columns joined: a merge in every section
    assert evaluate(section_ids(merged), section_ids(per_section)).voi_merge == pytest.approx(1.0)
    ids = section_ids(per_section)
    assert ids.dtype == np.uint64 and (ids[:, 0] == 0).all() and len(np.unique(ids[ids > 0])) == 8
    with pytest.raises(NeuropilError, match="section_ids"):
        section_ids(np.zeros((4, 4)))


def test_partial_labels_score_only_labelled_objects():
    # objects 1 and 2 labelled; 0 is unlabelled tissue (other neurites, glia, ...)
    gt = np.array([[1, 1, 1, 0, 0, 0, 0, 2, 2, 0]])
    seg = np.array([[5, 5, 5, 5, 5, 5, 5, 6, 6, 6]])  # segment 5 covers object 1 and much unlabelled tissue
    scores = evaluate(seg, gt)
    assert scores.n_voxels == 5
    assert (scores.voi_split, scores.voi_merge, scores.arand) == pytest.approx((0.0, 0.0, 0.0))
    errors = object_errors(seg, gt)
    assert errors.splits == () and errors.merges == ()
    # a segment reaching through unlabelled tissue into a second labelled object is a merge
    joined = np.array([[5, 5, 5, 7, 7, 5, 5, 5, 5, 6]])
    scores = evaluate(joined, gt)
    assert scores.voi_split == pytest.approx(0.0)
    assert scores.voi_merge == pytest.approx(-(3 / 5) * np.log2(3 / 5) - (2 / 5) * np.log2(2 / 5))
    (merge,) = object_errors(joined, gt).merges
    assert (merge.segment_id, merge.size, merge.gt_ids, merge.n_objects) == (5, 5, (1, 2), 2)


def test_unlabelled_voxels_change_no_score():
    rng = np.random.default_rng(3)
    gt = rng.integers(1, 5, size=(3, 8, 8))
    seg = gt // 2 + 10 * (rng.random(gt.shape) < 0.1)
    reference = evaluate(seg, gt)
    reference_errors = object_errors(seg, gt)
    # pad with unlabelled voxels whose segments are new, existing or one huge segment
    for fill in (rng.integers(0, 50, size=(3, 8, 8)), np.full((3, 8, 8), 1), np.full((3, 8, 8), 10)):
        padded_gt = np.concatenate([gt, np.zeros_like(gt)], axis=2)
        padded_seg = np.concatenate([seg, fill], axis=2)
        assert evaluate(padded_seg, padded_gt) == reference
        assert object_errors(padded_seg, padded_gt) == reference_errors
    # a mask leaving out the same voxels is the same as labelling them 0
    mask = np.concatenate([np.ones_like(gt, bool), np.zeros_like(gt, bool)], axis=2)
    labelled_gt = np.concatenate([gt, rng.integers(1, 5, size=gt.shape)], axis=2)
    assert evaluate(padded_seg, labelled_gt, mask=mask) == reference


@pytest.mark.parametrize(
    "seg, gt, split_is_zero, merge_is_zero",
    [
        (np.array([3, 3, 4, 4, 9]), np.array([1, 1, 2, 2, 5]), True, True),  # identical up to ids
        (np.array([1, 2, 3, 3, 4]), np.array([1, 1, 2, 2, 2]), False, True),  # pure split
        (np.array([1, 1, 1, 1, 2]), np.array([1, 2, 3, 3, 4]), True, False),  # pure merge
    ],
)
def test_object_errors_of_identical_pure_split_and_pure_merge(seg, gt, split_is_zero, merge_is_zero):
    scores = evaluate(seg, gt)
    errors = object_errors(seg, gt)
    assert (scores.voi_split == pytest.approx(0.0)) == split_is_zero
    assert (scores.voi_merge == pytest.approx(0.0)) == merge_is_zero
    assert (errors.splits == ()) == split_is_zero and (errors.merges == ()) == merge_is_zero


def test_object_errors_on_a_hand_made_case():
    # object 10 (6 voxels) cut 4 + 2 into segments 1 and 2; object 20 (4 voxels) whole in segment 3;
    # segment 3 also joins object 30 (2 voxels); object 40 (3 voxels) whole in segment 4; 0 unlabelled
    gt = np.array([10, 10, 10, 10, 10, 10, 20, 20, 20, 20, 30, 30, 40, 40, 40, 0, 0])
    seg = np.array([1, 1, 1, 1, 2, 2, 3, 3, 3, 3, 3, 3, 4, 4, 4, 3, 2])
    n = 15
    errors = object_errors(seg, gt)
    (split,) = errors.splits
    assert (split.gt_id, split.size, split.n_segments) == (10, 6, 2)
    assert split.bits == pytest.approx((4 * np.log2(6 / 4) + 2 * np.log2(6 / 2)) / n)
    (merge,) = errors.merges
    assert (merge.segment_id, merge.size, merge.gt_ids, merge.n_objects) == (3, 6, (20, 30), 2)
    assert merge.bits == pytest.approx((4 * np.log2(6 / 4) + 2 * np.log2(6 / 2)) / n)
    assert (errors.n_split, errors.n_merging) == (1, 1)
    scores = evaluate(seg, gt)
    assert split.bits == pytest.approx(scores.voi_split) and merge.bits == pytest.approx(scores.voi_merge)
    assert json.loads(json.dumps(errors.as_dict()))["merges"][0]["gt_ids"] == [20, 30]


def test_object_errors_sum_to_voi_and_come_worst_first():
    rng = np.random.default_rng(7)
    gt = rng.integers(0, 30, size=(6, 24, 24))
    seg = rng.integers(0, 25, size=gt.shape) * (rng.random(gt.shape) < 0.5) + gt * 100
    scores = evaluate(seg, gt)
    errors = object_errors(seg, gt, top=1000)
    assert sum(split.bits for split in errors.splits) == pytest.approx(scores.voi_split)
    assert sum(merge.bits for merge in errors.merges) == pytest.approx(scores.voi_merge)
    assert len(errors.splits) == errors.n_split and len(errors.merges) == errors.n_merging
    assert all(split.n_segments > 1 and split.bits > 0 for split in errors.splits)
    assert all(merge.n_objects > 1 and len(merge.gt_ids) <= 5 for merge in errors.merges)
    worst = object_errors(seg, gt, top=3)
    assert worst.splits == errors.splits[:3] and worst.merges == errors.merges[:3]
    assert [s.bits for s in errors.splits] == sorted((s.bits for s in errors.splits), reverse=True)
    assert [m.bits for m in errors.merges] == sorted((m.bits for m in errors.merges), reverse=True)
    sizes = {int(g): int(np.count_nonzero(gt == g)) for g in np.unique(gt[gt > 0])}
    assert all(split.size == sizes[split.gt_id] for split in errors.splits)
    with pytest.raises(NeuropilError, match="top"):
        object_errors(seg, gt, top=0)


def _write_merge_and_split(tmp_path):
    # object 1 is cut into segments 1 and 2; segment 3 joins objects 2 and 3 (and unlabelled voxels)
    gt = np.array([[[1, 1, 1, 1, 2, 2, 3, 3, 0, 0]]], dtype=np.uint64)
    seg = np.array([[[1, 1, 2, 2, 3, 3, 3, 3, 3, 3]]], dtype=np.uint64)
    write_volume(tmp_path / "v.h5:seg", seg)
    write_volume(tmp_path / "v.h5:gt", gt)
    return [f"{tmp_path}/v.h5:seg", f"{tmp_path}/v.h5:gt"]


def test_cli_evaluate_objects_lists_worst_splits_and_merges(tmp_path, capsys):
    addresses = _write_merge_and_split(tmp_path)
    assert main(["evaluate", *addresses]) == 0
    plain = capsys.readouterr().out
    assert plain.splitlines()[0].startswith("VOI split") and len(plain.splitlines()) == 4
    assert main(["evaluate", *addresses, "--objects", "5"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(plain)
    lines = text.splitlines()
    split_row = lines[lines.index(next(line for line in lines if line.startswith("Worst splits"))) + 2].split()
    assert split_row[:3] == ["1", "4", "2"] and float(split_row[3]) == pytest.approx(0.5)
    merge_row = lines[lines.index(next(line for line in lines if line.startswith("Worst merges"))) + 2].split()
    assert merge_row[:3] == ["3", "4", "2"] and float(merge_row[3]) == pytest.approx(0.5)
    assert text.rstrip().endswith("2, 3")
    assert main(["evaluate", *addresses, "--objects", "0"]) == 2
    assert "--objects" in capsys.readouterr().err


def test_cli_evaluate_objects_in_json(tmp_path, capsys):
    addresses = _write_merge_and_split(tmp_path)
    assert main(["evaluate", *addresses, "--json"]) == 0
    assert "worst_splits" not in json.loads(capsys.readouterr().out)
    assert main(["evaluate", *addresses, "--json", "--objects", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["voi_split"] == pytest.approx(0.5) and result["voi_merge"] == pytest.approx(0.5)
    assert result["worst_splits"] == [{"gt_id": 1, "size": 4, "n_segments": 2, "bits": pytest.approx(0.5)}]
    assert result["worst_merges"] == [
        {"segment_id": 3, "size": 4, "gt_ids": [2, 3], "n_objects": 2, "bits": pytest.approx(0.5)}
    ]


def _reference_labelled_table(seg, gt, *, mask=None, ignore_zero=True):
    """The contingency table as it was first computed: np.unique's sort, then a coo matrix."""
    keep = np.ones(gt.shape, bool) if mask is None else mask.astype(bool)
    if ignore_zero:
        keep &= gt != 0
    seg_ids, seg_index = np.unique(seg[keep], return_inverse=True)
    gt_ids, gt_index = np.unique(gt[keep], return_inverse=True)
    table = scipy.sparse.coo_matrix(
        (np.ones(seg_index.size), (seg_index.ravel(), gt_index.ravel())), shape=(seg_ids.size, gt_ids.size)
    )
    return table.tocsr(), seg_ids, gt_ids


def _random_labels(rng, dtype, shape):
    """Labels with 0 among them: every id of 8 and 16 bits, or 40 ids spread over a wider type's whole range."""
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    info = np.iinfo(dtype)
    if info.bits <= 16:
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    if dtype == np.uint64:  # huge ids, above 2**63 too
        pool = rng.integers(0, 2**63, size=40, dtype=np.uint64) | np.uint64(2**63)
    else:
        pool = rng.integers(info.min, info.max, size=40, endpoint=True).astype(dtype)
    return np.where(rng.random(shape) < 0.2, dtype(0), rng.choice(pool, size=shape))


@pytest.mark.parametrize("dtype", [np.int32, np.uint64, np.uint8, np.int8, np.uint16, np.int64, np.bool_])
def test_tables_and_scores_are_identical_to_sorting_ids(dtype):
    from neuropil.evaluate import GroundTruth, contingency_table

    rng = np.random.default_rng(int(np.dtype(dtype).num))
    shape = (3, 60, 70) if dtype in (np.uint8, np.int8) else (4, 128, 256)  # 2**17 voxels: every 16-bit id
    for trial in range(3):
        gt = _random_labels(rng, dtype, shape)
        seg = _random_labels(rng, dtype, shape)
        if trial == 1:
            seg = (gt.astype(np.int64) // 3).astype(dtype)  # merges of the ground truth's objects
        mask = rng.random(shape) < 0.8 if trial == 2 else None
        for ignore_zero in (True, False):
            expected, seg_ids, gt_ids = _reference_labelled_table(seg, gt, mask=mask, ignore_zero=ignore_zero)
            table = contingency_table(seg, gt, mask=mask, ignore_zero=ignore_zero)
            assert table.shape == expected.shape
            assert np.array_equal(table.indptr, expected.indptr) and np.array_equal(table.indices, expected.indices)
            assert np.array_equal(table.data, expected.data)
            _, rows, columns = GroundTruth(gt, mask=mask, ignore_zero=ignore_zero).labelled_table(seg)
            assert rows.dtype == seg.dtype and np.array_equal(rows, seg_ids) and np.array_equal(columns, gt_ids)
        scores = evaluate(seg, gt, mask=mask)
        # scikit-image indexes its table by the ids themselves: give it small ones, 1 and up
        keep = (gt != 0) & (True if mask is None else mask)
        gt_small = np.unique(gt[keep], return_inverse=True)[1] + 1
        seg_small = np.unique(seg[keep], return_inverse=True)[1] + 1
        seg_given_gt, gt_given_seg = skimage_variation_of_information(gt_small, seg_small)
        assert scores.voi_split == pytest.approx(seg_given_gt, abs=1e-9)
        assert scores.voi_merge == pytest.approx(gt_given_seg, abs=1e-9)
        assert scores.arand == pytest.approx(skimage_adapted_rand_error(gt_small, seg_small)[0], abs=1e-12)


def test_huge_uint64_ids_are_reported_as_they_are():
    gt = np.array([2**64 - 1, 2**64 - 1, 2**63, 2**63, 0], dtype=np.uint64)
    seg = np.array([2**64 - 2, 7, 7, 7, 2**64 - 2], dtype=np.uint64)
    errors = object_errors(seg, gt)
    assert [split.gt_id for split in errors.splits] == [2**64 - 1]
    (merge,) = errors.merges
    assert (merge.segment_id, set(merge.gt_ids)) == (7, {2**64 - 1, 2**63})


def test_inputs_are_not_modified():
    rng = np.random.default_rng(5)
    gt = rng.integers(0, 9, size=(4, 16, 16)).astype(np.uint64) * np.uint64(2**40)
    seg = rng.integers(0, 300, size=gt.shape).astype(np.int32)
    views = [(seg, gt), (seg.transpose(2, 1, 0), gt.transpose(2, 1, 0)), (seg[:, ::2], gt[:, ::2])]
    for seg_view, gt_view in views:
        seg_before, gt_before = seg_view.copy(), gt_view.copy()
        for ignore_zero in (True, False):
            evaluate(seg_view, gt_view, ignore_zero=ignore_zero)
            object_errors(seg_view, gt_view)
        assert np.array_equal(seg_view, seg_before) and np.array_equal(gt_view, gt_before)


def test_prepared_ground_truth_scores_as_separate_calls():
    from neuropil.evaluate import GroundTruth, evaluate_many

    rng = np.random.default_rng(11)
    gt = rng.integers(0, 40, size=(5, 30, 30)).astype(np.uint64)
    mask = rng.random(gt.shape) < 0.9
    segmentations = [
        gt // np.uint64(step) + (rng.random(gt.shape) < 0.05).astype(np.uint64) for step in (1, 2, 3, 5, 8)
    ]
    for given in (None, mask):
        expected = [evaluate(seg, gt, mask=given) for seg in segmentations]
        assert evaluate_many(segmentations, gt, mask=given) == expected
        assert evaluate_many((seg for seg in segmentations), gt, mask=given) == expected  # any iterable
        truth = GroundTruth(gt, mask=given)
        assert [truth.evaluate(seg) for seg in segmentations] == expected
        assert [truth.evaluate(seg) for seg in reversed(segmentations)] == expected[::-1]  # reusable, in any order
        assert truth.object_errors(segmentations[2], top=3) == object_errors(segmentations[2], gt, mask=given, top=3)
        assert truth.n_voxels == expected[0].n_voxels
    assert evaluate_many([], gt) == []
    assert evaluate_many([gt], gt, ignore_zero=False) == [evaluate(gt, gt, ignore_zero=False)]
    truth = GroundTruth(gt)
    with pytest.raises(NeuropilError, match="does not match ground truth shape"):
        truth.evaluate(gt[:2])
    with pytest.raises(NeuropilError, match="integer ids"):
        truth.evaluate(gt.astype(np.float32))
    with pytest.raises(NeuropilError, match="top"):
        truth.object_errors(gt, top=0)
    with pytest.raises(NeuropilError, match="mask shape"):
        GroundTruth(gt, mask=mask[:1])
    with pytest.raises(NeuropilError, match="no voxels to score"):
        GroundTruth(np.zeros_like(gt)).evaluate(gt)


def _write_sweep(tmp_path):
    """Ground truth in v.h5 and a sweep of segmentations in s.h5:sweep, with arrays a group's scoring leaves out."""
    gt = np.array([[[1, 1, 1, 1, 2, 2, 3, 3, 0, 0]]], dtype=np.uint64)
    split_and_merge = np.array([[[1, 1, 2, 2, 3, 3, 3, 3, 3, 3]]], dtype=np.uint64)
    write_volume(tmp_path / "v.h5:gt", gt)
    write_volume(tmp_path / "s.h5:sweep/seg_t10", split_and_merge)  # VOI split 0.5, merge 0.5
    write_volume(tmp_path / "s.h5:sweep/seg_t2", gt * 7)  # perfect
    write_volume(tmp_path / "s.h5:sweep/seg_t1", np.ones_like(gt))  # all merged: VOI merge 1.5
    write_volume(tmp_path / "s.h5:sweep/raw", np.zeros(gt.shape, np.float32))  # not ids: left out
    write_volume(tmp_path / "s.h5:sweep/small", gt[..., :3])  # another shape: left out
    write_volume(tmp_path / "s.h5:other/gt", gt)  # in another group
    return f"{tmp_path}/v.h5:gt", f"{tmp_path}/s.h5:sweep"


def test_cli_evaluate_several_segmentations_prints_one_table(tmp_path, capsys):
    gt, sweep = _write_sweep(tmp_path)
    names = [f"{sweep}/seg_t10", f"{sweep}/seg_t2", gt]
    assert main(["evaluate", *names, gt]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["segmentation", "VOI", "split", "VOI", "merge", "ARAND", "CREMI"]
    assert [line.split()[0] for line in lines[1:]] == names
    assert [float(value) for value in lines[1].split()[1:]] == pytest.approx([0.5, 0.5, 0.5, np.sqrt(0.5)], abs=1e-4)
    assert [float(value) for value in lines[2].split()[1:]] == [0.0] * 4
    assert main(["evaluate", *names, gt, "--json"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [result["segmentation"] for result in results] == names
    assert results[0]["voi_split"] == pytest.approx(0.5) and results[0]["cremi_score"] == pytest.approx(np.sqrt(0.5))
    assert results[1]["voi"] == 0.0 and "worst_splits" not in results[0]
    assert main(["evaluate", *names, gt, "--json", "--objects", "1"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert results[0]["worst_splits"] == [{"gt_id": 1, "size": 4, "n_segments": 2, "bits": pytest.approx(0.5)}]
    assert results[1]["worst_splits"] == [] and results[1]["worst_merges"] == []
    assert main(["evaluate", *names, gt, "--objects", "1"]) == 0
    text = capsys.readouterr().out
    assert text.count("Worst splits") == 3 and f"\n{names[0]}\n\nWorst splits (1 of 1 objects" in text


def test_cli_evaluate_group_scores_its_arrays_of_the_ground_truths_shape_by_name(tmp_path, capsys):
    gt, sweep = _write_sweep(tmp_path)
    assert main(["evaluate", sweep, gt]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [f"{sweep}/seg_t{t}" for t in (1, 2, 10)]
    assert float(lines[1].split()[2]) == pytest.approx(1.5)  # all merged
    assert main(["evaluate", sweep, gt, "--json"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["segmentation"] for r in results] == [f"{sweep}/seg_t{t}" for t in (1, 2, 10)]
    assert [r["voi_merge"] for r in results] == pytest.approx([1.5, 0.0, 0.5])
    # a zarr group, the ground truth among its arrays: the ground truth is not scored against itself
    for name, labels in (("gt", [[[1, 1, 1, 1, 2, 2, 3, 3, 0, 0]]]), ("b", [[[4, 4, 4, 4, 5, 5, 5, 5, 5, 5]]])):
        write_volume(tmp_path / f"z.zarr/labels/{name}", np.array(labels, dtype=np.uint32))
    assert main(["evaluate", f"{tmp_path}/z.zarr/labels", f"{tmp_path}/z.zarr/labels/gt", "--json"]) == 0
    (result,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert result["segmentation"] == f"{tmp_path}/z.zarr/labels/b" and result["voi_merge"] == pytest.approx(0.5)
    # a group and an array together, in the order given
    assert main(["evaluate", f"{sweep}/seg_t10", sweep, gt]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 4


@pytest.mark.parametrize(
    "arguments, problem",
    [
        (["s.h5:sweep/small", "v.h5:gt"], "does not match"),  # one array of another shape
        (["s.h5:sweep/seg_t10", "s.h5:sweep/small", "v.h5:gt"], "s.h5:sweep/small"),
        (["s.h5", "v.h5:gt"], "no integer array of the ground truth's shape"),  # a group of groups
        (["s.h5:sweep", "s.h5:sweep/small"], "no integer array of the ground truth's shape (1, 1, 3)"),
        (["s.h5:sweep/nope", "v.h5:gt"], "no dataset 'sweep/nope'"),
        (["s.h5:sweep", "v.h5:nope"], "no dataset 'nope'"),
        (["missing.zarr/a", "s.h5:sweep", "v.h5:gt"], "no such file"),
    ],
)
def test_cli_evaluate_several_bad_input_exits_2_with_one_line(tmp_path, capsys, arguments, problem):
    _write_sweep(tmp_path)
    assert main(["evaluate", *(f"{tmp_path}/{argument}" for argument in arguments)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # checked before any scoring
    assert captured.err.startswith("neuropil: error: ") and captured.err.count("\n") == 1
    assert problem in captured.err
