"""Voxel size and offset conventions: one small file per convention, its values in nm (z, y, x) and its source."""

import json
import pickle

import h5py
import numpy as np
import pytest
import tifffile
import torch
import zarr

from neuropil.cli import main
from neuropil.errors import NeuropilError
from neuropil.io import open_volume, read_volume, write_volume
from neuropil.io.volume import GIVEN
from neuropil.model import ModelConfig, UNet3D

SMALL = np.arange(4 * 6 * 8, dtype=np.uint8).reshape(4, 6, 8)


def hdf5(path, **attributes):
    with h5py.File(path, "w") as file:
        dataset = file.create_dataset("raw", data=SMALL)
        for name, value in attributes.items():
            dataset.attrs[name] = value
    return f"{path}:raw"


def zarr_array(folder, data=SMALL, **attributes):
    array = zarr.create_array(str(folder), shape=data.shape, dtype=data.dtype, chunks=data.shape, zarr_format=2)
    array[...] = data
    array.attrs.update(attributes)
    return folder


def n5(container, key="raw", *, groups: dict | None = None, **attributes):
    """A hand-written N5 dataset (``attributes.json`` only: opening reads no block); ``groups``: folder -> attributes."""
    (container / key).mkdir(parents=True)
    (container / "attributes.json").write_text(json.dumps({"n5": "2.0.0"}))
    for folder, stored in (groups or {}).items():
        (container / folder / "attributes.json").write_text(json.dumps(stored))
    metadata = {"dimensions": [8, 6, 4], "blockSize": [8, 6, 4], "dataType": "uint8", "compression": {"type": "raw"}}
    (container / key / "attributes.json").write_text(json.dumps({**metadata, **attributes}))
    return f"{container}/{key}"


def ome_zarr(folder, *, axes, datasets, zarr_format=2, version="0.4", **extra):
    """A hand-written OME-Zarr image: ``datasets`` are (path, transforms) pairs, each level of SMALL's shape."""
    root = zarr.open_group(str(folder), mode="w", zarr_format=zarr_format)
    ndim = len(axes)
    data = SMALL.reshape((1,) * (ndim - 3) + SMALL.shape)
    for path, _ in datasets:
        root.create_array(path, shape=data.shape, dtype=data.dtype, chunks=data.shape)[...] = data
    multiscale = {
        "axes": axes,
        "datasets": [{"path": path, "coordinateTransformations": transforms} for path, transforms in datasets],
        **extra,
    }
    if zarr_format == 3:
        root.attrs["ome"] = {"version": version, "multiscales": [multiscale]}
    else:
        root.attrs["multiscales"] = [{"version": version, **multiscale}]
    return folder


SPACE_UM = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]


def scale(*values):
    return {"type": "scale", "scale": list(values)}


def translation(*values):
    return {"type": "translation", "translation": list(values)}


def metadata(address, **options):
    with open_volume(address, **options) as volume:
        return volume.voxel_size, volume.voxel_size_source, volume.offset, volume.offset_source


def approx(values):
    return pytest.approx(values, rel=1e-9, abs=1e-9)


# ----------------------------------------------------------------------------- HDF5


def test_hdf5_funlib_voxel_size_and_offset(tmp_path):
    size, source, offset, offset_source = metadata(hdf5(tmp_path / "v.h5", voxel_size=[40, 4, 4], offset=[80, 0, 8]))
    assert (size, source) == ((40.0, 4.0, 4.0), 'the HDF5 attribute "voxel_size"')
    assert (offset, offset_source) == ((80.0, 0.0, 8.0), 'the HDF5 attribute "offset"')


def test_hdf5_cremi_resolution_and_offset(tmp_path):
    size, source, offset, offset_source = metadata(
        hdf5(tmp_path / "v.h5", resolution=[40.0, 4.0, 4.0], offset=[0, 8, 8])
    )
    assert (size, source) == ((40.0, 4.0, 4.0), 'the HDF5 attribute "resolution"')
    assert (offset, offset_source) == ((0.0, 8.0, 8.0), 'the HDF5 attribute "offset"')


def test_hdf5_imagej_element_size_in_micrometres(tmp_path):
    size, source, offset, _ = metadata(hdf5(tmp_path / "v.h5", element_size_um=[0.04, 0.004, 0.005]))
    assert size == approx((40.0, 4.0, 5.0)) and source == 'the HDF5 attribute "element_size_um"'
    assert offset is None


