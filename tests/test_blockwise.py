import json

import numpy as np
import pytest
import scipy.ndimage
import torch
import zarr

from neuropil.blockwise import blocks, predict_blockwise, run_blocks, segment_blockwise
from neuropil.blockwise import segment as blockwise_segment
from neuropil.checkpoint import load_model, save_checkpoint
from neuropil.cli import main
from neuropil.data.resample import resample, resample_region
from neuropil.errors import NeuropilError
from neuropil.io import read_volume, write_volume
from neuropil.model import ModelConfig, UNet3D
from neuropil.predict import predict_affinities
from neuropil.segment import agglomerate
from neuropil.segment.learned import train

BLOCK = (5, 16, 13)


def test_blocks_tile_the_volume_once():
    shape = (11, 40, 27)
    seen = np.zeros(shape, dtype=int)
    for block in blocks(shape, BLOCK):
        seen[block.write] += 1
    assert (seen == 1).all()
    assert len(blocks(shape, BLOCK)) == 3 * 3 * 3
    block = blocks(shape, BLOCK)[0]
    assert block.read([(1, 0)] * 3, shape) == block.write  # nothing before the first block
    assert blocks(shape, BLOCK)[-1].read([2, 2, 2], shape) == (slice(8, 11), slice(30, 40), slice(24, 27))
    with pytest.raises(NeuropilError, match="block shape"):
        blocks(shape, (4, 0, 4))


def test_run_blocks_resumes_with_the_unfinished_blocks(tmp_path):
    todo = blocks((4, 4, 4), (2, 2, 4))
    calls = []

    def failing(block):
        calls.append(block.index)
        if block.index == (1, 0, 0):
            raise RuntimeError("worker died")
        return sum(block.index)

    with pytest.raises(RuntimeError, match="worker died"):
        run_blocks(failing, todo, tmp_path / "done", description="test", scheduler="synchronous", progress=False)
    finished = {tuple(json.loads(p.read_text())["block"]) for p in (tmp_path / "done").glob("*.json")}
    assert (1, 0, 0) not in finished and finished

    calls.clear()
    results = run_blocks(
        lambda block: sum(block.index) * 10,
        todo,
        tmp_path / "done",
        description="test",
        scheduler="synchronous",
        progress=False,
    )
    assert set(calls) == set()  # the first function is not called again
    assert set(results) == {b.index for b in todo}
    for block in todo:  # finished blocks keep their recorded result; the rest ran now
        expected = sum(block.index) if block.index in finished else sum(block.index) * 10
        assert results[block.index] == expected


# ----------------------------------------------------------------------------- prediction


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = UNet3D(ModelConfig(base_channels=2, depth=3, voxel_size=(20.0, 10.0, 10.0), normalization="batch"))
    with torch.no_grad():  # running statistics far from the identity
        for _ in range(3):
            model(torch.rand(2, 1, 8, 16, 16) * 5 + 2)
    path = tmp_path_factory.mktemp("model") / "checkpoint.pt"
    save_checkpoint(path, {"model_config": model.config.model_dump(mode="json"), "model_state": model.state_dict()})
    return path


def test_blockwise_prediction_equals_whole_volume_prediction(tmp_path, checkpoint):
    # 2 x 2 x 2 blocks; the second along each axis reads from inside the volume (its halo is
    # (14, 24, 24) voxels) and ends at the volume's edge, short of a whole block
    raw = np.random.default_rng(0).integers(0, 255, size=(20, 60, 50), dtype=np.uint8)
    write_volume(f"{tmp_path / 'raw.h5'}:raw", raw, voxel_size=(20, 10, 10))
    written = predict_blockwise(
        checkpoint,
        f"{tmp_path / 'raw.h5'}:raw",
        f"{tmp_path / 'out.zarr'}/affs",
        block_shape=(16, 32, 32),
        progress=False,
    )
    assert written.shape == (3, 20, 60, 50)
    whole = predict_affinities(raw, load_model(checkpoint), tile_shape=None, progress=False)
    np.testing.assert_allclose(read_volume(f"{tmp_path / 'out.zarr'}/affs"), whole, atol=1e-5)
    array = zarr.open_array(str(tmp_path / "out.zarr" / "affs"), mode="r")
    assert array.chunks == (3, 16, 32, 32)
    assert array.attrs["resolution"] == [20.0, 10.0, 10.0]
    assert sorted(p.name for p in (tmp_path / "out.zarr").iterdir()) == ["affs", "zarr.json"]  # no work left


