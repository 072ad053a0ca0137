import json

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error as skimage_adapted_rand_error
from skimage.metrics import variation_of_information as skimage_variation_of_information

from neuropil.cli import main
from neuropil.errors import NeuropilError
from neuropil.evaluate import adapted_rand_error, evaluate, variation_of_information
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
