from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from neuropil.cli import main
from neuropil.config import load_config, parse_config
from neuropil.conventions import LabelZero
from neuropil.data.volumes import Patch, TrainingVolume
from neuropil.errors import NeuropilError
from neuropil.model import ModelConfig
from neuropil.train import TrainConfig, Trainer
from neuropil.train.augment import (
    AugmentConfig,
    augment,
    close_extracellular_space,
    draw_examples,
    flip,
    motion_blur_kernel,
    occlude,
    open_extracellular_space,
    quarter_turn,
    shift_sections,
    style_curve,
    transpose_in_plane,
    warp,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VOXEL = (30.0, 12.0, 12.0)
UNEQUAL = (30.0, 8.0, 12.0)


def only(**augmentations) -> AugmentConfig:
    """No augmentation but the given ones (name -> field values, probability 1 unless given)."""
    none = AugmentConfig.none()
    update = {}
    for name, values in augmentations.items():
        field = getattr(AugmentConfig(), name)
        update[name] = type(field)(**{**field.model_dump(), "probability": 1.0, **values})
    return none.model_copy(update=update)


def coded_patch(seed=0, shape=(4, 16, 16), label_zero=LabelZero.BOUNDARY) -> Patch:
    """Blocks of ids (0 among them) whose raw encodes the id and whose mask encodes its parity."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 9, size=(shape[0], shape[1] // 4, shape[2] // 4))
    labels = np.kron(coarse, np.ones((1, 4, 4), dtype=np.int64)).astype(np.uint64)
    return Patch(
        raw=code(labels),
        labels=labels,
        known=labels % 2 == 1,
        domain="blocks",
        volume=0,
        offset=(0, 0, 0),
        label_zero=label_zero,
    )


def code(labels) -> np.ndarray:
    return (np.asarray(labels, dtype=np.float32) + 1) / 16


def assert_aligned(patch: Patch, *, everywhere=True):
    """Mask and raw still say the label (where it is not 0: voxels from outside the patch are 0, raw there made up)."""
    known, labelled = patch.known, patch.labels != 0
    np.testing.assert_array_equal(known & (patch.labels % 2 == 1), known)  # unknown where the parity says so
    assert known[labelled].sum() >= 0.3 * labelled.sum()
    if everywhere:
        np.testing.assert_allclose(patch.raw[labelled], code(patch.labels)[labelled], atol=1e-5)
    else:  # interpolated raw: equal away from the blocks' edges
        agree = labelled & (np.abs(patch.raw - code(patch.labels)) < 1e-4)
        assert agree.sum() >= 0.6 * labelled.sum()


@pytest.mark.parametrize(
    "transform",
    [
        lambda p: flip(p, axes=(0, 2)),
        lambda p: flip(p, axes=(1,)),
        transpose_in_plane,
        lambda p: quarter_turn(p, turns=3),
        lambda p: warp(p, voxel_size=VOXEL, degrees=90.0),
        lambda p: warp(
            p, voxel_size=VOXEL, displacement=np.stack([np.full((4, 16, 16), 24.0), np.full((4, 16, 16), -36.0)])
        ),
        lambda p: shift_sections(p, sections=slice(2, None), shift=(3, -2)),
    ],
)
def test_geometric_augmentations_keep_raw_labels_and_mask_aligned(transform):
    before = coded_patch()
    after = transform(before)
    assert after.raw.shape == before.raw.shape
    assert_aligned(after)
    assert after.augmentations


def test_warps_keep_alignment_where_raw_is_not_interpolated_across_edges():
    patch = coded_patch(shape=(4, 32, 32))
    field = np.random.default_rng(1).normal(0, 10, size=(2, 4, 32, 32)).astype(np.float32)
    field = ndimage.gaussian_filter(field, sigma=(0, 0, 6, 6)) * 4
    for degrees, displacement in ((12.0, None), (-7.0, field)):
        after = warp(patch, voxel_size=VOXEL, degrees=degrees, displacement=displacement)
        assert_aligned(after, everywhere=False)
        assert not after.known[:, 0, 0].any()  # a corner rotated in from outside the patch is unknown


def test_shifted_sections_are_unknown_where_they_come_from_outside():
    after = shift_sections(coded_patch(), sections=slice(1, 2), shift=(2, 0))
    assert not after.known[1, :2].any()
    np.testing.assert_array_equal(after.labels[1, 2:], coded_patch().labels[1, :-2])
    np.testing.assert_array_equal(after.labels[0], coded_patch().labels[0])


def test_quarter_turns_and_transposes_are_skipped_when_y_and_x_voxel_sizes_differ():
    config = only(transpose={}, quarter_turn={})
    patch = coded_patch()
    kept = augment(patch, config, voxel_size=UNEQUAL, rng=np.random.default_rng(0))
    assert kept.augmentations == ()
    np.testing.assert_array_equal(kept.labels, patch.labels)
    turned = augment(patch, config, voxel_size=VOXEL, rng=np.random.default_rng(0))
    assert turned.augmentations[0] == "transpose" and turned.augmentations[1].startswith("rotate")
    assert_aligned(turned)
    assert not np.array_equal(turned.labels, patch.labels)


def test_label_ids_are_never_interpolated():
    patch = coded_patch(shape=(8, 32, 32))
    patch = patch._replace(labels=patch.labels + np.uint64(2**60) * (patch.labels > 0))
    config = only(rotation={}, elastic={"magnitude_nm": (40.0, 40.0)}, misalignment={"probability": 0.5})
    for seed in range(4):
        after = augment(patch, config, voxel_size=VOXEL, rng=np.random.default_rng(seed))
        assert set(np.unique(after.labels)) <= set(np.unique(patch.labels))
        assert after.labels.dtype == np.uint64


def test_the_same_seed_gives_the_same_patch():
    config = AugmentConfig(**{name: {"probability": 0.7} for name in ("rotation", "elastic", "open_gaps")})
    patch = blob_patch(seed=2)

    def run(seed):
        return augment(patch, config, voxel_size=VOXEL, rng=np.random.default_rng(seed))

    first, again, other = run(3), run(3), run(4)
    for a, b in ((first.raw, again.raw), (first.labels, again.labels), (first.known, again.known)):
        np.testing.assert_array_equal(a, b)
    assert first.augmentations == again.augmentations
    assert not np.array_equal(first.raw, other.raw)
    np.testing.assert_array_equal(patch.raw, blob_patch(seed=2).raw)  # the input is not modified


def test_no_augmentation_returns_the_patch_with_its_label_semantics():
    patch = coded_patch(label_zero=None)._replace(label_zero=None)
    after = augment(patch, AugmentConfig.none(), voxel_size=VOXEL, label_zero="unknown", rng=np.random.default_rng(0))
    assert after.label_zero is LabelZero.UNKNOWN and after.raw is patch.raw
    with pytest.raises(NeuropilError, match="label_zero"):
        augment(patch, AugmentConfig(), voxel_size=VOXEL, rng=np.random.default_rng(0))


def test_section_defects():
    patch = coded_patch(shape=(6, 16, 16))
    blank = augment(
        patch, only(missing_section={"value": (0.25, 0.25)}), voxel_size=VOXEL, rng=np.random.default_rng(0)
    )
    assert np.all(blank.raw == 0.25)  # probability 1 per section: every one blank
    np.testing.assert_array_equal(blank.labels, patch.labels)  # labels kept: the network must bridge the gap
    band = occlude(patch, section=2, voxel_size=VOXEL, centre_nm=(96.0, 96.0), angle=0.0, width_nm=50.0, value=0.05)
    rows = np.flatnonzero(~band.known[2].any(axis=1))
    assert len(rows) == 4 and abs(rows.mean() * 12 + 6 - 96) < 12  # 50 nm band across y = 96 nm
    assert np.all(band.raw[2, rows] == 0.05) and band.known[[0, 1, 3]].sum() == patch.known[[0, 1, 3]].sum()
    kernel = motion_blur_kernel(length_nm=60.0, angle=0.0, voxel_size=VOXEL)
    assert kernel.shape == (1, 7) and kernel.sum() == pytest.approx(1.0)  # along x, 60 nm = 5 voxels
    smeared = augment(patch, only(motion_blur={}), voxel_size=VOXEL, rng=np.random.default_rng(0))
    assert smeared.raw.std() < patch.raw.std()


def test_intensity_augmentations_stay_in_range_and_style_curves_are_monotone():
    ramp = np.linspace(0, 1, 101, dtype=np.float32)
    for seed in range(5):
        curve = style_curve(ramp, strength=0.8, segments=6, rng=np.random.default_rng(seed))
        assert curve[0] == 0 and curve[-1] == pytest.approx(1) and np.all(np.diff(curve) >= 0)
    config = only(
        contrast={"factor": (3.0, 3.0)}, brightness={}, gamma={}, style={}, blur={}, noise={"std": (0.2, 0.2)}
    )
    after = augment(blob_patch(), config, voxel_size=VOXEL, rng=np.random.default_rng(0))
    assert after.raw.dtype == np.float32 and 0 <= after.raw.min() and after.raw.max() <= 1
    assert [note.split()[0] for note in after.augmentations] == [
        "contrast",
        "brightness",
        "gamma",
        "style",
        "blur",
        "noise",
    ]


# ----------------------------------------------------------------------- extracellular space


def two_objects(axis: int, *, boundary: bool, label_zero=LabelZero.BOUNDARY, voxel=VOXEL, shape=(12, 24, 24)) -> Patch:
    """Objects 1 and 2 touching across a plane normal to ``axis`` (through a one-voxel label-0 boundary or not)."""
    coordinate = np.indices(shape)[axis]
    middle = shape[axis] // 2
    labels = np.where(coordinate < middle, 1, 2).astype(np.uint64)
    raw = np.where(labels == 1, 0.55, 0.65).astype(np.float32)
    if boundary:
        labels[coordinate == middle] = 0
        raw[coordinate == middle] = 0.15
    return Patch(raw, labels, None, "pair", 0, (0, 0, 0), label_zero)


def gap_between(labels, voxel) -> float:
    """Distance (nm) from object 1 to object 2 minus one voxel along it: the width of the label-0 gap."""
    distance = ndimage.distance_transform_edt(labels != 2, sampling=voxel)
    return float(distance[labels == 1].min())


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("boundary", [False, True])
def test_opened_gap_has_the_drawn_width(axis, boundary):
    patch = two_objects(axis, boundary=boundary, voxel=UNEQUAL)
    after = open_extracellular_space(patch, voxel_size=UNEQUAL, width_nm=50.0, rng=np.random.default_rng(0))
    width = gap_between(after.labels, UNEQUAL) - UNEQUAL[axis]
    assert abs(width - 50.0) <= UNEQUAL[axis], width
    gap = (after.labels == 0) & (patch.labels != 0)
    assert gap.any() and after.known[gap].all()
    assert after.label_zero is LabelZero.EXTRACELLULAR


def test_opened_gap_across_an_oblique_contact_has_the_drawn_width():
    shape = (4, 40, 40)
    _, y, x = np.indices(shape)
    labels = np.where(y * UNEQUAL[1] + x * UNEQUAL[2] < 360, 1, 2).astype(np.uint64)
    patch = Patch(np.full(shape, 0.5, np.float32), labels, None, "pair", 0, (0, 0, 0), LabelZero.BOUNDARY)
    after = open_extracellular_space(patch, voxel_size=UNEQUAL, width_nm=60.0, rng=np.random.default_rng(0))
    # the shortest line from 1 to 2 crosses the gap plus at most one voxel
    assert 60.0 - UNEQUAL[2] <= gap_between(after.labels, UNEQUAL) <= 60.0 + 2 * UNEQUAL[2]


@pytest.mark.parametrize("label_zero", list(LabelZero))
def test_targets_across_an_opened_gap_are_known_zero_for_every_label_zero_kind(label_zero):
    patch = two_objects(2, boundary=True, label_zero=label_zero)
    labels = patch.labels.copy()
    labels[:, :, :3] = 0  # a band no one labelled (unknown where label 0 means unknown)
    patch = patch._replace(labels=labels)
    volume = TrainingVolume(raw=patch.raw, labels=patch.labels, voxel_size=VOXEL, label_zero=label_zero, name="pair")
    after = open_extracellular_space(patch, voxel_size=VOXEL, width_nm=60.0, rng=np.random.default_rng(0))
    targets = volume.targets([(0, 0, -1)], labels=after.labels, known=after.known, label_zero=after.label_zero)
    affinity, mask = targets.affinities[0], targets.mask[0]
    gap_columns = np.flatnonzero((after.labels[:, :, 3:] == 0).all(axis=(0, 1))) + 3
    assert abs(len(gap_columns) * VOXEL[2] - 60.0) <= VOXEL[2]
    across = gap_columns[0], gap_columns[-1] + 1  # from object 1 into the gap, from the gap into object 2
    for column in across:
        assert np.all(mask[..., column] == 1) and np.all(affinity[..., column] == 0)
    inside = [4, 5, 20, 21]
    assert np.all(mask[..., inside] == 1) and np.all(affinity[..., inside] == 1)
    unlabelled_known = mask[:, :, 1].any()
    assert unlabelled_known == (label_zero is not LabelZero.UNKNOWN)


def test_opened_gap_is_painted_like_the_image_own_extracellular_space():
    patch = two_objects(2, boundary=False, label_zero=LabelZero.EXTRACELLULAR, shape=(4, 16, 40))
    labels, raw = patch.labels.copy(), patch.raw.copy()
    labels[:, :, :6] = 0  # wide extracellular space at the left, bright
    raw[:, :, :6] = 0.9
    raw[:, :, 6] = 0.1  # object 1's membrane against it, dark
    raw[:, :, 19:21] = 0.1  # and the membranes where objects 1 and 2 touch
    patch = patch._replace(labels=labels, raw=raw)
    after = open_extracellular_space(patch, voxel_size=VOXEL, width_nm=48.0, rng=np.random.default_rng(0))
    gap = (after.labels == 0) & (patch.labels != 0)
    assert gap.any() and np.median(after.raw[gap]) == pytest.approx(0.9, abs=0.05)
    np.testing.assert_array_equal(after.labels[:, :, :6], 0)  # the existing wide space is kept as it was
    beside = np.flatnonzero(gap[0, 0])
    membrane = [beside[0] - 1, beside[-1] + 1]  # object voxels either side of the gap: painted as membrane
    assert np.all(after.raw[:, 2:-2, membrane] < 0.35)


def test_opening_needs_two_objects():
    patch = two_objects(2, boundary=False)
    single = patch._replace(labels=np.ones_like(patch.labels))
    assert open_extracellular_space(single, voxel_size=VOXEL, width_nm=40.0, rng=np.random.default_rng(0)) is single


def extracellular_pair(width_voxels=5, shape=(4, 16, 40)) -> Patch:
    """Objects 1 and 2 separated by bright extracellular space, each with a dark membrane along it."""
    x = np.indices(shape)[2]
    left, right = 17, 17 + width_voxels
    labels = np.where(x < left, 1, np.where(x >= right, 2, 0)).astype(np.uint64)
    raw = np.where(labels == 0, 0.85, 0.5).astype(np.float32)
    raw[(x == left - 1) | (x == right)] = 0.15
    return Patch(raw, labels, None, "pair", 0, (0, 0, 0), LabelZero.EXTRACELLULAR)


def test_closing_shrinks_extracellular_space_and_darkens_it():
    patch = extracellular_pair(width_voxels=5)  # 60 nm
    after = close_extracellular_space(patch, voxel_size=VOXEL, width_nm=36.0, rng=np.random.default_rng(0))
    space_before = (patch.labels == 0).sum(axis=2)
    space_after = (after.labels == 0).sum(axis=2)
    assert np.all(space_after < space_before) and np.all(space_after >= 1)
    taken = (patch.labels == 0) & (after.labels != 0)
    assert after.raw[taken].mean() < patch.raw[taken].mean() - 0.3
    assert set(np.unique(after.labels)) <= {0, 1, 2}
    closed = close_extracellular_space(patch, voxel_size=VOXEL, width_nm=200.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal((closed.labels == 0).sum(axis=2), 1)  # a one-voxel boundary stays between them
    with pytest.raises(NeuropilError, match="extracellular"):
        close_extracellular_space(
            patch._replace(label_zero=LabelZero.BOUNDARY), voxel_size=VOXEL, width_nm=30.0, rng=np.random.default_rng(0)
        )
    skipped = augment(
        patch._replace(label_zero=LabelZero.BOUNDARY),
        only(close_gaps={}),
        voxel_size=VOXEL,
        rng=np.random.default_rng(0),
    )
    assert skipped.augmentations == ()


def blob_patch(seed=0, shape=(8, 32, 32), label_zero=LabelZero.BOUNDARY) -> Patch:
    """Cells around random seeds, separated by dark one-voxel in-plane boundaries."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int32)
    points = tuple(rng.integers(0, s, 12) for s in shape)
    seeds[points] = np.arange(1, 13)
    _, nearest = ndimage.distance_transform_edt(seeds == 0, sampling=VOXEL, return_indices=True)
    labels = seeds[tuple(nearest)].astype(np.uint64)
    boundary = ndimage.grey_erosion(labels, size=(1, 3, 3)) != ndimage.grey_dilation(labels, size=(1, 3, 3))
    labels[boundary] = 0
    raw = np.clip(np.where(boundary, 0.15, 0.7) + rng.normal(0, 0.04, shape), 0, 1).astype(np.float32)
    return Patch(raw, labels, None, "blobs", 0, (0, 0, 0), label_zero)


def test_trainer_targets_follow_the_augmented_label_semantics(tmp_path):
    patch = blob_patch(shape=(8, 32, 32), label_zero=LabelZero.UNKNOWN)
    volume = TrainingVolume(
        raw=patch.raw, labels=patch.labels, voxel_size=VOXEL, label_zero=LabelZero.UNKNOWN, name="blobs"
    )
    model = ModelConfig(base_channels=2, depth=2, voxel_size=VOXEL)

    def known_boundaries(augment_config) -> int:
        train = TrainConfig(iterations=1, patch_shape=(8, 32, 32), augment=augment_config, validation=False)
        trainer = Trainer(
            {"blobs": [volume]}, out_dir=tmp_path / str(id(augment_config)), model_config=model, train_config=train
        )
        _, target, mask = trainer.batch()
        in_plane = slice(1, 3)  # objects touch across sections, never in-plane
        return int(((mask[:, in_plane] == 1) & (target[:, in_plane] == 0)).sum())

    # label 0 is unknown: without augmentation no in-plane affinity touching it is known
    assert known_boundaries(False) == 0
    assert known_boundaries(only(open_gaps={"width_nm": (30.0, 30.0)})) > 0


# ----------------------------------------------------------------------- configuration and preview


def test_augment_true_and_false_still_load():
    assert TrainConfig(augment=True).augment == AugmentConfig() == TrainConfig().augment
    assert TrainConfig(augment=False).augment == AugmentConfig.none()
    assert not AugmentConfig.none().enabled and AugmentConfig().enabled
    run = parse_config({"train": {"augment": False}, "domains": {"a": {"synthetic": "fib-like"}}})
    assert parse_config(run.model_dump(mode="json")) == run


@pytest.mark.parametrize(
    ("augment_config", "message"),
    [
        ({"rotation": {"probability": 1.5}}, "train.augment.rotation.probability"),
        (
            {"open_gaps": {"width_nm": [60, 10]}},
            "train.augment.open_gaps.width_nm': the range \\[60, 10\\] runs backwards",
        ),
        ({"blur": {"sigma_nm": [-1, 4]}}, "train.augment.blur.sigma_nm.0"),
        ({"noise": {"probability": -0.1}}, "train.augment.noise.probability"),
        ({"rotation": {"degrees": [-200, 10]}}, "within \\[-180, 180\\]"),
        ({"shear": {"probability": 0.5}}, "unknown key 'train.augment.shear'"),
    ],
)
def test_bad_augment_config_is_one_line_naming_the_key(augment_config, message):
    with pytest.raises(NeuropilError, match=message) as error:
        parse_config({"train": {"augment": augment_config}, "domains": {"a": {"synthetic": "fib-like"}}})
    assert "\n" not in str(error.value)


def test_example_config_opens_and_closes_extracellular_space():
    config = load_config(CONFIGS / "augment-example.yaml")
    assert config.train.augment.open_gaps.probability > 0 and config.train.augment.close_gaps.probability > 0
    kinds = {domain.synthetic for domain in config.domains.values()}
    assert kinds == {"cremi-like", "cryo-ecs"}  # label 0: thin boundaries, and extracellular space


def test_draw_examples_pairs_patches_before_and_after(tmp_path):
    volume = TrainingVolume(raw=blob_patch().raw, labels=blob_patch().labels, voxel_size=VOXEL, name="blobs")
    examples = draw_examples({"blobs": [volume]}, AugmentConfig(), patch_shape=(4, 16, 16), samples=3, seed=1)
    assert len(examples) == 3
    for before, after in examples:
        assert before.raw.shape == after.raw.shape == (4, 16, 16) and before.augmentations == ()
    with pytest.raises(NeuropilError, match="samples"):
        draw_examples({"blobs": [volume]}, AugmentConfig(), patch_shape=(4, 16, 16), samples=0)


@pytest.mark.slow
def test_preview_command_writes_a_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    config = str(CONFIGS / "augment-example.yaml")
    assert main(["augment", "preview", config, "--out", str(out), "--samples", "2", "--seed", "1"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert not list(tmp_path.glob("*.partial*"))


def test_preview_command_bad_input_exits_2(tmp_path, capsys):
    assert main(["augment", "preview", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "grid.png")]) == 2
    assert "no such configuration file" in capsys.readouterr().err
    config = str(CONFIGS / "augment-example.yaml")
    assert main(["augment", "preview", config, "--out", str(tmp_path / "grid.png"), "--samples", "0"]) == 2
    assert not (tmp_path / "grid.png").exists()
