import numpy as np
import pytest

from neuropil.data.labels import catalog_domains
from neuropil.data.sampling import MultiDomainSampler, split_validation_band
from neuropil.data.volumes import TrainingVolume
from neuropil.errors import NeuropilError


def _volume(shape=(4, 20, 30), name="v", known=None, seed=0):
    rng = np.random.default_rng(seed)
    return TrainingVolume(
        raw=rng.integers(0, 255, shape, dtype=np.uint8),
        labels=rng.integers(1, 5, shape).astype(np.uint64),
        voxel_size=(25, 13, 13),
        known=known,
        name=name,
    )


def test_band_splits_at_x_and_keeps_views():
    volume = _volume()
    train, validation = split_validation_band(volume, width=12)
    assert validation.raw.shape == (4, 20, 12) and train.raw.shape == (4, 20, 18)
    np.testing.assert_array_equal(validation.labels, volume.labels[:, :, :12])
    np.testing.assert_array_equal(train.raw, volume.raw[:, :, 12:])
    assert np.shares_memory(train.raw, volume.raw)
    assert train.metadata["band_start"] == 12


def test_band_wider_than_the_volume_leaves_no_training_part():
    train, validation = split_validation_band(_volume(), width=150)
    assert train is None and validation.raw.shape == (4, 20, 30)
    train, validation = split_validation_band(_volume(), width=0)
    assert validation is None and train.raw.shape == (4, 20, 30)


def test_training_patches_never_reach_into_the_band():
    volume = _volume(shape=(4, 20, 60))
    train, _ = split_validation_band(volume, width=25)
    sampler = MultiDomainSampler({"d": [train]}, patch_shape=(2, 8, 8), seed=1)
    for _ in range(300):
        patch = sampler.sample()
        x = train.metadata["band_start"] + patch.offset[2]
        assert x >= 25
        np.testing.assert_array_equal(
            patch.labels,
            volume.labels[:, :, x - patch.offset[2] :][
                patch.offset[0] : patch.offset[0] + 2,
                patch.offset[1] : patch.offset[1] + 8,
                patch.offset[2] : patch.offset[2] + 8,
            ],
        )


def test_domains_are_drawn_uniformly_then_volumes_uniformly():
    domains = {"one": [_volume(name="a")], "three": [_volume(name=n, seed=i) for i, n in enumerate("bcd")]}
    sampler = MultiDomainSampler(domains, patch_shape=(2, 8, 8), seed=0)
    draws = [sampler.sample() for _ in range(3000)]
    share = np.mean([p.domain == "one" for p in draws])
    assert abs(share - 0.5) < 0.05  # not 0.25, as drawing volumes uniformly would give
    counts = np.bincount([p.volume for p in draws if p.domain == "three"], minlength=3)
    assert counts.min() > 0.25 * counts.sum()
    weighted = MultiDomainSampler(domains, patch_shape=(2, 8, 8), weights={"one": 3, "three": 1}, seed=0)
    assert abs(np.mean([weighted.sample().domain == "one" for _ in range(2000)]) - 0.75) < 0.05


def test_patches_avoid_unlabelled_data_when_asked():
    known = np.zeros((4, 20, 60), bool)
    known[:, :, 40:] = True
    volume = _volume(shape=(4, 20, 60), known=known)
    sampler = MultiDomainSampler({"d": [volume]}, patch_shape=(2, 8, 8), seed=0, min_known_fraction=1.0)
    for _ in range(50):
        patch = sampler.sample()
        assert patch.known.all() and patch.offset[2] >= 40
    with pytest.raises(NeuropilError, match="min_known_fraction"):
        MultiDomainSampler({"d": [volume]}, patch_shape=(2, 8, 8), min_known_fraction=2)


def test_catalog_domains_mix_with_real_sets(shared_data):
    training, validation = catalog_domains(
        ["isbi2012", "fib-gala"], target_voxel_size=(25, 13, 13), validation_width=50, patch_shape=(8, 32, 32)
    )
    assert [v.raw.shape for v in training["isbi2012"]] == [(60, 158, 108)]
    assert [v.raw.shape for v in validation["isbi2012"]] == [(60, 158, 50)]
    assert training["isbi2012"][0].in_plane_only
    # fib-gala's test volume is held out.
    assert len(training["fib-gala"]) == 1 and training["fib-gala"][0].metadata["volume"] == "train"
    with pytest.raises(NeuropilError, match=r"no training data left.*150-voxel"):
        catalog_domains(["isbi2012"], target_voxel_size=(25, 13, 13), validation_width=150, patch_shape=(8, 32, 32))


def test_catalog_domains_take_the_entry_band_width(shared_data):
    # vnc-gerhard2013 states a 120-voxel band (a third of its 362 voxels at 13 nm).
    training, validation = catalog_domains(["vnc-gerhard2013"], target_voxel_size=(25, 13, 13))
    assert [v.raw.shape[2] for v in validation["vnc-gerhard2013"]] == [120]
    assert [v.raw.shape[2] for v in training["vnc-gerhard2013"]] == [242]


def test_a_dataset_without_raw_images_is_refused_as_such(shared_data):
    # snemi-mini ships labels, fragments and probabilities but no raw image (PROVENANCE.md).
    with pytest.raises(NeuropilError, match="no train volume with both a raw image and labels"):
        catalog_domains(["snemi-mini"], target_voxel_size=(25, 13, 13))
