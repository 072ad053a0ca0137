"""OME-Zarr outputs of predict and segment: multiscale images that viewers (and ome-zarr's reader) read directly."""

import itertools
import logging
from collections import Counter

import numpy as np
import pytest
import torch
import zarr

import blobs
from neuropil.cli import main
from neuropil.cli.segment import output_addresses
from neuropil.errors import NeuropilError
from neuropil.io import open_volume, read_volume, write_volume
from neuropil.io.zarr import halve_mean, halve_mode, ome_levels, write_ome_zarr
from neuropil.model import ModelConfig, UNet3D

VOXEL = blobs.VOXEL  # (20, 10, 10) nm
RAW_SHAPE = (8, 96, 96)
# (20, 10, 10) nm: y and x first; then, z no longer coarser than twice y and x, all three; down to 32 voxels
LEVEL_SHAPES = [(8, 96, 96), (8, 48, 48), (4, 24, 24)]
LEVEL_SIZES = [(20.0, 10.0, 10.0), (20.0, 20.0, 20.0), (40.0, 40.0, 40.0)]
THRESHOLD = 0.35


def ome_reader_node(path):
    """The first node ome-zarr's reader finds at ``path``, as napari-ome-zarr reads it."""
    pytest.importorskip("ome_zarr.reader", reason="ome-zarr (the dev extra) checks the files as viewers read them")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    location = parse_url(str(path))
    assert location is not None, f"ome-zarr does not read {path}"
    nodes = list(Reader(location)())
    assert nodes, f"ome-zarr finds no image at {path}"
    return nodes[0]


def scales(node) -> list[list[float]]:
    return [
        next(t["scale"] for t in level if t["type"] == "scale") for level in node.metadata["coordinateTransformations"]
    ]


