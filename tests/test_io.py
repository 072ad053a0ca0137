import importlib.metadata

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

import neuropil
from neuropil.errors import NeuropilError
from neuropil.io import parse_address, read_volume, write_volume


@pytest.mark.parametrize(
    "address, path, key, kind",
    [
        ("a/b.h5:volumes/raw", "a/b.h5", "volumes/raw", "hdf5"),
        ("b.hdf5", "b.hdf5", None, "hdf5"),
        ("c.zarr/labels/s0", "c.zarr", "labels/s0", "zarr"),
        ("c.zarr", "c.zarr", None, "zarr"),
        ("d.n5/raw", "d.n5", "raw", "zarr"),
        ("e.tif", "e.tif", None, "tiff"),
    ],
)
def test_parse_address(address, path, key, kind):
    parsed = parse_address(address)
    assert (str(parsed.path), parsed.key, parsed.kind) == (path, key, kind)


@pytest.mark.parametrize("address", ["v.h5:raw", "v.zarr/raw", "v.tif"])
def test_write_then_read_round_trips(tmp_path, address):
    array = np.random.default_rng(0).integers(0, 255, size=(3, 5, 7), dtype=np.uint8)
    write_volume(tmp_path / address, array, voxel_size=(40, 4, 4))
    np.testing.assert_array_equal(read_volume(tmp_path / address), array)


def test_hdf5_write_keeps_other_datasets(tmp_path):
    write_volume(tmp_path / "v.h5:a", np.zeros((2, 2, 2)))
    write_volume(tmp_path / "v.h5:b", np.ones((2, 2, 2)))
    assert read_volume(tmp_path / "v.h5:a").sum() == 0
    assert not list(tmp_path.glob("*.partial"))


def test_slices_are_read_in_natural_order(tmp_path):
    for index in [0, 1, 2, 10]:
        iio.imwrite(tmp_path / f"im{index}.png", np.full((4, 5), index, dtype=np.uint8))
    volume = read_volume(tmp_path)
    assert volume.shape == (4, 4, 5)
    assert list(volume[:, 0, 0]) == [0, 1, 2, 10]


def test_multipage_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", np.arange(24, dtype=np.uint16).reshape(2, 3, 4))
    assert read_volume(tmp_path / "s.tif").shape == (2, 3, 4)


def test_unknown_format_and_missing_key_raise(tmp_path):
    with pytest.raises(NeuropilError, match="cannot tell the format"):
        parse_address(tmp_path / "x.bin")
    write_volume(tmp_path / "v.zarr/raw", np.zeros((2, 2, 2)))
    with pytest.raises(NeuropilError, match="no array 'nope'"):
        read_volume(tmp_path / "v.zarr/nope")


@pytest.mark.parametrize("address", ["v.h5:raw", "v.zarr/raw", "v.n5/raw", "v.tif"])
def test_failed_write_keeps_the_old_array_and_leaves_no_temporary(tmp_path, address):
    old = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
    write_volume(tmp_path / address, old)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # An object array cannot be stored by any backend (h5py: TypeError, zarr: ValueError,
    # tifffile: KeyError, all after the write has started; the N5 writer: NeuropilError before).
    with pytest.raises((TypeError, ValueError, KeyError, NeuropilError)):
        write_volume(tmp_path / address, np.array([[[object()]]]))
    np.testing.assert_array_equal(read_volume(tmp_path / address), old)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("address", ["v.zarr/raw", "v.n5/raw"])
def test_rewriting_a_container_array_replaces_it(tmp_path, address):
    write_volume(tmp_path / address, np.zeros((2, 2, 2), dtype=np.uint8))
    write_volume(tmp_path / address, np.ones((3, 2, 2), dtype=np.uint8))
    np.testing.assert_array_equal(read_volume(tmp_path / address), np.ones((3, 2, 2)))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".partial", ".old"))]


def test_writing_to_an_existing_zarr_container_without_a_key(tmp_path):
    write_volume(tmp_path / "v.zarr/raw", np.zeros((2, 2, 2), dtype=np.uint8))
    written = write_volume(tmp_path / "v.zarr", np.ones((2, 2, 2), dtype=np.uint8))
    assert written.kind == "zarr"
    np.testing.assert_array_equal(read_volume(tmp_path / "v.zarr/raw"), np.zeros((2, 2, 2)))


def test_hdf5_write_ignores_a_temporary_left_by_a_crash(tmp_path):
    write_volume(tmp_path / "stale.h5:junk", np.zeros((2, 2, 2)))
    (tmp_path / "stale.h5").rename(tmp_path / "v.h5.partial")
    write_volume(tmp_path / "v.h5:raw", np.ones((2, 2, 2)))
    with pytest.raises(NeuropilError, match="no dataset 'junk'"):
        read_volume(tmp_path / "v.h5:junk")


def test_package_metadata_has_the_version_of_the_code():
    assert importlib.metadata.version("neuropil") == neuropil.__version__


def test_hdf5_voxel_size_attribute_of_funlib_tools_is_read_and_a_conflict_is_an_error(tmp_path):
    import h5py

    from neuropil.io import open_volume

    with h5py.File(tmp_path / "funlib.h5", "w") as file:
        file["raw"] = np.zeros((4, 8, 8), np.uint8)
        file["raw"].attrs["voxel_size"] = [40, 4, 4]
        file["raw"].attrs["offset"] = [80, 0, 0]
        file["both"] = np.zeros((4, 8, 8), np.uint8)
        file["both"].attrs["voxel_size"] = [40, 4, 4]
        file["both"].attrs["resolution"] = [40, 4, 4]
        file["clash"] = np.zeros((4, 8, 8), np.uint8)
        file["clash"].attrs["voxel_size"] = [40, 4, 4]
        file["clash"].attrs["element_size_um"] = [0.05, 0.004, 0.004]
    with open_volume(f"{tmp_path / 'funlib.h5'}:raw") as volume:
        assert volume.voxel_size == (40.0, 4.0, 4.0) and volume.offset == (80.0, 0.0, 0.0)
    with open_volume(f"{tmp_path / 'funlib.h5'}:both") as volume:
        assert volume.voxel_size == (40.0, 4.0, 4.0)
    with pytest.raises(
        NeuropilError, match=r'"voxel_size" \[40, 4, 4\] says 40x4x4 nm, but .*"element_size_um" .* 50x4x4'
    ):
        open_volume(f"{tmp_path / 'funlib.h5'}:clash")