def test_hdf5_agreeing_attributes_name_the_first_as_the_source(tmp_path):
    address = hdf5(tmp_path / "v.h5", element_size_um=[0.04, 0.004, 0.004], voxel_size=[40, 4, 4])
    assert metadata(address)[:2] == ((40.0, 4.0, 4.0), 'the HDF5 attribute "voxel_size"')


def test_hdf5_resolution_and_voxel_size_that_disagree_are_an_error_naming_both(tmp_path):
    address = hdf5(tmp_path / "v.h5", resolution=[40, 4, 4], voxel_size=[30, 4, 4])
    with pytest.raises(NeuropilError) as caught:
        open_volume(address)
    message = str(caught.value)
    assert '"resolution" [40, 4, 4] says 40x4x4 nm' in message and '"voxel_size" [30, 4, 4] says 30x4x4 nm' in message
    assert message.startswith(f"{address}: voxel size metadata disagree") and "\n" not in message


def test_hdf5_units_list_converts_voxel_size_and_offset(tmp_path):
    address = hdf5(tmp_path / "v.h5", resolution=[0.04, 4, 40], offset=[0.08, 0, 0], units=["um", "nm", "\u00c5"])
    size, _, offset, _ = metadata(address)
    assert size == approx((40.0, 4.0, 4.0)) and offset == approx((80.0, 0.0, 0.0))


# ----------------------------------------------------------------------------- zarr attributes


def test_zarr_written_by_neuropil_reads_its_resolution(tmp_path):
    write_volume(f"{tmp_path}/v.zarr/raw", SMALL, voxel_size=(40, 4, 4))
    assert metadata(f"{tmp_path}/v.zarr/raw")[:2] == ((40.0, 4.0, 4.0), 'the zarr attribute "resolution"')


def test_zarr_written_by_neuropil_blockwise_reads_its_resolution(tmp_path):
    from neuropil.io.backend import COMPLETE_ATTRIBUTE

    zarr_array(tmp_path / "v.zarr", resolution=[30.0, 8.0, 8.0], **{COMPLETE_ATTRIBUTE: True})
    assert metadata(tmp_path / "v.zarr")[:2] == ((30.0, 8.0, 8.0), 'the zarr attribute "resolution"')


def test_zarr_funlib_persistence_channels_first_with_units(tmp_path):
    # funlib.persistence 0.5: voxel_size and offset of the spatial axes only, axis names, empty units
    affinities = np.zeros((3, *SMALL.shape), np.float32)
    folder = zarr_array(
        tmp_path / "affs.zarr",
        affinities,
        voxel_size=[40, 4, 4],
        offset=[400, 40, 40],
        axis_names=["c^", "z", "y", "x"],
        units=["", "", ""],
        types=["channel", "space", "space", "space"],
    )
    assert metadata(folder) == (
        (40.0, 4.0, 4.0),
        'the zarr attribute "voxel_size"',
        (400.0, 40.0, 40.0),
        'the zarr attribute "offset"',
    )


def test_zarr_units_in_micrometres(tmp_path):
    folder = zarr_array(tmp_path / "v.zarr", voxel_size=[0.04, 0.004, 0.004], offset=[1, 0, 0], units=["um"] * 3)
    size, _, offset, _ = metadata(folder)
    assert size == approx((40.0, 4.0, 4.0)) and offset == approx((1000.0, 0.0, 0.0))


def test_zarr_resolution_and_voxel_size_that_disagree_are_an_error_naming_both(tmp_path):
    folder = zarr_array(tmp_path / "v.zarr", resolution=[40, 4, 4], voxel_size=[40, 8, 8])
    with pytest.raises(
        NeuropilError, match=r'"resolution" \[40, 4, 4\] says 40x4x4 nm, but .*"voxel_size" \[40, 8, 8\]'
    ):
        open_volume(folder)


# ----------------------------------------------------------------------------- OME-Zarr


def test_ome_zarr_04_micrometre_scale_and_translation(tmp_path):
    folder = ome_zarr(
        tmp_path / "im.ome.zarr", axes=SPACE_UM, datasets=[("0", [scale(0.04, 0.004, 0.004), translation(1, 0.1, 0)])]
    )
    size, source, offset, offset_source = metadata(folder)
    assert size == approx((40.0, 4.0, 4.0)) and offset == approx((1000.0, 100.0, 0.0))
    assert source == 'the OME-Zarr 0.4 multiscales (dataset "0" scale)'
    assert offset_source == 'the OME-Zarr 0.4 multiscales (dataset "0" translation)'