def block_mean(array: np.ndarray, factors) -> np.ndarray:
    """Mean of each block of ``factors`` voxels (the array's lengths are multiples of them)."""
    shape = [v for n, f in zip(array.shape, factors) for v in (n // f, f)]
    return array.reshape(shape).mean(axis=tuple(range(1, 2 * array.ndim, 2)))


def block_mode(array: np.ndarray, factors) -> np.ndarray:
    """The most frequent id of each block of ``factors`` voxels, the block's first in C order on a tie."""
    shape = tuple(-(-n // f) for n, f in zip(array.shape, factors))
    result = np.empty(shape, array.dtype)
    for index in np.ndindex(shape):
        ids = array[tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors))].ravel().tolist()
        result[index] = max(ids, key=ids.count)
    return result


def checkpoint_file(path):
    """A checkpoint of a tiny untrained network carrying a calibrated merge threshold."""
    torch.manual_seed(0)
    network = UNet3D(ModelConfig(base_channels=2, depth=2, voxel_size=VOXEL))
    state = {"model_config": network.config.model_dump(mode="json"), "model_state": network.state_dict()}
    state["merge_threshold"] = THRESHOLD
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """``neuropil predict`` to pred.ome.zarr, then ``neuropil segment`` of it to seg.ome.zarr (in memory)."""
    folder = tmp_path_factory.mktemp("ome")
    checkpoint = checkpoint_file(folder / "checkpoint.pt")
    raw = blobs.blob_volume(0, shape=RAW_SHAPE, cells=12).raw
    write_volume(f"{folder}/raw.h5:raw", raw, voxel_size=VOXEL)
    assert (
        main(["predict", str(checkpoint), f"{folder}/raw.h5:raw", str(folder / "pred.ome.zarr"), "--no-progress"]) == 0
    )
    return folder, checkpoint, raw


def test_predict_writes_a_multiscale_ome_zarr_that_ome_zarr_reads_at_the_voxel_size(predicted):
    from neuropil.checkpoint import load_model
    from neuropil.predict import predict_affinities

    folder, checkpoint, raw = predicted
    node = ome_reader_node(folder / "pred.ome.zarr")
    assert [tuple(level.shape) for level in node.data] == [(3, *shape) for shape in LEVEL_SHAPES]
    assert [axis["name"] for axis in node.metadata["axes"]] == ["c", "z", "y", "x"]
    assert node.metadata["axes"][0]["type"] == "channel" and "unit" not in node.metadata["axes"][0]
    assert all(axis["type"] == "space" and axis["unit"] == "nanometer" for axis in node.metadata["axes"][1:])
    assert scales(node) == [[1.0, *size] for size in LEVEL_SIZES]
    for level, scale in enumerate(scales(node)):  # each axis: the voxel size times 2 per level that halved it
        halvings = [sum(LEVEL_SHAPES[i][axis] != LEVEL_SHAPES[i + 1][axis] for i in range(level)) for axis in range(3)]
        assert scale[1:] == [v * 2**n for v, n in zip(VOXEL, halvings)]
    expected = predict_affinities(raw, load_model(checkpoint), progress=False)
    levels = [np.asarray(level) for level in node.data]
    np.testing.assert_array_equal(levels[0], expected)
    assert levels[0].dtype == np.float32
    np.testing.assert_allclose(levels[1], block_mean(levels[0], (1, 1, 2, 2)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(levels[2], block_mean(levels[1], (1, 2, 2, 2)), rtol=1e-6, atol=1e-7)


def test_neuropil_reads_the_predicted_ome_zarr_back_with_its_voxel_size_and_attributes(predicted):
    folder, _, _ = predicted
    with open_volume(folder / "pred.ome.zarr") as volume:
        assert volume.shape == (3, *LEVEL_SHAPES[0]) and volume.voxel_size == VOXEL
        assert volume.attributes["neuropil"]["merge_threshold"] == THRESHOLD
        assert volume.attributes["neuropil"]["offsets"] == [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]
        assert "multiscales" not in volume.attributes
    for level, (shape, size) in enumerate(zip(LEVEL_SHAPES, LEVEL_SIZES)):
        with open_volume(folder / f"pred.ome.zarr/{level}") as volume:
            assert volume.shape == (3, *shape) and volume.voxel_size == size
            assert volume.attributes["neuropil"]["merge_threshold"] == THRESHOLD


def test_segment_of_a_predicted_ome_zarr_uses_its_threshold_and_writes_an_ome_zarr_label_image(predicted, caplog):
    from neuropil.segment import segment

    folder, _, _ = predicted
    caplog.set_level(logging.INFO)
    assert main(["segment", str(folder / "pred.ome.zarr"), str(folder / "seg.ome.zarr")]) == 0
    assert f"merge threshold {THRESHOLD:g}: calibrated on the model's validation volumes" in caplog.text
    node = ome_reader_node(folder / "seg.ome.zarr")
    assert {type(spec).__name__ for spec in node.specs} >= {"Multiscales", "Label"}
    assert [tuple(level.shape) for level in node.data] == LEVEL_SHAPES
    assert [axis["name"] for axis in node.metadata["axes"]] == ["z", "y", "x"]
    assert all(axis["unit"] == "nanometer" for axis in node.metadata["axes"])
    assert scales(node) == [list(size) for size in LEVEL_SIZES]
    levels = [np.asarray(level) for level in node.data]
    expected = segment(read_volume(folder / "pred.ome.zarr"), voxel_size=VOXEL, thresholds=[THRESHOLD]).segmentations[0]
    np.testing.assert_array_equal(levels[0], expected)
    assert levels[0].dtype == np.uint64
    assert len(np.unique(levels[0])) > 2
    np.testing.assert_array_equal(levels[1], block_mode(levels[0], (1, 2, 2)))
    np.testing.assert_array_equal(levels[2], block_mode(levels[1], (2, 2, 2)))
    for finer, coarser in itertools.pairwise(levels):
        assert set(np.unique(coarser)) <= set(np.unique(finer))  # the most frequent id of each block: none invented
    with open_volume(folder / "seg.ome.zarr") as volume:
        assert volume.voxel_size == VOXEL and volume.dtype == np.uint64
    with open_volume(folder / "seg.ome.zarr/2") as volume:
        assert volume.voxel_size == LEVEL_SIZES[2]


def test_ome_zarr_outputs_meet_the_ngff_04_schema(predicted):
    folder, _, _ = predicted
    models = pytest.importorskip("ome_zarr_models.v04", reason="ome-zarr-models (with ome-zarr) holds the schema")
    assert main(["segment", str(folder / "pred.ome.zarr"), str(folder / "schema.ome.zarr")]) == 0
    image = models.Image.from_zarr(zarr.open_group(str(folder / "pred.ome.zarr"), mode="r"))
    assert image.attributes.multiscales[0].version == "0.4"
    label = models.ImageLabel.from_zarr(zarr.open_group(str(folder / "schema.ome.zarr"), mode="r"))
    assert label.attributes.image_label.version == "0.4"
    assert zarr.open_array(str(folder / "pred.ome.zarr/0"), mode="r").metadata.dimension_separator == "/"


def test_several_thresholds_each_go_to_an_ome_zarr_of_their_own(predicted):
    folder, _, _ = predicted
    assert output_addresses("out/seg.ome.zarr", [0.3, 0.6]) == ["out/seg_t0.3.ome.zarr", "out/seg_t0.6.ome.zarr"]
    assert output_addresses("out/s.ome.zarr/seg", [0.3, 0.6]) == ["out/s.ome.zarr/seg_t0.3", "out/s.ome.zarr/seg_t0.6"]
    assert output_addresses("out/seg.zarr", [0.3, 0.6]) == ["out/seg_t0.3.zarr", "out/seg_t0.6.zarr"]
    out = folder / "many.ome.zarr"
    assert main(["segment", str(folder / "pred.ome.zarr"), str(out), "--threshold", "0.3", "0.6"]) == 0
    for threshold in ("0.3", "0.6"):
        node = ome_reader_node(folder / f"many_t{threshold}.ome.zarr")
        assert [tuple(level.shape) for level in node.data] == LEVEL_SHAPES


@pytest.mark.parametrize("command", ["predict", "segment"])
def test_block_with_an_ome_zarr_output_is_a_one_line_error(predicted, capsys, command):
    folder, checkpoint, _ = predicted
    out = folder / f"blockwise_{command}.ome.zarr"
    inputs = [str(checkpoint), f"{folder}/raw.h5:raw"] if command == "predict" else [str(folder / "pred.ome.zarr")]
    capsys.readouterr()
    assert main([command, *inputs, str(out), "--block", "8", "32", "32", "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(out) in error and "--block" in error and "OME-Zarr" in error
    assert not out.exists()


def test_images_in_keys_of_one_ome_zarr_container_and_plain_zarr_unchanged(tmp_path):
    affinities = np.random.default_rng(0).random((3, 6, 70, 70)).astype(np.float32)
    ids = np.array([3, 1000, 2**40, 77], np.uint64)  # the mean of any two is no id
    labels = ids[np.random.default_rng(1).integers(0, 4, (6, 70, 70))]
    container = tmp_path / "results.ome.zarr"
    write_volume(f"{container}/affs", affinities, voxel_size=(40, 4, 4), attributes={"neuropil": {"x": 1}})
    write_volume(f"{container}/cells/seg", labels, voxel_size=(40, 4, 4))
    affs, seg = ome_reader_node(container / "affs"), ome_reader_node(container / "cells/seg")
    # (40, 4, 4) nm: z stays while it is coarser than twice y and x; 70 -> 35 -> 18 voxels
    assert [tuple(level.shape) for level in affs.data] == [(3, 6, 70, 70), (3, 6, 35, 35), (3, 6, 18, 18)]
    assert scales(affs) == [[1.0, 40.0, 4.0, 4.0], [1.0, 40.0, 8.0, 8.0], [1.0, 40.0, 16.0, 16.0]]
    assert "Label" in {type(spec).__name__ for spec in seg.specs}  # integers of 64 bits: ids
    np.testing.assert_array_equal(np.asarray(seg.data[0]), labels)
    np.testing.assert_array_equal(np.asarray(seg.data[1]), block_mode(labels, (1, 2, 2)))
    assert set(np.unique(np.asarray(seg.data[2]))) <= set(ids)
    with open_volume(f"{container}/affs") as volume:
        assert volume.voxel_size == (40.0, 4.0, 4.0) and volume.attributes["neuropil"] == {"x": 1}
        np.testing.assert_array_equal(volume[...], affinities)
    with open_volume(f"{container}/cells/seg/1") as volume:
        assert volume.shape == (6, 35, 35) and volume.voxel_size == (40.0, 8.0, 8.0)
    with pytest.raises(NeuropilError, match=r"results\.ome\.zarr: holds other data"):
        write_volume(container, labels, voxel_size=(40, 4, 4))
    write_volume(tmp_path / "whole.ome.zarr", labels, voxel_size=(40, 4, 4))
    write_volume(tmp_path / "whole.ome.zarr", labels + 1, voxel_size=(40, 4, 4))  # an image is replaced whole
    np.testing.assert_array_equal(read_volume(tmp_path / "whole.ome.zarr"), labels + 1)
    with pytest.raises(NeuropilError, match=r"whole\.ome\.zarr: is one OME-Zarr image"):
        write_volume(f"{tmp_path}/whole.ome.zarr/extra", labels, voxel_size=(40, 4, 4))
    with pytest.raises(NeuropilError, match=r"needs a voxel size"):
        write_volume(tmp_path / "bare.ome.zarr", labels)
    # a plain zarr container keeps its single array with the resolution attribute
    write_volume(f"{tmp_path}/plain.zarr/affs", affinities, voxel_size=(40, 4, 4))
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="r")
    assert "multiscales" not in plain["affs"].attrs and plain["affs"].attrs["resolution"] == [40.0, 4.0, 4.0]
    assert sorted(plain.keys()) == ["affs"]


def test_zarr_v3_writes_ome_zarr_05_that_both_readers_read(tmp_path):
    image = np.random.default_rng(2).integers(0, 255, (4, 40, 40)).astype(np.uint8)
    write_volume(tmp_path / "raw.ome.zarr", image, voxel_size=(8, 8, 8), zarr_format=3)
    assert zarr.open_group(str(tmp_path / "raw.ome.zarr"), mode="r").attrs["ome"]["version"] == "0.5"
    node = ome_reader_node(tmp_path / "raw.ome.zarr")
    assert [tuple(level.shape) for level in node.data] == [(4, 40, 40), (2, 20, 20)]
    assert scales(node) == [[8.0, 8.0, 8.0], [16.0, 16.0, 16.0]]
    assert "Label" not in {type(spec).__name__ for spec in node.specs}  # 8-bit integers: an image
    np.testing.assert_array_equal(np.asarray(node.data[1]), np.rint(block_mean(image, (2, 2, 2))).astype(np.uint8))
    assert open_volume(tmp_path / "raw.ome.zarr/1").voxel_size == (16.0, 16.0, 16.0)


def test_levels_keep_anisotropy_and_round_odd_lengths_up():
    levels = ome_levels((5, 130, 67), (40, 4, 4))
    assert [level.shape for level in levels] == [(5, 130, 67), (5, 65, 34), (5, 33, 17), (5, 17, 9)]
    assert [level.voxel_size for level in levels] == [(40, 4, 4), (40, 8, 8), (40, 16, 16), (40, 32, 32)]
    assert [level.shape for level in ome_levels((64, 64, 64), (8, 8, 8), levels=10)][-1] == (1, 1, 1)
    assert [level.voxel_size for level in ome_levels((200, 200, 200), (40, 4, 4), levels=5)][-1] == (80, 64, 64)
    assert len(ome_levels((1, 1, 1), (4, 4, 4), levels=3)) == 1  # nothing left to halve


def test_labels_take_the_most_frequent_id_of_each_block_and_images_the_mean():
    block = np.array([3, 3, 3, 10, 10, 10, 10, 1], np.uint64).reshape(2, 2, 2)
    assert halve_mode(block, (True, True, True)).ravel().tolist() == [10]  # the mean (6.25) is no id
    tie = np.array([5, 9, 5, 9], np.uint64).reshape(1, 2, 2)
    assert halve_mode(tie, (False, True, True)).ravel().tolist() == [5]  # a tie: the block's first
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, (5, 6, 7)).astype(np.uint32)
    halved = halve_mode(labels, (True, True, True))
    assert halved.shape == (3, 3, 4) and halved.dtype == np.uint32
    np.testing.assert_array_equal(halved, block_mode(labels, (2, 2, 2)))
    for index in np.ndindex(halved.shape):
        counts = Counter(labels[tuple(slice(2 * i, 2 * i + 2) for i in index)].ravel().tolist())
        assert counts[halved[index]] == max(counts.values())
    image = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(halve_mean(image, (True,)), [0.5, 2.5, 4.0])  # an odd last voxel stays


def test_bad_ome_zarr_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(NeuropilError, match=r"labels must be integers, got float32"):
        write_ome_zarr(tmp_path / "x.ome.zarr", np.zeros((2, 4, 4), np.float32), voxel_size=(1, 1, 1), kind="labels")
    with pytest.raises(NeuropilError, match=r"\(z, y, x\) or \(c, z, y, x\) array"):
        write_ome_zarr(tmp_path / "x.ome.zarr", np.zeros((4, 4), np.float32), voxel_size=(1, 1, 1))
    with pytest.raises(NeuropilError, match=r"kind 'mask' is not one of image, labels"):
        write_ome_zarr(tmp_path / "x.ome.zarr", np.zeros((2, 4, 4), bool), voxel_size=(1, 1, 1), kind="mask")
    with pytest.raises(NeuropilError, match=r"0 OME-Zarr levels; give at least 1"):
        write_ome_zarr(tmp_path / "x.ome.zarr", np.zeros((2, 4, 4), np.float32), voxel_size=(1, 1, 1), levels=0)
    assert not (tmp_path / "x.ome.zarr").exists()
