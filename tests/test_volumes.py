import json
import pickle

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from neuropil.errors import NeuropilError
from neuropil.io import open_volume, read_volume, write_ome_zarr, write_volume
from neuropil.io.units import to_nm, unit_to_nm


@pytest.fixture
def cube():
    return np.random.default_rng(0).integers(0, 60000, size=(7, 11, 13), dtype=np.uint16)


def _write_slices(folder, array):
    folder.mkdir()
    for z, plane in enumerate(array):
        iio.imwrite(folder / f"s{z}.png", plane)
    return folder


@pytest.mark.parametrize("address", ["v.h5:raw", "v.zarr/raw", "v.n5/raw", "v.tif", "slices"])
def test_lazy_regions_equal_numpy_slicing(tmp_path, cube, address):
    if address == "slices":
        _write_slices(tmp_path / "slices", cube)
    else:
        write_volume(tmp_path / address, cube, chunks=(3, 4, 5) if "tif" not in address else None)
    with open_volume(tmp_path / address) as volume:
        assert volume.shape == cube.shape and volume.dtype == cube.dtype
        for index in [
            np.s_[...],
            np.s_[2:5, 3:9, 1:12],
            np.s_[4],
            np.s_[:, -1, ::3],
            np.s_[1:6:2, 10:2, :],
            np.s_[..., 5],
            np.s_[-2:, :4],
        ]:
            np.testing.assert_array_equal(volume[index], cube[index])


def test_n5_is_read_and_written_like_tensorstore(tmp_path, cube):
    tensorstore = pytest.importorskip("tensorstore")
    write_volume(tmp_path / "ours.n5/raw", cube, chunks=(3, 4, 5), voxel_size=(40, 4, 4))
    theirs = tensorstore.open(
        {"driver": "n5", "kvstore": {"driver": "file", "path": str(tmp_path / "ours.n5/raw")}}
    ).result()
    # tensorstore shows N5's own x-first axis order.
    np.testing.assert_array_equal(np.asarray(theirs.read().result()).transpose(), cube)
    spec = {
        "driver": "n5",
        "kvstore": {"driver": "file", "path": str(tmp_path / "theirs.n5/raw")},
        "metadata": {
            "dimensions": list(cube.shape[::-1]),
            "blockSize": [4, 3, 2],
            "dataType": "uint16",
            "compression": {"type": "gzip"},
        },
        "create": True,
    }
    store = tensorstore.open(spec).result()
    store.write(cube.transpose()).result()
    with open_volume(tmp_path / "theirs.n5/raw") as volume:
        np.testing.assert_array_equal(volume[1:6, 2:9, 3:11], cube[1:6, 2:9, 3:11])
    with open_volume(tmp_path / "ours.n5/raw") as volume:
        assert volume.voxel_size == (40.0, 4.0, 4.0)


def test_n5_pixel_resolution_in_microns(tmp_path, cube):
    write_volume(tmp_path / "v.n5/raw", cube)
    attributes_path = tmp_path / "v.n5/raw/attributes.json"
    attributes = json.loads(attributes_path.read_text())
    attributes["pixelResolution"] = {"dimensions": [0.004, 0.005, 0.04], "unit": "um"}
    attributes_path.write_text(json.dumps(attributes))
    assert open_volume(tmp_path / "v.n5/raw").voxel_size == pytest.approx((40.0, 5.0, 4.0))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_v2_and_v3_keep_voxel_size(tmp_path, cube, zarr_format):
    write_volume(tmp_path / "v.zarr/a/raw", cube, voxel_size=(29, 6, 6), zarr_format=zarr_format)
    assert zarr.open_group(str(tmp_path / "v.zarr"), mode="r").metadata.zarr_format == zarr_format
    with open_volume(tmp_path / "v.zarr/a/raw") as volume:
        assert volume.voxel_size == (29.0, 6.0, 6.0)
        np.testing.assert_array_equal(volume[...], cube)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_levels_carry_their_voxel_size(tmp_path, zarr_format):
    image = np.random.default_rng(1).random((8, 32, 32)).astype(np.float32)
    write_ome_zarr(tmp_path / "im.ome.zarr", image, voxel_size=(40, 4, 4), levels=3, zarr_format=zarr_format)
    finest = open_volume(tmp_path / "im.ome.zarr")
    assert finest.voxel_size == (40.0, 4.0, 4.0) and finest.shape == (8, 32, 32)
    np.testing.assert_allclose(finest[...], image)
    coarse = open_volume(tmp_path / "im.ome.zarr/2")
    assert coarse.voxel_size == (40.0, 16.0, 16.0) and coarse.shape == (8, 8, 8)


