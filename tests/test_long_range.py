"""Long-range affinities: targets, the masked loss, segmentation from channels 0-2, the mutex watershed's repulsion."""

import numpy as np
import pytest
import torch

from neuropil.conventions import NEAREST_NEIGHBOURS, LabelZero
from neuropil.errors import NeuropilError
from neuropil.segment import agglomerate, segment
from neuropil.segment.learned import train
from neuropil.segment.watershed import fragments as watershed_fragments
from neuropil.targets import affinities_from_labels
from neuropil.train.loss import masked_bce_loss
from neuropil.visualize import in_plane_affinity, in_plane_target

LONG_RANGE = (*NEAREST_NEIGHBOURS, (0, 0, -9), (0, -3, 0), (-2, 0, 0))


def test_a_pair_nine_voxels_apart_across_a_boundary_is_zero_inside_an_object_one_off_the_edge_masked():
    labels = np.zeros((1, 1, 20), dtype=np.uint64)
    labels[..., :12] = 1
    labels[..., 12:] = 2
    affinities, mask = affinities_from_labels(labels, offsets=[(0, 0, -9)])
    # voxel x relates to x - 9: off the edge for x < 9
    np.testing.assert_array_equal(mask[0, 0, 0], [0] * 9 + [1] * 11)
    expected = [0] * 9 + [1, 1, 1] + [0] * 8  # x = 9..11: both in 1; x = 12..19: x - 9 in 1, x in 2
    np.testing.assert_array_equal(affinities[0, 0, 0], expected)
    # x = 21.. would be inside object 2 again: a longer volume has ones there
    longer = np.concatenate([labels, np.full((1, 1, 10), 2, dtype=np.uint64)], axis=-1)
    affinities, _ = affinities_from_labels(longer, offsets=[(0, 0, -9)])
    assert affinities[0, 0, 0, 21:].all() and not affinities[0, 0, 0, 12:21].any()


