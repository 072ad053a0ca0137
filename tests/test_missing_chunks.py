"""Chunks that are not stored: an error naming them unless allowed; arrays neuropil wrote are known complete."""

import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

import neuropil.io.zarr as zarr_io
from neuropil.blockwise.store import prepare_output, zarr_output
from neuropil.cli import main
from neuropil.errors import NeuropilError
from neuropil.io import open_volume, read_volume, write_volume
from neuropil.io.backend import COMPLETE_ATTRIBUTE
from neuropil.io.volume import allowing_missing_chunks

MISSING = (
    r"(\d+) chunk\(s\) missing in the region read \(e\.g\. chunk \((\d+), (\d+), (\d+)\)\); pass --allow-missing-chunks"
)


def external_array(path, zarr_format=3, **options):
    """A (8, 16, 16) zarr array as another tool writes it: chunks (4, 8, 8), chunk (1, 0, 1) never written."""
    array = zarr.create_array(
        str(path), shape=(8, 16, 16), chunks=(4, 8, 8), dtype="uint16", zarr_format=zarr_format, **options
    )
    values = np.arange(1, 8 * 16 * 16 + 1, dtype=np.uint16).reshape(8, 16, 16)
    array.attrs["resolution"] = [30.0, 8.0, 8.0]
    for index in np.ndindex(2, 2, 2):
        if index != (1, 0, 1):
            region = tuple(slice(i * n, (i + 1) * n) for i, n in zip(index, (4, 8, 8)))
            array[region] = values[region]
    values[4:8, 0:8, 8:16] = 0
    return values


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_missing_zarr_chunk_in_the_region_read_is_an_error_unless_allowed(tmp_path, zarr_format):
    expected = external_array(tmp_path / "a.zarr", zarr_format)
    with open_volume(tmp_path / "a.zarr") as volume:
        with pytest.raises(NeuropilError, match=MISSING) as raised:
            volume.read()
        assert str(raised.value) == (
            f"{tmp_path / 'a.zarr'}: 1 chunk(s) missing in the region read (e.g. chunk (1, 0, 1)); "
            "pass --allow-missing-chunks to read them as the fill value"
        )
        with pytest.raises(NeuropilError, match=MISSING):
            volume[5, 2:3, 9]  # one voxel of it
        with pytest.raises(NeuropilError, match=MISSING):
            volume[::4, ::5, ::3]  # steps that land in it
        np.testing.assert_array_equal(volume[:4], expected[:4])  # regions without it read as usual
        np.testing.assert_array_equal(volume[4:, 8:], expected[4:, 8:])
        np.testing.assert_array_equal(volume[::4, ::8, ::16], expected[::4, ::8, ::16])  # steps that skip it
    with open_volume(tmp_path / "a.zarr", allow_missing_chunks=True) as volume:
        np.testing.assert_array_equal(volume.read(), expected)  # the fill value, 0
    np.testing.assert_array_equal(read_volume(tmp_path / "a.zarr", allow_missing_chunks=True), expected)
    with pytest.raises(NeuropilError, match=MISSING):
        read_volume(tmp_path / "a.zarr")
    with allowing_missing_chunks():
        np.testing.assert_array_equal(read_volume(tmp_path / "a.zarr"), expected)
        with pytest.raises(NeuropilError, match=MISSING):
            read_volume(tmp_path / "a.zarr", allow_missing_chunks=False)
    with pytest.raises(NeuropilError, match=MISSING):  # the default is back
        read_volume(tmp_path / "a.zarr")


def test_counts_every_missing_chunk_and_names_the_first(tmp_path):
    array = zarr.create_array(str(tmp_path / "a.zarr"), shape=(8, 16, 16), chunks=(4, 8, 8), dtype="uint8")
    array[:4, :8] = 1  # 2 of 8 chunks
    with pytest.raises(NeuropilError, match=MISSING) as raised:
        read_volume(tmp_path / "a.zarr")
    assert "6 chunk(s) missing" in str(raised.value) and "chunk (0, 1, 0)" in str(raised.value)


def test_v2_nested_keys_and_sharded_v3_arrays_are_checked_by_their_stored_objects(tmp_path):
    expected = external_array(tmp_path / "nested.zarr", 2, chunk_key_encoding={"name": "v2", "separator": "/"})
    assert (tmp_path / "nested.zarr" / "0" / "0" / "0").is_file()
    with pytest.raises(NeuropilError, match=r"e\.g\. chunk \(1, 0, 1\)"):
        read_volume(tmp_path / "nested.zarr")
    np.testing.assert_array_equal(read_volume(tmp_path / "nested.zarr", allow_missing_chunks=True), expected)
    # shards of (4, 8, 8) holding chunks of (2, 4, 4): a shard is the stored object
    sharded = zarr.create_array(
        str(tmp_path / "sharded.zarr"), shape=(8, 16, 16), chunks=(2, 4, 4), shards=(4, 8, 8), dtype="uint8"
    )
    sharded[:4] = 1
    sharded[4:, :8] = 2
    with pytest.raises(NeuropilError, match=r"2 chunk\(s\) missing .*chunk \(1, 1, 0\)"):
        read_volume(tmp_path / "sharded.zarr")
    assert read_volume(tmp_path / "sharded.zarr", allow_missing_chunks=True)[4:, 8:].max() == 0