def test_ome_zarr_micrometre_units_and_translation(tmp_path):
    root = zarr.open_group(str(tmp_path / "x.zarr"), mode="w", zarr_format=2)
    root.create_array("s0", shape=(2, 3, 4), dtype="uint8")
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"],
            "datasets": [
                {
                    "path": "s0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [0.03, 0.006, 0.006]},
                        {"type": "translation", "translation": [0.3, 0, 0.06]},
                    ],
                }
            ],
        }
    ]
    volume = open_volume(tmp_path / "x.zarr")
    assert volume.voxel_size == pytest.approx((30.0, 6.0, 6.0))
    assert volume.offset == pytest.approx((300.0, 0.0, 60.0))


def test_cremi_file_gives_resolution_and_offset(tmp_path):
    with h5py.File(tmp_path / "sample_A.hdf", "w") as file:
        raw = file.create_dataset("volumes/raw", data=np.zeros((5, 6, 6), np.uint8))
        raw.attrs["resolution"] = [40.0, 4.0, 4.0]
        labels = file.create_dataset("volumes/labels/neuron_ids", data=np.ones((5, 6, 6), np.uint64))
        labels.attrs["resolution"] = [40.0, 4.0, 4.0]
        labels.attrs["offset"] = [0.0, 8.0, 8.0]
    assert open_volume(f"{tmp_path}/sample_A.hdf:volumes/raw").voxel_size == (40.0, 4.0, 4.0)
    assert open_volume(f"{tmp_path}/sample_A.hdf:volumes/labels/neuron_ids").offset == (0.0, 8.0, 8.0)


def test_hdf5_lzf_and_element_size(tmp_path, cube):
    write_volume(f"{tmp_path}/v.h5:stack", cube, compression="lzf")
    with h5py.File(tmp_path / "v.h5", "a") as file:
        assert file["stack"].compression == "lzf"
        file["stack"].attrs["element_size_um"] = [0.01, 0.01, 0.01]
    volume = open_volume(tmp_path / "v.h5")  # gala files: one dataset, no key needed
    assert volume.voxel_size == pytest.approx((10.0, 10.0, 10.0))
    np.testing.assert_array_equal(volume[2:4], cube[2:4])


def test_neuroproof_groundtruth_reads_bodies(tmp_path):
    supervoxels = np.array([[[1, 2, 3], [4, 5, 0]]], dtype=np.uint32)
    transforms = np.array([[1, 10], [2, 10], [3, 30], [4, 0]], dtype=np.uint64)
    with h5py.File(tmp_path / "groundtruth.h5", "w") as file:
        file["stack"] = supervoxels
        file["transforms"] = transforms
    bodies = read_volume(tmp_path / "groundtruth.h5")
    # 5 has no entry and stays itself; 0 stays 0.
    np.testing.assert_array_equal(bodies, [[[10, 10, 30], [0, 5, 0]]])
    np.testing.assert_array_equal(read_volume(f"{tmp_path}/groundtruth.h5:stack"), supervoxels)


def test_imagej_tiff_voxel_size(tmp_path, cube):
    tifffile.imwrite(
        tmp_path / "s.tif",
        cube,
        imagej=True,
        resolution=(1 / 0.006, 1 / 0.006),
        metadata={"spacing": 0.029, "unit": "um"},
    )
    assert open_volume(tmp_path / "s.tif").voxel_size == pytest.approx((29.0, 6.0, 6.0))


def test_volumes_pickle_and_reopen(tmp_path, cube):
    write_volume(tmp_path / "v.h5:raw", cube)
    volume = open_volume(tmp_path / "v.h5:raw")
    volume[0]
    copy = pickle.loads(pickle.dumps(volume))
    np.testing.assert_array_equal(copy[3], cube[3])


def test_given_voxel_size_fills_in_or_must_agree(tmp_path, cube):
    write_volume(tmp_path / "a.h5:raw", cube)
    assert open_volume(tmp_path / "a.h5:raw", voxel_size=(40, 4, 4)).voxel_size == (40.0, 4.0, 4.0)
    write_volume(tmp_path / "b.h5:raw", cube, voxel_size=(40, 4, 4))
    with pytest.raises(NeuropilError, match=r"b\.h5:raw: voxel size mismatch"):
        open_volume(tmp_path / "b.h5:raw", voxel_size=(30, 6, 6))