def test_long_range_pairs_touching_zero_follow_the_label_zero_meaning_per_channel():
    labels = np.array([[[1, 1, 1, 0, 1, 1, 1]]], dtype=np.uint64)
    offsets = [(0, 0, -1), (0, 0, -3)]
    # the pair (x=6, x=3) touches label 0: known 0 for boundaries, masked when 0 is unknown
    affinities, mask = affinities_from_labels(labels, offsets=offsets, label_zero=LabelZero.BOUNDARY)
    np.testing.assert_array_equal(affinities[1, 0, 0], [0, 0, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(mask[1, 0, 0], [0, 0, 0, 1, 1, 1, 1])
    affinities, mask = affinities_from_labels(labels, offsets=offsets, label_zero=LabelZero.UNKNOWN)
    np.testing.assert_array_equal(mask[1, 0, 0], [0, 0, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(mask[0, 0, 0], [0, 1, 1, 0, 0, 1, 1])
    # the pair (x=4, x=1) jumps over the 0 and joins the same object: affinity 1, known
    assert affinities[1, 0, 0, 4] == 1 and mask[1, 0, 0, 4] == 1


def test_unknown_voxels_mask_long_range_pairs_and_in_plane_labels_mask_every_z_channel():
    labels = np.ones((4, 4, 12), dtype=np.uint64)
    known = np.ones(labels.shape, dtype=bool)
    known[:, :, 0] = False
    _, mask = affinities_from_labels(labels, offsets=LONG_RANGE, known=known)
    # channel 3, (0, 0, -9): x = 9 pairs with x = 0, unknown
    assert not mask[3, :, :, 9].any() and mask[3, :, :, 10:].all()
    _, mask = affinities_from_labels(labels, offsets=LONG_RANGE, in_plane_only=True)
    assert mask[0].sum() == 0 and mask[5].sum() == 0  # (-1, 0, 0) and (-2, 0, 0)
    assert mask[4].sum() == 4 * 1 * 12 and mask[3].sum() == 4 * 4 * 3


def test_zero_offsets_and_offsets_of_the_wrong_length_are_refused():
    labels = np.ones((2, 3, 3), dtype=np.uint64)
    with pytest.raises(NeuropilError, match=r"offset \(0, 0, 0\) relates a voxel to itself"):
        affinities_from_labels(labels, offsets=[(-1, 0, 0), (0, 0, 0)])
    with pytest.raises(NeuropilError, match="has 2 axes"):
        affinities_from_labels(labels, offsets=[(0, -1)])


def test_masked_bce_ignores_masked_entries_of_each_channel():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn((2, 6, 2, 4, 4), generator=generator)
    target = (torch.rand((2, 6, 2, 4, 4), generator=generator) > 0.5).float()
    mask = torch.ones_like(target)
    mask[:, 4] = 0  # one long-range channel unknown everywhere
    mask[:, 3, :, :, :2] = 0  # another unknown near the edge
    for balance in (False, True):
        loss = masked_bce_loss(logits, target, mask, balance=balance)
        changed_logits, changed_target = logits.clone(), target.clone()
        hidden = mask == 0
        changed_logits[hidden] = 50.0
        changed_target[hidden] = 1 - changed_target[hidden]
        assert masked_bce_loss(changed_logits, changed_target, mask, balance=balance) == pytest.approx(loss.item())
        # the same change where the mask is 1 changes the loss: the long-range channels are trained
        seen = torch.zeros_like(mask, dtype=torch.bool)
        seen[:, 5] = True
        changed_logits[seen] = 50.0
        assert masked_bce_loss(changed_logits, changed_target, mask, balance=balance) > loss + 1


def _smooth_affinities(channels: int, seed: int = 0) -> np.ndarray:
    """Random affinities with a few objects: high inside the cells of a grid, low across them."""
    rng = np.random.default_rng(seed)
    _, y, x = np.indices((6, 24, 24))
    cells = (y // 8) * 3 + x // 8
    affinities = rng.uniform(0.6, 1.0, size=(channels, *cells.shape)).astype(np.float32)
    for axis in range(3):
        shifted = np.roll(cells, 1, axis=axis)
        affinities[axis][cells != shifted] = rng.uniform(0.0, 0.7, size=int((cells != shifted).sum()))
    affinities[3:] = rng.uniform(0, 1, size=affinities[3:].shape)  # long-range channels: anything
    return affinities


def test_segmentation_of_six_channels_equals_that_of_their_first_three():
    six = _smooth_affinities(6)
    three = six[:3].copy()
    fragments_six, max_six = watershed_fragments(six, voxel_size=(25, 13, 13), min_size=5)
    fragments_three, max_three = watershed_fragments(three, voxel_size=(25, 13, 13), min_size=5)
    np.testing.assert_array_equal(fragments_six, fragments_three)
    assert max_six == max_three > 1
    for method in ("mean", "quantile", "mutex"):
        ours = agglomerate(six, fragments_six, method=method, thresholds=(0.3, 0.6))
        reference = agglomerate(three, fragments_three, method=method, thresholds=(0.3, 0.6))
        for a, b in zip(ours, reference):
            np.testing.assert_array_equal(a, b)
    labels = np.where(np.indices(six.shape[1:])[2] < 12, 1, 2)
    model_six = train(six, fragments_six, labels, epochs=1, n_estimators=5)
    model_three = train(three, fragments_three, labels, epochs=1, n_estimators=5)
    (learned_six,) = agglomerate(six, fragments_six, method="learned", model=model_six)
    (learned_three,) = agglomerate(three, fragments_three, method="learned", model=model_three)
    np.testing.assert_array_equal(learned_six, learned_three)
    whole_six = segment(six, voxel_size=(25, 13, 13), thresholds=(0.5,), min_size=5)
    whole_three = segment(three, voxel_size=(25, 13, 13), thresholds=(0.5,), min_size=5)
    np.testing.assert_array_equal(whole_six.fragments, whole_three.fragments)
    np.testing.assert_array_equal(whole_six.segmentations[0], whole_three.segmentations[0])


def _two_objects_with_a_leaky_contact():
    """Objects x < 6 and x >= 6, each split into two fragments along y; their contact's
    nearest-neighbour affinity (0.7) is above 0.5, so the mean method merges them."""
    _, y, x = np.indices((2, 8, 12))
    labels = np.where(x < 6, 1, 2).astype(np.uint64)
    fragments = (labels - 1) * 2 + (y >= 4) + 1
    affinities = np.full((4, *labels.shape), 0.9, dtype=np.float32)
    affinities[2][x == 6] = 0.7
    # channel 3, (0, 0, -3): 0 across the two objects, 0.95 inside each
    across = labels != np.where(x >= 3, np.roll(labels, 3, axis=2), labels)
    affinities[3] = np.where(across, 0.0, 0.95)
    affinities[3][x < 3] = 0.0  # no partner
    return affinities, fragments.astype(np.uint64), labels


def test_mutex_with_long_range_offsets_separates_objects_the_nearest_neighbours_merge():
    affinities, fragments, labels = _two_objects_with_a_leaky_contact()
    offsets = (*NEAREST_NEIGHBOURS, (0, 0, -3))
    (nearest,) = agglomerate(affinities, fragments, method="mutex", thresholds=[0.5])
    assert len(np.unique(nearest)) == 1
    (mean,) = agglomerate(affinities, fragments, method="mean", thresholds=[0.5], offsets=offsets)
    assert len(np.unique(mean)) == 1  # the greedy methods read channels 0-2 only
    (long_range,) = agglomerate(affinities, fragments, method="mutex", thresholds=[0.5], offsets=offsets)
    for object_id in (1, 2):
        assert len(np.unique(long_range[labels == object_id])) == 1
    assert long_range[0, 0, 0] != long_range[0, 0, -1]


def test_long_range_affinity_never_merges_fragments_that_do_not_touch():
    fragments = np.zeros((1, 1, 7), dtype=np.uint64)
    fragments[..., :3] = 1
    fragments[..., 4:] = 2  # x = 3 is no fragment: 1 and 2 do not touch
    affinities = np.ones((4, 1, 1, 7), dtype=np.float32)
    (result,) = agglomerate(
        affinities, fragments, method="mutex", thresholds=[0.5], offsets=(*NEAREST_NEIGHBOURS, (0, 0, -4))
    )
    assert result[0, 0, 0] == 1 and result[0, 0, 6] == 2


def test_mutex_offsets_must_match_the_channels_and_the_convention():
    affinities, fragments, _ = _two_objects_with_a_leaky_contact()
    with pytest.raises(NeuropilError, match="3 offsets for 4 affinity channels"):
        agglomerate(affinities, fragments, method="mutex", offsets=NEAREST_NEIGHBOURS)
    with pytest.raises(NeuropilError, match="must point backwards"):
        agglomerate(affinities, fragments, method="mutex", offsets=(*NEAREST_NEIGHBOURS, (0, 0, 3)))
    with pytest.raises(NeuropilError, match="need affinities"):
        agglomerate(affinities[0], fragments, method="mutex", offsets=(*NEAREST_NEIGHBOURS, (0, 0, -3)))


def test_pictures_show_the_nearest_neighbour_channels_only():
    rng = np.random.default_rng(0)
    affinities = rng.random((len(LONG_RANGE), 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(in_plane_affinity(affinities, LONG_RANGE), affinities[1:3].mean(axis=0))
    target = (affinities > 0.5).astype(np.float32)
    mask = np.ones_like(target)
    mask[5] = 0  # a long-range channel unknown everywhere: the picture's mask ignores it
    mask[1, :, :, 0] = 0
    truth, known = in_plane_target(target, mask, LONG_RANGE)
    np.testing.assert_array_equal(truth, target[1:3].min(axis=0))
    np.testing.assert_array_equal(known, mask[1])
    with pytest.raises(NeuropilError, match="6 offsets for 5 affinity channels"):
        in_plane_affinity(affinities[:5], LONG_RANGE)
    with pytest.raises(NeuropilError, match="no in-plane nearest-neighbour offset"):
        in_plane_affinity(affinities[:1], [(-1, 0, 0)])


def test_training_batches_carry_every_channel_masked_on_its_own(tmp_path):
    from neuropil.data.volumes import TrainingVolume
    from neuropil.model import ModelConfig
    from neuropil.train import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    labels = np.where(np.indices((8, 32, 32))[2] < 16, 1, 2).astype(np.uint64)
    labels[:, :, 15] = 0  # a boundary
    volume = TrainingVolume(
        raw=rng.integers(0, 255, labels.shape, dtype=np.uint8), labels=labels, voxel_size=(20.0, 10.0, 10.0), name="two"
    )
    model_config = ModelConfig(offsets=LONG_RANGE, base_channels=2, depth=2, voxel_size=(20.0, 10.0, 10.0))
    train_config = TrainConfig(iterations=1, patch_shape=(4, 16, 16), augment=False, validation=False)
    trainer = Trainer({"two": [volume]}, out_dir=tmp_path, model_config=model_config, train_config=train_config)
    raw, target, mask = trainer.batch()
    assert target.shape == mask.shape == (2, len(LONG_RANGE), 4, 16, 16)
    # (0, 0, -9): the first 9 columns of a patch have no partner in it; (-2, 0, 0): the first 2 sections
    assert not mask[:, 3, :, :, :9].any() and mask[:, 3, :, :, 9:].all()
    assert not mask[:, 5, :2].any() and mask[:, 5, 2:].all()
    assert torch.isfinite(trainer.model(raw)).all() and trainer.model(raw).shape[1] == len(LONG_RANGE)


def test_pictures_of_long_range_predictions_are_drawn(tmp_path):
    from neuropil.visualize import figure_slice

    rng = np.random.default_rng(0)
    affinities = rng.random((len(LONG_RANGE), 3, 12, 12)).astype(np.float32)
    path = figure_slice(
        tmp_path / "f.png",
        raw=rng.integers(0, 255, (3, 12, 12), dtype=np.uint8),
        affinities=affinities,
        target_affinities=(affinities > 0.5).astype(np.float32),
        target_mask=np.ones_like(affinities),
        offsets=LONG_RANGE,
    )
    assert path.read_bytes().startswith(b"\x89PNG")


def test_segment_command_gives_the_mutex_the_offsets_stored_on_its_input(tmp_path):
    from neuropil.cli import main
    from neuropil.io import read_volume, write_volume

    affinities, fragments, _ = _two_objects_with_a_leaky_contact()
    offsets = [*NEAREST_NEIGHBOURS, (0, 0, -3)]
    common = ["--fragments", f"{tmp_path / 'in.zarr'}/fragments", "--method", "mutex", "--threshold", "0.5"]
    write_volume(f"{tmp_path / 'in.zarr'}/fragments", fragments)
    write_volume(f"{tmp_path / 'in.zarr'}/bare", affinities)
    write_volume(
        f"{tmp_path / 'in.zarr'}/stored",
        affinities,
        attributes={"neuropil": {"offsets": [list(offset) for offset in offsets]}},
    )
    assert main(["segment", f"{tmp_path / 'in.zarr'}/stored", f"{tmp_path / 'out.zarr'}/stored", *common]) == 0
    assert main(["segment", f"{tmp_path / 'in.zarr'}/bare", f"{tmp_path / 'out.zarr'}/bare", *common]) == 0
    (long_range,) = agglomerate(affinities, fragments, method="mutex", thresholds=[0.5], offsets=offsets)
    (nearest,) = agglomerate(affinities, fragments, method="mutex", thresholds=[0.5])
    np.testing.assert_array_equal(read_volume(f"{tmp_path / 'out.zarr'}/stored"), long_range)
    np.testing.assert_array_equal(read_volume(f"{tmp_path / 'out.zarr'}/bare"), nearest)  # no offsets: as before
    assert not np.array_equal(long_range, nearest)