def test_only_the_chunks_of_the_region_are_looked_up(tmp_path, monkeypatch):
    # 100 x 1000 x 1000 chunks; a read of 2 x 2 x 3 of them looks up those 12 only
    array = zarr.create_array(str(tmp_path / "big.zarr"), shape=(100, 1000, 1000), chunks=(1, 1, 1), dtype="uint8")
    array[3:5, 10:12, 20:23] = 7
    looked_up = []
    original = zarr_io._stored

    def counting(node, indices):
        looked_up.extend(indices)
        return original(node, indices)

    monkeypatch.setattr(zarr_io, "_stored", counting)
    assert (open_volume(tmp_path / "big.zarr")[3:5, 10:12, 20:23] == 7).all()
    assert sorted(looked_up) == [(z, y, x) for z in (3, 4) for y in (10, 11) for x in (20, 21, 22)]


def test_stores_that_are_not_local_folders_are_asked_for_their_keys():
    store = zarr.storage.MemoryStore()
    array = zarr.create_array(store, shape=(4, 4), chunks=(2, 2), dtype="uint8")
    array[:2] = 1
    assert zarr_io._stored(array, [(0, 0), (0, 1), (1, 0), (1, 1)]) == [True, True, False, False]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_arrays_neuropil_writes_store_every_chunk_so_a_lost_one_is_found(tmp_path, zarr_format):
    # zarr by itself would leave out the two chunks that hold only the fill value
    labels = np.zeros((8, 16, 16), np.uint32)
    labels[:4] = 5
    address = f"{tmp_path / 'seg.zarr'}/labels"
    write_volume(address, labels, chunks=(4, 8, 16), zarr_format=zarr_format)
    chunks = sorted(p for p in (tmp_path / "seg.zarr" / "labels").rglob("*") if p.is_file() and "z" not in p.name)
    assert len(chunks) == 4
    np.testing.assert_array_equal(read_volume(address), labels)
    chunks[-1].unlink()
    with pytest.raises(NeuropilError, match=r"1 chunk\(s\) missing .*chunk \(1, 1, 0\)"):
        read_volume(address)
    zarr_io.write_ome_zarr(tmp_path / "im.ome.zarr", labels.astype(np.float32), voxel_size=(40, 4, 4), levels=2)
    np.testing.assert_array_equal(read_volume(tmp_path / "im.ome.zarr"), labels)
    assert read_volume(tmp_path / "im.ome.zarr/1").shape == (8, 8, 8)


def test_finished_blockwise_outputs_are_marked_complete_and_read_without_listing_chunks(tmp_path, monkeypatch):
    from neuropil.blockwise import segment_blockwise

    rng = np.random.default_rng(0)
    write_volume(f"{tmp_path / 'in.zarr'}/affs", rng.random((3, 8, 16, 16)).astype(np.float32), voxel_size=(30, 8, 8))
    out = f"{tmp_path / 'out.zarr'}/seg"
    segment_blockwise(
        f"{tmp_path / 'in.zarr'}/affs", [out], block_shape=(4, 8, 8), scheduler="synchronous", progress=False
    )
    assert open_volume(out).attributes[COMPLETE_ATTRIBUTE] is True

    def no_listing(node, indices):
        pytest.fail("a finished blockwise output was checked chunk by chunk")

    monkeypatch.setattr(zarr_io, "_stored", no_listing)
    assert read_volume(out).shape == (8, 16, 16)


def test_an_unfinished_blockwise_output_is_an_error_naming_it(tmp_path):
    output = zarr_output(f"{tmp_path / 'out.zarr'}/seg")
    prepare_output(output, {"job": "test"}, (4, 8, 8), (2, 4, 4), np.uint64)
    with pytest.raises(NeuropilError, match=r"out\.zarr/seg\.work/array: unfinished: the blockwise job writing it"):
        read_volume(output.partial)
    assert read_volume(output.partial, allow_missing_chunks=True).shape == (4, 8, 8)
    with open_volume(output.partial) as volume:  # opening it, for its shape or attributes, is no error
        assert volume.attributes[COMPLETE_ATTRIBUTE] is False


def test_a_missing_n5_block_is_an_error_unless_allowed(tmp_path):
    values = np.arange(8 * 16 * 16, dtype=np.uint16).reshape(8, 16, 16)
    write_volume(f"{tmp_path / 'v.n5'}/raw", values, chunks=(4, 8, 8))
    np.testing.assert_array_equal(read_volume(f"{tmp_path / 'v.n5'}/raw"), values)
    (tmp_path / "v.n5" / "raw" / "1" / "0" / "1").unlink()  # x-first on disk: block z=1, y=0, x=1
    with pytest.raises(NeuropilError, match=r"1 chunk\(s\) missing .*chunk \(1, 0, 1\)"):
        read_volume(f"{tmp_path / 'v.n5'}/raw")
    values[4:, :8, 8:] = 0
    np.testing.assert_array_equal(read_volume(f"{tmp_path / 'v.n5'}/raw", allow_missing_chunks=True), values)
    np.testing.assert_array_equal(open_volume(f"{tmp_path / 'v.n5'}/raw")[:4], values[:4])