@pytest.mark.parametrize("name", ["v.h5", "v.tif"])
def test_truncated_files_raise_one_line_errors(tmp_path, cube, name):
    write_volume(tmp_path / (name + (":raw" if name.endswith("h5") else "")), cube)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 3])
    with pytest.raises(NeuropilError) as caught:
        read_volume(tmp_path / (name + (":raw" if name.endswith("h5") else "")))
    message = str(caught.value)
    assert name in message and "\n" not in message


def test_truncated_n5_block_raises(tmp_path, cube):
    write_volume(tmp_path / "v.n5/raw", cube, chunks=(4, 4, 4))
    block = tmp_path / "v.n5/raw/0/0/0"
    block.write_bytes(block.read_bytes()[:20])
    with pytest.raises(NeuropilError, match=r"v\.n5/raw: cannot read"):
        read_volume(tmp_path / "v.n5/raw")


def test_missing_things_name_the_file(tmp_path, cube):
    with pytest.raises(NeuropilError, match="no such file"):
        open_volume(tmp_path / "absent.h5:raw")
    write_volume(tmp_path / "v.h5:raw", cube)
    with pytest.raises(NeuropilError, match=r"v\.h5: no dataset 'labels'"):
        open_volume(tmp_path / "v.h5:labels")
    write_volume(tmp_path / "v.n5/raw", cube)
    with pytest.raises(NeuropilError, match="no N5 dataset 'labels'"):
        open_volume(tmp_path / "v.n5/labels")


# ----------------------------------------------------------------------------- length units

MICRO_SIGN_UM = "\u00b5m"  # MICRO SIGN, U+00B5
GREEK_MU_UM = "\u03bcm"  # GREEK SMALL LETTER MU, U+03BC
SMALL = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)


@pytest.mark.parametrize(
    "unit, nanometres",
    [
        ("nm", 1.0),
        ("nanometer", 1.0),
        ("um", 1e3),
        (MICRO_SIGN_UM, 1e3),
        (GREEK_MU_UM, 1e3),
        ("\\u00B5m", 1e3),  # ImageJ's escape, as read from the file
        ("micron", 1e3),
        (" Micrometre ", 1e3),
        ("\u00c5", 0.1),  # LATIN CAPITAL LETTER A WITH RING ABOVE
        ("\u212b", 0.1),  # ANGSTROM SIGN
        ("angstrom", 0.1),
        ("mm", 1e6),
    ],
)
def test_length_units_in_nanometres(unit, nanometres):
    assert unit_to_nm(unit, source="f.zarr") == nanometres


def test_one_unit_per_value_or_an_error():
    assert to_nm([0.04, 5, 40], ["um", "nm", "\u00c5"], source="f.zarr") == pytest.approx((40.0, 5.0, 4.0))
    assert to_nm([4, 4], None, source="f.zarr") == (4.0, 4.0)
    with pytest.raises(NeuropilError, match=r"f\.zarr: 2 units"):
        to_nm([1, 2, 3], ["nm", "nm"], source="f.zarr")
    with pytest.raises(NeuropilError, match=r"f\.zarr: unknown length unit 'parsec'"):
        to_nm([1, 2, 3], "parsec", source="f.zarr")


def _ome_zarr_in(folder, units):
    root = zarr.open_group(str(folder), mode="w", zarr_format=2)
    root.create_array("s0", shape=SMALL.shape, dtype=SMALL.dtype)[...] = SMALL
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": n, "type": "space", "unit": unit} for n, unit in zip("zyx", units)],
            "datasets": [
                {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [0.04, 0.005, 0.004]}]}
            ],
        }
    ]
    return folder


def _n5_pixel_resolution_in(folder, unit):
    write_volume(folder / "raw", SMALL)
    path = folder / "raw/attributes.json"
    attributes = json.loads(path.read_text())
    attributes["pixelResolution"] = {"dimensions": [0.004, 0.005, 0.04], "unit": unit}
    path.write_text(json.dumps(attributes))
    return folder / "raw"


def _n5_resolution_and_units_in(folder, unit):
    write_volume(folder / "raw", SMALL)
    path = folder / "raw/attributes.json"
    attributes = json.loads(path.read_text())
    attributes["resolution"] = [0.004, 0.005, 0.04]
    attributes["units"] = [unit, unit, unit]
    path.write_text(json.dumps(attributes))
    return folder / "raw"


def _zarr_resolution_and_units_in(folder, unit):
    write_volume(folder / "raw", SMALL, voxel_size=(0.04, 0.005, 0.004))
    zarr.open_array(str(folder / "raw"), mode="a").attrs["units"] = [unit, unit, unit]
    return folder / "raw"