def test_ome_zarr_dataset_path_takes_that_levels_scale(tmp_path):
    levels = [("s0", [scale(40, 4, 4)]), ("s1", [scale(40, 8, 8), translation(0, 2, 2)])]
    axes = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    folder = ome_zarr(tmp_path / "im.zarr", axes=axes, datasets=levels)
    assert metadata(folder)[:2] == ((40.0, 4.0, 4.0), 'the OME-Zarr 0.4 multiscales (dataset "s0" scale)')
    size, source, offset, _ = metadata(f"{folder}/s1")
    assert (size, offset) == ((40.0, 8.0, 8.0), (0.0, 2.0, 2.0))
    assert source == 'the OME-Zarr 0.4 multiscales (dataset "s1" scale)'


def test_ome_zarr_05_channel_axis_under_ome(tmp_path):
    axes = [{"name": "c", "type": "channel"}, *[{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]]
    folder = ome_zarr(
        tmp_path / "affs.ome.zarr", axes=axes, datasets=[("0", [scale(1, 30, 8, 8)])], zarr_format=3, version="0.5"
    )
    size, source, offset, offset_source = metadata(folder)
    assert size == (30.0, 8.0, 8.0) and source == 'the OME-Zarr 0.5 multiscales (dataset "0" scale)'
    assert offset == (0.0, 0.0, 0.0) and offset_source == "the OME-Zarr 0.5 multiscales (no translation: 0)"


def test_ome_zarr_multiscale_transform_composes_with_the_levels(tmp_path):
    axes = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    folder = ome_zarr(
        tmp_path / "im.zarr", axes=axes, datasets=[("0", [scale(1, 2, 2)])], coordinateTransformations=[scale(40, 2, 2)]
    )
    assert metadata(folder)[0] == (40.0, 4.0, 4.0)


def test_ome_zarr_axes_without_units_say_they_are_read_as_nanometres(tmp_path):
    axes = [{"name": n, "type": "space"} for n in "zyx"]
    folder = ome_zarr(tmp_path / "im.zarr", axes=axes, datasets=[("0", [scale(40, 4, 4)])])
    size, source, _, _ = metadata(folder)
    assert size == (40.0, 4.0, 4.0) and "axes without a unit read as nm" in source


def test_ome_zarr_nested_dataset_path_is_found_from_the_image_group(tmp_path):
    folder = ome_zarr(tmp_path / "c.zarr", axes=SPACE_UM, datasets=[("scale0/image", [scale(0.04, 0.004, 0.004)])])
    size, source, _, _ = metadata(f"{folder}/scale0/image")
    assert size == approx((40.0, 4.0, 4.0)) and '"scale0/image"' in source


def test_ome_zarr_written_by_neuropil_reads_back_with_its_source(tmp_path):
    write_volume(tmp_path / "seg.ome.zarr", np.ones((4, 70, 70), np.uint64), voxel_size=(40, 4, 4))
    assert metadata(tmp_path / "seg.ome.zarr/1")[:2] == (
        (40.0, 8.0, 8.0),
        'the OME-Zarr 0.4 multiscales (dataset "1" scale)',
    )


def test_ome_zarr_offset_attribute_is_used_where_no_translation_is_given(tmp_path):
    axes = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    folder = ome_zarr(tmp_path / "im.zarr", axes=axes, datasets=[("0", [scale(40, 4, 4)])])
    zarr.open_array(str(folder / "0"), mode="a").attrs["offset"] = [80, 0, 0]
    assert metadata(f"{folder}/0")[2:] == ((80.0, 0.0, 0.0), 'the zarr attribute "offset"')


def test_ome_zarr_scale_and_a_disagreeing_array_attribute_are_an_error_naming_both(tmp_path):
    axes = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    folder = ome_zarr(tmp_path / "im.zarr", axes=axes, datasets=[("0", [scale(40, 4, 4), translation(0, 4, 4)])])
    level = zarr.open_array(str(folder / "0"), mode="a")
    level.attrs["voxel_size"] = [40, 4, 4]  # agrees
    assert metadata(f"{folder}/0")[:2] == ((40.0, 4.0, 4.0), 'the OME-Zarr 0.4 multiscales (dataset "0" scale)')
    level.attrs["offset"] = [0, 8, 8]  # does not
    with pytest.raises(NeuropilError) as caught:
        open_volume(f"{folder}/0")
    message = str(caught.value)
    assert "offset metadata disagree" in message and '(dataset "0" translation) [0, 4, 4] says 0x4x4 nm' in message
    assert 'the zarr attribute "offset" [0, 8, 8] says 0x8x8 nm' in message


# ----------------------------------------------------------------------------- N5 (x-first on disk)


def test_n5_pixel_resolution_mapping_x_first_in_micrometres(tmp_path):
    address = n5(tmp_path / "v.n5", pixelResolution={"dimensions": [0.004, 0.005, 0.04], "unit": "um"})
    size, source, offset, _ = metadata(address)
    assert size == approx((40.0, 5.0, 4.0)) and offset is None
    assert source == 'the N5 attribute "pixelResolution" (stored x y z)'


def test_n5_pixel_resolution_list_is_nanometres(tmp_path):
    assert metadata(n5(tmp_path / "v.n5", pixelResolution=[4, 5, 40]))[0] == (40.0, 5.0, 4.0)


def test_n5_resolution_and_offset_x_first_as_daisy_reads_them(tmp_path):
    size, source, offset, offset_source = metadata(n5(tmp_path / "v.n5", resolution=[4, 5, 40], offset=[8, 0, 400]))
    assert (size, offset) == ((40.0, 5.0, 4.0), (400.0, 0.0, 8.0))
    assert source == 'the N5 attribute "resolution" (stored x y z)'
    assert offset_source == 'the N5 attribute "offset" (stored x y z)'


def test_n5_resolution_with_x_first_units(tmp_path):
    address = n5(tmp_path / "v.n5", resolution=[4, 0.005, 0.04], units=["nm", "um", "um"])
    assert metadata(address)[0] == approx((40.0, 5.0, 4.0))


def test_n5_funlib_persistence_voxel_size_is_z_first_and_so_is_its_offset(tmp_path):
    size, source, offset, _ = metadata(n5(tmp_path / "v.n5", voxel_size=[40, 5, 4], offset=[400, 0, 8]))
    assert (size, offset) == ((40.0, 5.0, 4.0), (400.0, 0.0, 8.0))
    assert source == 'the N5 attribute "voxel_size" (stored z y x)'


def test_n5_cosem_transform(tmp_path):
    transform = {"axes": ["z", "y", "x"], "scale": [40, 5, 4], "translate": [400, 0, 8], "units": ["nm"] * 3}
    size, source, offset, offset_source = metadata(n5(tmp_path / "v.n5", transform=transform))
    assert (size, offset) == ((40.0, 5.0, 4.0), (400.0, 0.0, 8.0))
    assert source == 'the N5 attribute "transform" scale (stored z y x)'
    assert offset_source == 'the N5 attribute "transform" translate (stored z y x)'
    flipped = {**transform, "ordering": "F", "scale": [4, 5, 40], "translate": [8, 0, 400]}
    assert metadata(n5(tmp_path / "f.n5", transform=flipped))[::2] == ((40.0, 5.0, 4.0), (400.0, 0.0, 8.0))


def test_n5_scale_level_multiplies_pixel_resolution_by_its_downsampling_factors(tmp_path):
    # n5-spark stores the full-resolution pixelResolution on every level
    address = n5(
        tmp_path / "v.n5", "s1", pixelResolution={"dimensions": [4, 4, 40], "unit": "nm"}, downsamplingFactors=[2, 2, 1]
    )
    size, source, _, _ = metadata(address)
    assert size == (40.0, 8.0, 8.0) and source.endswith('times "downsamplingFactors" [2, 2, 1]')


def test_n5_dataset_without_voxel_size_takes_its_groups(tmp_path):
    groups = {"c0": {"pixelResolution": {"dimensions": [0.004, 0.004, 0.04], "unit": "um"}}}
    address = n5(tmp_path / "v.n5", "c0/s1", groups=groups, downsamplingFactors=[2, 2, 1])
    size, source, _, _ = metadata(address)
    assert size == approx((40.0, 8.0, 8.0))
    assert source.startswith('the N5 attribute "pixelResolution" of group "c0"')
    own = n5(tmp_path / "w.n5", "c0/s0", groups=groups, resolution=[6, 6, 30])  # its own overrides the group's
    assert metadata(own)[:2] == ((30.0, 6.0, 6.0), 'the N5 attribute "resolution" (stored x y z)')


def test_n5_resolution_and_pixel_resolution_that_disagree_are_an_error_naming_both(tmp_path):
    agreeing = n5(
        tmp_path / "a.n5", resolution=[4, 4, 40], pixelResolution={"dimensions": [0.004, 0.004, 0.04], "unit": "um"}
    )
    assert metadata(agreeing)[0] == approx((40.0, 4.0, 4.0))
    address = n5(tmp_path / "v.n5", resolution=[4, 4, 40], pixelResolution={"dimensions": [4, 4, 50], "unit": "nm"})
    with pytest.raises(NeuropilError) as caught:
        open_volume(address)
    message = str(caught.value)
    assert '"resolution" (stored x y z) [4, 4, 40] says 40x4x4 nm' in message
    assert '"pixelResolution" (stored x y z) {"dimensions": [4, 4, 50], "unit": "nm"} says 50x4x4 nm' in message


def test_n5_written_by_neuropil_reads_back(tmp_path):
    write_volume(f"{tmp_path}/v.n5/raw", SMALL, voxel_size=(40, 5, 4))
    assert json.loads((tmp_path / "v.n5/raw/attributes.json").read_text())["resolution"] == [4.0, 5.0, 40.0]
    assert metadata(f"{tmp_path}/v.n5/raw")[:2] == ((40.0, 5.0, 4.0), 'the N5 attribute "resolution" (stored x y z)')


# ----------------------------------------------------------------------------- TIFF, given values, units


def test_tiff_sources(tmp_path):
    write_volume(tmp_path / "a.tif", SMALL, voxel_size=(40, 5, 4))
    size, source, _, _ = metadata(tmp_path / "a.tif")
    assert size == approx((40.0, 5.0, 4.0)) and source.startswith("the ImageJ calibration")
    write_volume(tmp_path / "b.tif", SMALL.astype(np.uint64), voxel_size=(40, 5, 4))
    assert metadata(tmp_path / "b.tif")[:2] == ((40.0, 5.0, 4.0), 'the TIFF description entry "voxel_size_nm"')
    tifffile.imwrite(tmp_path / "c.tif", SMALL, photometric="minisblack")
    assert metadata(tmp_path / "c.tif")[:2] == (None, None)


def test_a_given_voxel_size_says_so_and_one_the_file_stores_keeps_its_source(tmp_path):
    bare = hdf5(tmp_path / "bare.h5")
    assert metadata(bare, voxel_size=(40, 4, 4))[:2] == ((40.0, 4.0, 4.0), GIVEN)
    assert metadata(bare)[:2] == (None, None)
    stored = hdf5(tmp_path / "stored.h5", voxel_size=[40, 4, 4])
    assert metadata(stored, voxel_size=(40, 4, 4))[1] == 'the HDF5 attribute "voxel_size"'
    with pytest.raises(NeuropilError, match=r'the file says \(40.0, 4.0, 4.0\) nm \(the HDF5 attribute "voxel_size"\)'):
        open_volume(stored, voxel_size=(30, 4, 4))


def test_the_source_survives_pickling(tmp_path):
    volume = open_volume(hdf5(tmp_path / "v.h5", resolution=[40, 4, 4]))
    assert pickle.loads(pickle.dumps(volume)).voxel_size_source == 'the HDF5 attribute "resolution"'


@pytest.mark.parametrize(
    "unit, factor", [("nanometer", 1.0), ("micrometer", 1e3), ("\u00b5m", 1e3), ("angstrom", 0.1), ("millimeter", 1e6)]
)
def test_units_are_converted_to_nanometres_in_every_format(tmp_path, unit, factor):
    stored = [40 / factor, 4 / factor, 4 / factor]
    addresses = [
        hdf5(tmp_path / "v.h5", resolution=stored, units=[unit] * 3),
        zarr_array(tmp_path / "v.zarr", voxel_size=stored, units=[unit] * 3),
        n5(tmp_path / "v.n5", pixelResolution={"dimensions": stored[::-1], "unit": unit}),
        ome_zarr(
            tmp_path / "v.ome.zarr",
            axes=[{"name": n, "type": "space", "unit": unit} for n in "zyx"],
            datasets=[("0", [scale(*stored)])],
        ),
    ]
    for address in addresses:
        assert metadata(address)[0] == pytest.approx((40.0, 4.0, 4.0), rel=1e-9), address


# ----------------------------------------------------------------------------- neuropil data info


def test_data_info_prints_where_voxel_size_and_offset_came_from(tmp_path, capsys):
    address = hdf5(tmp_path / "v.h5", resolution=[40, 4, 4], offset=[0, 8, 8])
    assert main(["data", "info", address, "--no-count"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert 'voxel size 40x4x4 nm (z y x, from the HDF5 attribute "resolution")' in out
    assert 'offset 0x8x8 nm (z y x, from the HDF5 attribute "offset")' in out
    assert f"address: {address}" in out and "shape: [4, 6, 8]" in out  # the rest as before
    assert main(["data", "info", address, "--no-count", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["voxel_size"] == [40.0, 4.0, 4.0] and info["voxel_size_source"] == 'the HDF5 attribute "resolution"'
    assert info["offset"] == [0.0, 8.0, 8.0] and info["offset_source"] == 'the HDF5 attribute "offset"'


def test_data_info_of_a_file_without_voxel_size_says_so(tmp_path, capsys):
    assert main(["data", "info", hdf5(tmp_path / "v.h5"), "--no-count"]) == 0
    assert "voxel size unknown (the file stores none)" in capsys.readouterr().out.splitlines()


def test_data_info_of_a_catalog_dataset_says_which_voxel_sizes_the_catalog_gave(tmp_path, monkeypatch, capsys):
    hdf5(tmp_path / "bare.h5")
    hdf5(tmp_path / "stored.h5", voxel_size=[40, 4, 4])
    catalog = tmp_path / "mine.yaml"
    catalog.write_text(
        "datasets:\n  mine:\n    root: .\n    modality: toy\n    voxel_size: [40, 4, 4]\n    labels: some-objects\n"
        "    volumes:\n      a: {raw: 'bare.h5:raw', labels: 'stored.h5:raw'}\n"
    )
    monkeypatch.setenv("NEUROPIL_CATALOG", str(catalog))
    monkeypatch.setenv("NEUROPIL_DATA", str(tmp_path / "no-data-root"))
    assert main(["data", "info", "mine", "--no-count"]) == 0
    out = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert out.count("voxel size 40x4x4 nm (z y x, from the catalog)") == 1  # the dataset's own
    assert "voxel size 40x4x4 nm (z y x, from the catalog; the file stores none)" in out  # raw
    assert 'voxel size 40x4x4 nm (z y x, from the HDF5 attribute "voxel_size")' in out  # labels
    assert main(["data", "info", "mine", "--no-count", "--json"]) == 0
    volume = json.loads(capsys.readouterr().out)["volumes"]["a"]
    assert volume["raw"]["voxel_size_source"] == "the catalog; the file stores none"
    assert volume["raw"]["voxel_size_from"] == "catalog"  # as before
    assert volume["labels"]["voxel_size_source"] == 'the HDF5 attribute "voxel_size"'


# ----------------------------------------------------------------------------- prediction


def test_an_hdf5_volume_with_only_a_voxel_size_attribute_predicts_without_voxel_size_given(tmp_path):
    torch.manual_seed(0)
    network = UNet3D(ModelConfig(base_channels=2, depth=2, voxel_size=(40.0, 8.0, 8.0)))
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save(
        {"model_config": network.config.model_dump(mode="json"), "model_state": network.state_dict()}, checkpoint
    )
    raw = np.random.default_rng(0).integers(0, 255, size=(4, 16, 16), dtype=np.uint8)
    with h5py.File(tmp_path / "raw.h5", "w") as file:
        file.create_dataset("raw", data=raw).attrs["voxel_size"] = [40.0, 8.0, 8.0]
    out = f"{tmp_path}/pred.h5:affs"
    assert main(["predict", str(checkpoint), f"{tmp_path}/raw.h5:raw", out, "--no-progress"]) == 0
    with open_volume(out) as written:
        assert written.shape == (3, 4, 16, 16) and written.voxel_size == (40.0, 8.0, 8.0)
    # without the attribute the voxel size is unknown and the same command refuses
    with h5py.File(tmp_path / "bare.h5", "w") as file:
        file.create_dataset("raw", data=raw)
    assert (
        main(["predict", str(checkpoint), f"{tmp_path}/bare.h5:raw", f"{tmp_path}/bare-pred.h5:affs", "--no-progress"])
        == 2
    )
    assert np.isfinite(read_volume(out)).all()