def _one_error_line(capsys) -> str:
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "Traceback" not in error[0], error
    return error[0]


def test_evaluate_and_data_info_refuse_missing_chunks_unless_allowed(tmp_path, capsys):
    truth = external_array(tmp_path / "gt.zarr")
    write_volume(tmp_path / "seg.h5:seg", truth)
    assert main(["evaluate", str(tmp_path / "seg.h5:seg"), str(tmp_path / "gt.zarr")]) == 2
    assert "1 chunk(s) missing in the region read (e.g. chunk (1, 0, 1))" in _one_error_line(capsys)
    assert main(["evaluate", str(tmp_path / "seg.h5:seg"), str(tmp_path / "gt.zarr"), "--allow-missing-chunks"]) == 0
    assert "VOI split  0.0000" in capsys.readouterr().out
    assert main(["data", "info", str(tmp_path / "gt.zarr")]) == 2
    assert "chunk(s) missing" in _one_error_line(capsys)
    assert main(["data", "info", str(tmp_path / "gt.zarr"), "--allow-missing-chunks", "--json"]) == 0
    assert '"label_ids": 1792' in capsys.readouterr().out  # 2048 ids less the 256 of the missing chunk
    assert main(["data", "info", str(tmp_path / "gt.zarr"), "--no-count"]) == 0  # reads no voxel


@pytest.mark.parametrize("block", [False, True])
def test_segment_refuses_missing_chunks_unless_allowed(tmp_path, capsys, block):
    rng = np.random.default_rng(0)
    affinities = zarr.create_array(
        str(tmp_path / "affs.zarr"), shape=(3, 8, 16, 16), chunks=(3, 4, 8, 8), dtype="float32"
    )
    affinities.attrs["resolution"] = [30.0, 8.0, 8.0]
    affinities[:, :4] = rng.random((3, 4, 16, 16)).astype(np.float32)
    out = f"{tmp_path / 'out.zarr'}/seg"
    blockwise = ["--block", "4", "8", "8", "--scheduler", "synchronous", "--no-progress"] if block else []
    assert main(["segment", str(tmp_path / "affs.zarr"), out, *blockwise]) == 2
    assert "chunk(s) missing in the region read" in _one_error_line(capsys)
    if block:  # no block was finished: nothing is kept to resume
        assert sorted(p.name for p in (tmp_path / "out.zarr").iterdir()) == ["zarr.json"]
    assert main(["segment", str(tmp_path / "affs.zarr"), out, *blockwise, "--allow-missing-chunks"]) == 0
    assert read_volume(out).shape == (8, 16, 16)


def test_a_corrupt_zarr_chunk_is_one_error_line_naming_it(tmp_path):
    values = np.random.default_rng(0).integers(0, 1000, size=(16, 128, 128), dtype=np.uint16)
    write_volume(f"{tmp_path / 'v.zarr'}/raw", values, chunks=(2, 16, 16), voxel_size=(30, 8, 8))
    (tmp_path / "v.zarr" / "raw" / "c" / "0" / "0" / "0").write_bytes(b"garbage bytes, not a chunk")
    result = subprocess.run(
        [sys.executable, "-m", "neuropil", "data", "info", f"{tmp_path / 'v.zarr'}/raw"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"neuropil: error: {tmp_path / 'v.zarr'}/raw: cannot read chunk (0, 0, 0) (Zstd decompression error: "
        "invalid input data)"
    ]


def test_blockwise_prediction_refuses_missing_raw_chunks_unless_allowed(tmp_path):
    import torch

    from neuropil.blockwise import predict_blockwise
    from neuropil.checkpoint import save_checkpoint
    from neuropil.model import ModelConfig, UNet3D

    torch.manual_seed(0)
    model = UNet3D(ModelConfig(base_channels=2, depth=2, voxel_size=(30.0, 8.0, 8.0)))
    checkpoint = tmp_path / "checkpoint.pt"
    save_checkpoint(
        checkpoint, {"model_config": model.config.model_dump(mode="json"), "model_state": model.state_dict()}
    )
    external_array(tmp_path / "raw.zarr")
    out = f"{tmp_path / 'out.zarr'}/affs"
    options = dict(block_shape=(4, 8, 8), scheduler="synchronous", progress=False)
    with pytest.raises(NeuropilError, match=MISSING):
        predict_blockwise(checkpoint, str(tmp_path / "raw.zarr"), out, **options)
    assert sorted(p.name for p in (tmp_path / "out.zarr").iterdir()) == ["zarr.json"]  # nothing kept: no block done
    written = predict_blockwise(checkpoint, str(tmp_path / "raw.zarr"), out, allow_missing_chunks=True, **options)
    assert written.shape == (3, 8, 16, 16) and read_volume(out).shape == (3, 8, 16, 16)