def test_blockwise_prediction_cli_and_bad_input(tmp_path, checkpoint, capsys):
    raw = np.random.default_rng(1).integers(0, 255, size=(8, 32, 32), dtype=np.uint8)
    write_volume(f"{tmp_path / 'raw.h5'}:raw", raw, voxel_size=(20, 10, 10))
    out = f"{tmp_path / 'out.zarr'}/affs"
    assert (
        main(
            ["predict", str(checkpoint), f"{tmp_path / 'raw.h5'}:raw", out, "--block", "8", "16", "16", "--no-progress"]
        )
        == 0
    )
    whole = predict_affinities(raw, load_model(checkpoint), tile_shape=None, progress=False)
    np.testing.assert_allclose(read_volume(out), whole, atol=1e-5)
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                str(checkpoint),
                f"{tmp_path / 'raw.h5'}:raw",
                str(tmp_path / "affs.h5"),
                "--block",
                "8",
                "16",
                "16",
            ]
        )
        == 2
    )
    assert "blockwise output must be a zarr array" in capsys.readouterr().err
    write_volume(f"{tmp_path / 'unknown.h5'}:raw", raw)
    with pytest.raises(NeuropilError, match="voxel size unknown"):
        predict_blockwise(checkpoint, f"{tmp_path / 'unknown.h5'}:raw", out, block_shape=(8, 16, 16), progress=False)
    np.testing.assert_allclose(read_volume(out), whole, atol=1e-5)  # the earlier output is untouched


# finer and coarser than the model's (20, 10, 10) nm; each raw shape is rescaled to several blocks per axis:
# (16, 60, 50) -> (8, 24, 20) voxels, 1 x 2 x 2 blocks; (8, 30, 25) -> (16, 39, 33) voxels, 2 x 3 x 3 blocks
@pytest.mark.parametrize("voxel_size, shape", [((10.0, 4.0, 4.0), (16, 60, 50)), ((40.0, 13.0, 13.0), (8, 30, 25))])
def test_blockwise_prediction_rescales_like_the_whole_volume(tmp_path, checkpoint, voxel_size, shape):
    raw = np.random.default_rng(2).integers(0, 255, size=shape, dtype=np.uint8)
    write_volume(f"{tmp_path / 'raw.h5'}:raw", raw, voxel_size=voxel_size)
    written = predict_blockwise(
        checkpoint,
        f"{tmp_path / 'raw.h5'}:raw",
        f"{tmp_path / 'out.zarr'}/affs",
        block_shape=(8, 16, 16),
        progress=False,
    )
    rescaled = resample(raw, voxel_size=voxel_size, target_voxel_size=(20.0, 10.0, 10.0))
    whole = predict_affinities(rescaled, load_model(checkpoint), tile_shape=None, progress=False)
    assert written.shape == whole.shape and written.input_voxel_size == voxel_size
    np.testing.assert_allclose(read_volume(f"{tmp_path / 'out.zarr'}/affs"), whole, atol=1e-5)


