import numpy as np
import pytest
import tifffile
import imageio.v3 as iio

from neuropil.data.io import parse_address, read_volume, write_volume
from neuropil.errors import NeuropilError


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