def _hdf5_resolution_and_units_in(path, unit):
    with h5py.File(path, "w") as file:
        dataset = file.create_dataset("raw", data=SMALL)
        dataset.attrs["resolution"] = [0.04, 0.005, 0.004]
        dataset.attrs["units"] = [unit, unit, unit]
    return f"{path}:raw"


def _imagej_tiff_in(path, unit):
    # ImageJ (and tifffile) write the description in ASCII: non-ASCII letters as \uXXXX escapes.
    escaped = "".join(letter if letter.isascii() else f"\\u{ord(letter):04X}" for letter in unit)
    tifffile.imwrite(
        path, SMALL, imagej=True, resolution=(1 / 0.004, 1 / 0.005), metadata={"spacing": 0.04, "unit": escaped}
    )
    return path


WRITERS = {
    "ome-zarr axes": lambda tmp_path, unit: _ome_zarr_in(tmp_path / "v.ome.zarr", [unit] * 3),
    "n5 pixelResolution": lambda tmp_path, unit: _n5_pixel_resolution_in(tmp_path / "v.n5", unit),
    "n5 resolution and units": lambda tmp_path, unit: _n5_resolution_and_units_in(tmp_path / "v.n5", unit),
    "zarr resolution and units": lambda tmp_path, unit: _zarr_resolution_and_units_in(tmp_path / "v.zarr", unit),
    "hdf5 resolution and units": lambda tmp_path, unit: _hdf5_resolution_and_units_in(tmp_path / "v.h5", unit),
    "imagej tiff": lambda tmp_path, unit: _imagej_tiff_in(tmp_path / "v.tif", unit),
}


@pytest.mark.parametrize("unit", [GREEK_MU_UM, MICRO_SIGN_UM, "um", "micrometer"])
@pytest.mark.parametrize("backend", sorted(WRITERS))
def test_micrometre_voxel_sizes_read_as_nanometres(tmp_path, backend, unit):
    volume = open_volume(WRITERS[backend](tmp_path, unit))
    assert volume.voxel_size == pytest.approx((40.0, 5.0, 4.0))
    np.testing.assert_array_equal(volume[...], SMALL)


@pytest.mark.parametrize("backend", sorted(WRITERS))
def test_an_unknown_length_unit_is_a_one_line_error_naming_unit_and_file(tmp_path, backend):
    address = WRITERS[backend](tmp_path, "furlong")
    with pytest.raises(NeuropilError) as caught:
        open_volume(address)
    message = str(caught.value)
    assert "'furlong'" in message and str(address).split(":")[0] in message and "\n" not in message


def test_ome_zarr_axes_may_mix_units(tmp_path):
    volume = open_volume(_ome_zarr_in(tmp_path / "v.zarr", ["micrometer", "nm", "\u00c5"]))
    assert volume.voxel_size == pytest.approx((40.0, 0.005, 0.0004))


def test_uncalibrated_imagej_tiff_has_no_voxel_size(tmp_path):
    tifffile.imwrite(tmp_path / "v.tif", SMALL, imagej=True, resolution=(1.0, 1.0), metadata={"unit": "pixel"})
    assert open_volume(tmp_path / "v.tif").voxel_size is None


def test_a_data_units_string_is_not_taken_for_axis_units(tmp_path):
    # xarray/CF: a "units" string is the unit of the values, not of the axes
    write_volume(tmp_path / "v.zarr/raw", SMALL, voxel_size=(40, 5, 4))
    zarr.open_array(str(tmp_path / "v.zarr/raw"), mode="a").attrs["units"] = "counts"
    assert open_volume(tmp_path / "v.zarr/raw").voxel_size == (40.0, 5.0, 4.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.uint64, np.int32])
def test_tiff_keeps_the_voxel_size_it_is_written_with(tmp_path, dtype):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(dtype)
    write_volume(tmp_path / "v.tif", array, voxel_size=(40.0, 6.0, 4.0))
    with open_volume(tmp_path / "v.tif") as volume:
        assert volume.voxel_size == pytest.approx((40.0, 6.0, 4.0))
        np.testing.assert_array_equal(volume.read(), array)
    if np.dtype(dtype) in (np.uint8, np.uint16, np.float32):  # what Fiji reads: ImageJ calibration in nm
        with tifffile.TiffFile(tmp_path / "v.tif") as tif:
            assert tif.imagej_metadata["unit"] == "nm" and tif.imagej_metadata["spacing"] == 40.0
    write_volume(tmp_path / "plain.tif", array)
    assert open_volume(tmp_path / "plain.tif").voxel_size is None