@pytest.mark.parametrize("voxel_size", [(10.0, 5.0, 5.0), (40.0, 4.0, 4.0), (29.0, 6.0, 6.0)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_resampled_regions_equal_the_resampled_volume(voxel_size, dtype):
    raw = (np.random.default_rng(0).random((30, 90, 70)) * 255).astype(dtype)
    whole = resample(raw, voxel_size=voxel_size, target_voxel_size=(25.0, 13.0, 13.0))
    for block in blocks(whole.shape, (7, 11, 9)):
        region = block.read([3, 5, 2], whole.shape)
        part = resample_region(raw, region, voxel_size=voxel_size, target_voxel_size=(25.0, 13.0, 13.0))
        np.testing.assert_array_equal(part, whole[region])


# ----------------------------------------------------------------------------- segmentation


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    rng = np.random.default_rng(0)
    fragments = scipy.ndimage.zoom(rng.integers(1, 40, size=(4, 8, 6)), (3, 5, 5), order=0).astype(np.uint64)
    fragments[fragments == 3] = 0
    affinities = rng.random((3, 12, 40, 30)).astype(np.float32)
    boundaries = rng.random((12, 40, 30)).astype(np.float32)
    # ground truth that groups the fragments, and an image that differs between its objects
    truth = np.where(fragments > 0, fragments % 7 + 1, 0).astype(np.uint64)
    image = (rng.integers(0, 60, size=fragments.shape) + 25 * (truth % 4)).astype(np.uint8)
    folder = tmp_path_factory.mktemp("volumes")
    for name, array in (("affinities", affinities), ("image", image), ("boundaries", boundaries)):
        write_volume(f"{folder / 'in.zarr'}/{name}", array, voxel_size=(25.0, 13.0, 13.0))
    write_volume(f"{folder / 'in.zarr'}/fragments", fragments)
    return {
        "folder": folder,
        "affinities": affinities,
        "boundaries": boundaries,
        "fragments": fragments,
        "truth": truth,
        "image": image,
    }


@pytest.mark.parametrize("method", ["mean", "quantile"])
@pytest.mark.parametrize("channel", ["affinities", "boundaries"])
def test_blockwise_segmentation_equals_in_memory_agglomeration(tmp_path, volumes, method, channel):
    thresholds = [0.3, 0.5, 0.9]
    outputs = [f"{tmp_path / 'out.zarr'}/t{t}" for t in thresholds]
    segment_blockwise(
        f"{volumes['folder'] / 'in.zarr'}/{channel}",
        outputs,
        thresholds=thresholds,
        fragments=f"{volumes['folder'] / 'in.zarr'}/fragments",
        method=method,
        block_shape=BLOCK,
        scheduler="synchronous",
        progress=False,
    )
    expected = agglomerate(volumes[channel], volumes["fragments"], method=method, thresholds=thresholds)
    for output, segmentation in zip(outputs, expected):
        np.testing.assert_array_equal(read_volume(output), segmentation)
    assert len(np.unique(expected[0])) > len(np.unique(expected[-1])) > 1  # the thresholds matter


@pytest.mark.parametrize("channel", ["affinities", "boundaries"])
@pytest.mark.parametrize("with_image", [False, True])
def test_blockwise_learned_agglomeration_equals_in_memory(tmp_path, volumes, channel, with_image):
    folder = volumes["folder"] / "in.zarr"
    image = volumes["image"] if with_image else None
    model = train(volumes[channel], volumes["fragments"], volumes["truth"], image=image, epochs=2, n_estimators=10)
    thresholds = [0.2, 0.5, 0.8]
    outputs = [f"{tmp_path / 'out.zarr'}/t{t}" for t in thresholds]
    segment_blockwise(
        f"{folder}/{channel}",
        outputs,
        thresholds=thresholds,
        fragments=f"{folder}/fragments",
        method="learned",
        model=model,
        image=f"{folder}/image" if with_image else None,
        block_shape=BLOCK,
        scheduler="synchronous",
        progress=False,
    )
    expected = agglomerate(
        volumes[channel], volumes["fragments"], method="learned", model=model, image=image, thresholds=thresholds
    )
    for output, segmentation in zip(outputs, expected):
        np.testing.assert_array_equal(read_volume(output), segmentation)
    assert len(np.unique(expected[0])) > len(np.unique(expected[-1])) > 1


def test_blockwise_fragments_are_unique_across_blocks_and_merge_back(tmp_path, volumes):
    source = f"{volumes['folder'] / 'in.zarr'}/affinities"
    out = tmp_path / "out.zarr"
    segment_blockwise(
        source,
        [f"{out}/none", f"{out}/all"],
        thresholds=[0.0, 1.0],
        block_shape=BLOCK,
        scheduler="threads",
        num_workers=2,
        progress=False,
    )
    pieces, merged = read_volume(f"{out}/none"), read_volume(f"{out}/all")
    owner = np.zeros(pieces.shape, dtype=int)
    for number, block in enumerate(blocks(pieces.shape, BLOCK)):
        owner[block.write] = number
    for fragment in np.unique(pieces):  # threshold 0: the fragments, each inside one block
        assert len(np.unique(owner[pieces == fragment])) == 1
    assert len(np.unique(pieces)) > len(blocks(pieces.shape, BLOCK))
    # above every score: one segment per connected component of touching fragments
    components, n = scipy.ndimage.label(pieces > 0)
    assert n == len(np.unique(merged[merged > 0]))
    for component in range(1, n + 1):
        assert len(np.unique(merged[components == component])) == 1


def test_blockwise_segmentation_resumes_after_a_failure(tmp_path, volumes, monkeypatch):
    source = f"{volumes['folder'] / 'in.zarr'}/affinities"
    output = f"{tmp_path / 'out.zarr'}/segmentation"
    original = blockwise_segment._relabel_block

    def failing(block, **options):
        if block.index == (1, 1, 1):
            raise RuntimeError("killed")
        return original(block, **options)

    monkeypatch.setattr(blockwise_segment, "_relabel_block", failing)
    with pytest.raises(RuntimeError, match="killed"):
        segment_blockwise(source, [output], block_shape=BLOCK, scheduler="synchronous", progress=False)
    work = tmp_path / "out.zarr" / "segmentation.work"
    assert len(list((work / "watershed").glob("*.json"))) == len(blocks((12, 40, 30), BLOCK))
    assert not (tmp_path / "out.zarr" / "segmentation").exists()  # nothing half-written at the final name

    def not_again(block, **options):
        pytest.fail("a finished pass ran again")

    monkeypatch.setattr(blockwise_segment, "_watershed_block", not_again)
    monkeypatch.setattr(blockwise_segment, "_edges_block", not_again)
    monkeypatch.setattr(blockwise_segment, "_relabel_block", original)
    segment_blockwise(source, [output], block_shape=BLOCK, scheduler="synchronous", progress=False)
    assert not work.exists()
    monkeypatch.undo()
    fresh = f"{tmp_path / 'fresh.zarr'}/segmentation"
    segment_blockwise(source, [fresh], block_shape=BLOCK, scheduler="synchronous", progress=False)
    np.testing.assert_array_equal(read_volume(output), read_volume(fresh))


def test_blockwise_segmentation_in_worker_processes_and_cli(tmp_path, volumes):
    source = f"{volumes['folder'] / 'in.zarr'}/affinities"
    out = f"{tmp_path / 'out.zarr'}/segmentation"
    assert (
        main(
            [
                "segment",
                source,
                out,
                "--fragments",
                f"{volumes['folder'] / 'in.zarr'}/fragments",
                "--block",
                *map(str, BLOCK),
                "--workers",
                "2",
                "--scheduler",
                "processes",
                "--no-progress",
            ]
        )
        == 0
    )
    (expected,) = agglomerate(volumes["affinities"], volumes["fragments"], thresholds=[0.5])
    np.testing.assert_array_equal(read_volume(out), expected)


def test_blockwise_segmentation_bad_input(tmp_path, volumes, capsys):
    folder = volumes["folder"] / "in.zarr"
    out = f"{tmp_path / 'out.zarr'}/segmentation"
    with pytest.raises(NeuropilError, match="supports mean, quantile, learned, not 'mutex'"):
        segment_blockwise(f"{folder}/affinities", [out], method="mutex")
    with pytest.raises(NeuropilError, match="needs a trained model"):
        segment_blockwise(f"{folder}/affinities", [out], method="learned")
    model = train(
        volumes["affinities"], volumes["fragments"], volumes["truth"], image=volumes["image"], epochs=1, n_estimators=2
    )
    with pytest.raises(NeuropilError, match="give the image too"):
        segment_blockwise(f"{folder}/affinities", [out], method="learned", model=model)
    with pytest.raises(NeuropilError, match="one output per threshold"):
        segment_blockwise(f"{folder}/affinities", [out], thresholds=[0.1, 0.2])
    write_volume(f"{tmp_path / 'in.zarr'}/small", volumes["fragments"][:4])
    with pytest.raises(NeuropilError, match="does not match"):
        segment_blockwise(f"{folder}/affinities", [out], fragments=f"{tmp_path / 'in.zarr'}/small")
    assert main(["segment", f"{folder}/affinities", str(tmp_path / "seg.tif"), "--block", "4", "8", "8"]) == 2
    assert "zarr" in capsys.readouterr().err
    assert main(["segment", f"{folder}/nothing", out, "--block", "4", "8", "8"]) == 2
    assert "no array 'nothing'" in capsys.readouterr().err


def test_blockwise_segmentation_runs_on_a_running_distributed_client(tmp_path, volumes):
    distributed = pytest.importorskip("distributed")
    from distributed import WorkerPlugin

    class FinishedTasks(WorkerPlugin):
        """Records the keys of the tasks each worker finished (its public transition hook)."""

        def setup(self, worker):
            self.keys = []

        def transition(self, key, start, finish, **kwargs):
            if start == "executing" and finish == "memory":
                self.keys.append(key)

    folder = volumes["folder"] / "in.zarr"
    out = f"{tmp_path / 'out.zarr'}/segmentation"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster) as client:
            client.register_plugin(FinishedTasks(), name="finished-tasks")
            segment_blockwise(
                f"{folder}/affinities", [out], fragments=f"{folder}/fragments", block_shape=BLOCK, progress=False
            )
            # the worker records a task before it reports it done, so every finished task is here
            by_worker = client.run(lambda dask_worker: list(dask_worker.plugins["finished-tasks"].keys))
            workers = set(client.scheduler_info()["workers"])
    assert set(by_worker) == workers and len(workers) == 2
    ran = [key for keys in by_worker.values() for key in keys]
    # given fragments: two passes (region graph, then relabelling), each block once, all on the cluster's workers
    every_block = [
        f"{description}-{block.name}"
        for description in ("region graph", "segments")
        for block in blocks(volumes["fragments"].shape, BLOCK)
    ]
    assert sorted(ran) == sorted(every_block)
    (expected,) = agglomerate(volumes["affinities"], volumes["fragments"], thresholds=[0.5])
    np.testing.assert_array_equal(read_volume(out), expected)


def test_each_worker_process_runs_its_kernels_in_its_share_of_the_cores():
    from neuropil.blockwise.blocks import worker_pool
    from neuropil.segment import graph

    with worker_pool("processes", 2) as pool:
        shares = {pool.submit(graph.cores).result() for _ in range(4)}
    assert shares == {max(1, graph.cores() // 2)}
    graph.limit_threads(1)
    try:
        assert graph.cores() == 1
    finally:
        graph.limit_threads(None)
