import dataclasses

import cc3d
import numpy as np
import pytest

from neuropil.conventions import LabelZero
from neuropil.data.synth import PRESETS, SynthDomain, generate, synthetic_volume, with_changes
from neuropil.errors import NeuropilError

SMALL = (8, 96, 96)


@pytest.fixture(scope="module")
def volumes():
    return {name: generate(name, shape=SMALL, seed=3) for name in PRESETS}


def test_presets_include_the_named_domains():
    assert {"cremi-like", "snemi-like", "fib-like", "cryo-ecs"} <= set(PRESETS)
    assert PRESETS["cremi-like"].voxel_size == (40.0, 4.0, 4.0)
    assert PRESETS["fib-like"].voxel_size == (10.0, 10.0, 10.0)
    assert PRESETS["cryo-ecs"].label_zero is LabelZero.EXTRACELLULAR
    assert PRESETS["cremi-like"].label_zero is LabelZero.BOUNDARY
    for preset in PRESETS.values():
        assert (preset.extracellular_nm > 0) == (preset.label_zero is LabelZero.EXTRACELLULAR)


def test_same_seed_gives_identical_arrays_and_different_seeds_differ():
    first = generate("cremi-like", shape=SMALL, seed=7)
    second = generate("cremi-like", shape=SMALL, seed=7)
    other = generate("cremi-like", shape=SMALL, seed=8)
    assert first.raw.tobytes() == second.raw.tobytes()
    assert first.labels.tobytes() == second.labels.tobytes()
    assert first.raw.tobytes() != other.raw.tobytes()
    assert first.labels.tobytes() != other.labels.tobytes()


def test_volume_types_shapes_and_metadata(volumes):
    for name, volume in volumes.items():
        assert volume.raw.shape == SMALL and volume.raw.dtype == np.uint8
        assert volume.labels.shape == SMALL and volume.labels.dtype == np.uint64
        assert volume.voxel_size == PRESETS[name].voxel_size
        assert volume.domain == name
        assert volume.label_zero is PRESETS[name].label_zero


def test_ids_are_consecutive_and_each_is_one_connected_object(volumes):
    for volume in volumes.values():
        ids = np.unique(volume.labels[volume.labels != 0])
        np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1, dtype=np.uint64))
        components = cc3d.connected_components(volume.labels, connectivity=6)
        assert components.max() == volume.labels.max()


def test_in_plane_neighbours_of_different_objects_are_separated_by_zero(volumes):
    for volume in volumes.values():
        labels = volume.labels
        for a, b in ((labels[:, 1:, :], labels[:, :-1, :]), (labels[:, :, 1:], labels[:, :, :-1])):
            touching = (a != b) & (a != 0) & (b != 0)
            assert not touching.any()


def test_label_zero_fraction_grows_with_extracellular_space():
    fractions = [
        float((generate(with_changes("snemi-like", extracellular_nm=gap), shape=SMALL, seed=1).labels == 0).mean())
        for gap in (0.0, 20.0, 50.0)
    ]
    assert fractions[0] < 0.1
    assert fractions[0] < fractions[1] < fractions[2]
    assert fractions[2] > 2 * fractions[0]


def test_tight_domains_have_only_thin_boundaries():
    volume = generate("cremi-like", shape=(16, 128, 128), seed=0)
    zero = volume.labels == 0
    # a thin boundary: every 0 voxel has an object voxel next to it in the same section
    near_object = np.zeros_like(zero)
    near_object[:, 1:, :] |= volume.labels[:, :-1, :] != 0
    near_object[:, :-1, :] |= volume.labels[:, 1:, :] != 0
    near_object[:, :, 1:] |= volume.labels[:, :, :-1] != 0
    near_object[:, :, :-1] |= volume.labels[:, :, 1:] != 0
    assert near_object[zero].mean() > 0.99
    assert zero.mean() < 0.1


def test_extracellular_space_is_lighter_than_membranes():
    volume = generate("cryo-ecs", shape=(16, 96, 96), seed=2)
    raw = volume.raw.astype(float)
    zero = volume.labels == 0
    # membranes: object voxels next to the extracellular space
    near_gap = np.zeros_like(zero)
    near_gap[:, 1:, :] |= zero[:, :-1, :]
    near_gap[:, :-1, :] |= zero[:, 1:, :]
    membrane = near_gap & ~zero
    assert raw[zero].mean() > raw[membrane].mean() + 10


def test_membranes_are_darker_than_cytoplasm(volumes):
    checked = 0
    for name, volume in volumes.items():
        zero = volume.labels == 0
        if zero.mean() < 0.01:  # a crop inside one thick dendrite
            continue
        checked += 1
        raw = volume.raw.astype(float)
        if volume.label_zero is LabelZero.BOUNDARY:
            membrane = zero
        else:
            near_gap = np.zeros_like(zero)
            near_gap[:, 1:, :] |= zero[:, :-1, :]
            near_gap[:, :, 1:] |= zero[:, :, :-1]
            membrane = near_gap & ~zero
        interior = ~zero & ~membrane
        assert raw[membrane].mean() < raw[interior].mean() - 10, name
    assert checked >= 4


def test_objects_are_elongated_and_run_through_the_volume():
    volume = generate("fib-like", shape=(48, 48, 48), seed=4)
    spans = []
    for box in cc3d.statistics(volume.labels)["bounding_boxes"][1:]:
        extents = [s.stop - s.start for s in box]
        spans.append(max(extents))
    spans = np.asarray(spans)
    # many processes cross at least 3/4 of the volume along some axis
    assert (spans >= 36).sum() >= 8
    sizes = np.bincount(volume.labels.ravel())[1:]
    large = sizes > 2000
    elongation = []
    for index in np.flatnonzero(large) + 1:
        coordinates = np.argwhere(volume.labels == index).astype(float)
        eigenvalues = np.linalg.eigvalsh(np.cov(coordinates.T))
        elongation.append(np.sqrt(eigenvalues[-1] / max(eigenvalues[0], 1e-9)))
    assert np.median(elongation) > 2.0


def test_same_physical_extent_gives_similar_objects_at_any_voxel_size():
    # both 320 x 480 x 480 nm
    anisotropic = generate("fib-like", shape=(8, 120, 120), seed=5, voxel_size=(40.0, 4.0, 4.0))
    isotropic = generate("fib-like", shape=(32, 48, 48), seed=5, voxel_size=(10.0, 10.0, 10.0))
    assert anisotropic.voxel_size == (40.0, 4.0, 4.0)
    count_anisotropic = int(anisotropic.labels.max())
    count_isotropic = int(isotropic.labels.max())
    assert abs(count_anisotropic - count_isotropic) <= 0.3 * max(count_anisotropic, count_isotropic)
    # same processes: the object under the centre voxel has a similar physical volume
    nm3_anisotropic = np.bincount(anisotropic.labels.ravel())[1:] * 40 * 4 * 4
    nm3_isotropic = np.bincount(isotropic.labels.ravel())[1:] * 1000
    largest = sorted(nm3_anisotropic)[-3:], sorted(nm3_isotropic)[-3:]
    np.testing.assert_allclose(largest[0], largest[1], rtol=0.35)


def test_domain_objects_are_accepted_and_frozen():
    domain = with_changes("cremi-like", name="custom", membrane_nm=12.0)
    assert isinstance(domain, SynthDomain)
    volume = generate(domain, shape=(4, 32, 32), seed=0)
    assert volume.domain == "custom"
    with pytest.raises(dataclasses.FrozenInstanceError):
        domain.membrane_nm = 3.0


def test_unknown_preset_names_the_presets():
    with pytest.raises(NeuropilError, match="cremi-like"):
        generate("no-such-domain", shape=SMALL, seed=0)
    with pytest.raises(NeuropilError, match="bogus"):
        with_changes("cremi-like", bogus=1)


@pytest.mark.parametrize("shape", [(0, 32, 32), (8, -1, 32), (8, 32), (8, 32, 32, 1), (8.5, 32, 32), None])
def test_bad_shape_is_an_error(shape):
    with pytest.raises(NeuropilError, match="shape"):
        generate("cremi-like", shape=shape, seed=0)


def test_bad_voxel_size_is_an_error():
    with pytest.raises(NeuropilError, match="voxel_size"):
        generate("cremi-like", shape=SMALL, seed=0, voxel_size=(40, 0, 4))
    with pytest.raises(NeuropilError, match="voxel_size"):
        synthetic_volume("cremi-like", shape=(4, 16, 16), target_voxel_size=(25, 13), seed=0)


def test_synthetic_training_volume_has_the_target_shape_and_voxel_size():
    volume = synthetic_volume("cremi-like", shape=(4, 16, 16), target_voxel_size=(50, 13, 13), seed=0)
    assert volume.raw.shape == volume.labels.shape == (4, 16, 16)
    assert volume.voxel_size == (50.0, 13.0, 13.0)
    assert volume.labels.dtype == np.uint64 and volume.label_zero is LabelZero.BOUNDARY
