"""Calibrated merge thresholds: chosen by validation at each checkpoint, carried to prediction and segmentation."""

import csv
import logging

import numpy as np
import pytest
import torch

import blobs
from neuropil.checkpoint import load_checkpoint
from neuropil.data.volumes import TrainingVolume
from neuropil.errors import NeuropilError
from neuropil.evaluate import THRESHOLD_GRID, Scores, best_threshold
from neuropil.model import ModelConfig
from neuropil.train import TrainConfig, Trainer
from neuropil.train.trainer import VALIDATION_COLUMNS, validate_volume

VOXEL = blobs.VOXEL


def blob_volume(seed: int, shape=(8, 32, 32)) -> TrainingVolume:
    """Cells around random seeds, separated by dark one-voxel boundaries."""
    return blobs.blob_volume(seed, shape=shape, cells=8)


def scores(*vois: float) -> list[Scores]:
    return [Scores(voi_split=v, voi_merge=0.0, arand=0.0, arand_precision=1, arand_recall=1, n_voxels=1) for v in vois]


def test_best_threshold_is_the_lowest_mean_voi_over_volumes():
    # volume 1 prefers 0.3, volume 2 prefers 0.7; the mean (1.5, 1.25, 1.75) prefers 0.5
    assert best_threshold([scores(1.0, 1.5, 3.0), scores(2.0, 1.0, 0.5)], (0.3, 0.5, 0.7)) == 0.5
    assert best_threshold([scores(1.0, 1.0)], (0.2, 0.4)) == 0.2  # the first of equals
    with pytest.raises(NeuropilError, match="one score per threshold"):
        best_threshold([scores(1.0)], (0.2, 0.4))


def test_the_default_grid_runs_from_005_to_095():
    assert THRESHOLD_GRID[0] == 0.05 and THRESHOLD_GRID[-1] == 0.95 and len(THRESHOLD_GRID) == 19
    assert TrainConfig().thresholds == THRESHOLD_GRID
    with pytest.raises(ValueError, match="merge threshold"):
        TrainConfig(thresholds=(0.5, 1.5))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    model_config = ModelConfig(base_channels=4, depth=2, voxel_size=VOXEL)
    train_config = TrainConfig(
        iterations=12, patch_shape=(8, 16, 16), checkpoint_every=4, learning_rate=3e-3, augment=False
    )
    validation = {"a": [blob_volume(10)], "b": [blob_volume(11), blob_volume(12)]}
    trainer = Trainer(
        {"blobs": [blob_volume(0)]},
        out_dir=out,
        model_config=model_config,
        train_config=train_config,
        validation=validation,
    )
    trainer.train(progress=False)
    return out, trainer, validation


def test_validation_csv_has_segmentation_scores_per_domain_and_checkpoint(trained_run):
    out, _, _ = trained_run
    with (out / "validation.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert tuple(rows[0]) == VALIDATION_COLUMNS
    assert [(int(r["iteration"]), r["domain"]) for r in rows] == [(i, d) for i in (4, 8, 12) for d in ("a", "b")]
    for row in rows:
        assert float(row["threshold"]) in THRESHOLD_GRID
        assert float(row["voi_split"]) >= 0 and float(row["voi_merge"]) >= 0 and 0 <= float(row["arand"]) <= 1
    # one threshold per checkpoint, shared by its domains
    assert all(rows[2 * i]["threshold"] == rows[2 * i + 1]["threshold"] for i in range(3))


def test_checkpoint_carries_the_threshold_of_lowest_mean_voi_over_all_volumes(trained_run):
    out, trainer, validation = trained_run
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["iteration"] == 12
    # recomputed independently from the final weights: the mean over the three volumes, not over domains
    results = [
        validate_volume(trainer.model, volume, thresholds=THRESHOLD_GRID).scores
        for volumes in validation.values()
        for volume in volumes
    ]
    mean_voi = np.mean([[s.voi for s in per_volume] for per_volume in results], axis=0)
    assert state["merge_threshold"] == THRESHOLD_GRID[int(np.argmin(mean_voi))]
    assert state["merge_threshold"] == trainer.merge_threshold


def test_best_checkpoint_is_the_one_of_lowest_mean_voi(trained_run):
    out, _, _ = trained_run
    with (out / "validation.csv").open() as file:
        rows = list(csv.DictReader(file))
    # domain a has one volume, b two: the mean over volumes weighs b's row twice
    weights = {"a": 1, "b": 2}
    mean_voi = {}
    for row in rows:
        voi = (float(row["voi_split"]) + float(row["voi_merge"])) * weights[row["domain"]] / 3
        mean_voi[int(row["iteration"])] = mean_voi.get(int(row["iteration"]), 0.0) + voi
    best = load_checkpoint(out / "best.pt")
    assert best["iteration"] == min(mean_voi, key=mean_voi.get)
    assert best["best_voi"] == pytest.approx(min(mean_voi.values()), abs=1e-4)
    assert load_checkpoint(out / "checkpoint.pt")["best_voi"] == best["best_voi"]
    assert not list(out.glob("*.partial"))


def test_a_run_without_validation_volumes_carries_no_threshold(tmp_path):
    model_config = ModelConfig(base_channels=2, depth=2, voxel_size=VOXEL)
    train_config = TrainConfig(iterations=2, patch_shape=(8, 16, 16), checkpoint_every=2, augment=False)
    Trainer({"blobs": [blob_volume(0)]}, out_dir=tmp_path, model_config=model_config, train_config=train_config).train(
        progress=False
    )
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["merge_threshold"] is None
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "validation.csv").exists()


def test_old_checkpoints_without_calibration_resume(tmp_path):
    model_config = ModelConfig(base_channels=2, depth=2, voxel_size=VOXEL)
    train_config = TrainConfig(iterations=2, patch_shape=(8, 16, 16), checkpoint_every=2, augment=False)
    trainer = Trainer(
        {"blobs": [blob_volume(0)]}, out_dir=tmp_path, model_config=model_config, train_config=train_config
    )
    state = trainer.state()
    for key in ("merge_threshold", "best_voi", "random_states"):
        state.pop(key, None)
    torch.save(state, tmp_path / "checkpoint.pt")
    resumed = Trainer(
        {"blobs": [blob_volume(0)]}, out_dir=tmp_path, model_config=model_config, train_config=train_config
    )
    assert resumed.merge_threshold is None and resumed.best_voi == np.inf


@pytest.mark.parametrize("address", ["a.h5:affinities", "a.zarr/affinities", "a.n5/affinities"])
def test_attributes_are_written_and_read_back(tmp_path, address):
    from neuropil.io import open_volume, write_volume

    described = {"neuropil": {"merge_threshold": 0.35, "offsets": [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]}}
    written = write_volume(
        f"{tmp_path}/{address}", np.zeros((3, 2, 4, 4), np.float32), voxel_size=VOXEL, attributes=described
    )
    with open_volume(written) as volume:
        assert volume.attributes["neuropil"] == described["neuropil"]
        assert volume.voxel_size == VOXEL
    plain = write_volume(f"{tmp_path}/plain.{address.split('.', 1)[1]}", np.zeros((2, 4, 4), np.uint8))
    with open_volume(plain) as volume:
        assert "neuropil" not in volume.attributes


def checkpoint_file(path, threshold):
    """A checkpoint of a tiny untrained network, carrying ``threshold`` (or, when None, none as older ones)."""
    from neuropil.model import UNet3D

    torch.manual_seed(0)
    network = UNet3D(ModelConfig(base_channels=2, depth=2, voxel_size=VOXEL))
    state = {"model_config": network.config.model_dump(mode="json"), "model_state": network.state_dict()}
    if threshold is not None:
        state["merge_threshold"] = threshold
    torch.save(state, path)
    return path


@pytest.mark.parametrize("threshold", [0.35, None])
def test_predict_writes_the_calibrated_threshold_and_the_offsets(tmp_path, threshold):
    from neuropil.cli import main
    from neuropil.io import open_volume, write_volume

    checkpoint = checkpoint_file(tmp_path / "checkpoint.pt", threshold)
    write_volume(f"{tmp_path}/raw.h5:raw", blob_volume(0).raw, voxel_size=VOXEL)
    for output in (f"{tmp_path}/affs.h5:affs", f"{tmp_path}/affs.zarr/affs"):
        assert main(["predict", str(checkpoint), f"{tmp_path}/raw.h5:raw", output, "--no-progress"]) == 0
        with open_volume(output) as volume:
            described = volume.attributes["neuropil"]
        assert described["offsets"] == [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]
        assert described.get("merge_threshold") == threshold


def test_blockwise_predict_writes_the_calibrated_threshold(tmp_path):
    from neuropil.blockwise import predict_blockwise
    from neuropil.io import open_volume, write_volume

    checkpoint = checkpoint_file(tmp_path / "checkpoint.pt", 0.4)
    write_volume(f"{tmp_path}/raw.h5:raw", blob_volume(0).raw, voxel_size=VOXEL)
    written = predict_blockwise(
        checkpoint, f"{tmp_path}/raw.h5:raw", f"{tmp_path}/affs.zarr/affs", block_shape=(8, 16, 16), progress=False
    )
    with open_volume(written.address) as volume:
        assert volume.attributes["neuropil"]["merge_threshold"] == 0.4


def noisy_affinities(seed=0):
    """Affinities of a blob volume's labels with noise: which threshold is used changes the result."""
    volume = blob_volume(seed)
    target = volume.targets(((-1, 0, 0), (0, -1, 0), (0, 0, -1)))
    noise = np.random.default_rng(seed).uniform(0, 0.45, target.affinities.shape)
    return np.clip(np.where(target.affinities > 0.5, 1 - noise, noise * 1.6), 0, 1).astype(np.float32)


@pytest.mark.parametrize("block", [False, True])
def test_segment_uses_the_threshold_stored_on_its_input(tmp_path, caplog, block):
    from neuropil.cli import main
    from neuropil.io import read_volume, write_volume
    from neuropil.model import UNet3D
    from neuropil.predict import prediction_attributes

    affinities = noisy_affinities()
    model = UNet3D(ModelConfig(base_channels=2, depth=2, voxel_size=VOXEL))
    source = f"{tmp_path}/affs.zarr/affs"
    write_volume(source, affinities, voxel_size=VOXEL, attributes=prediction_attributes(model, 0.7))
    extra = ["--block", "8", "16", "16", "--workers", "1", "--scheduler", "synchronous"] if block else []
    caplog.set_level(logging.INFO)
    assert main(["segment", source, f"{tmp_path}/seg.zarr/default", "--no-progress", *extra]) == 0
    assert "merge threshold 0.7: calibrated on the model's validation volumes" in caplog.text
    for threshold in ("0.7", "0.5"):
        assert main(["segment", source, f"{tmp_path}/seg.zarr/t{threshold}", "--threshold", threshold, *extra]) == 0
    used = read_volume(f"{tmp_path}/seg.zarr/default")
    np.testing.assert_array_equal(used, read_volume(f"{tmp_path}/seg.zarr/t0.7"))
    assert not np.array_equal(used, read_volume(f"{tmp_path}/seg.zarr/t0.5"))


def test_segment_without_a_stored_threshold_keeps_05_and_says_so(tmp_path, caplog):
    from neuropil.cli import main
    from neuropil.io import read_volume, write_volume

    source = write_volume(f"{tmp_path}/affs.h5:affs", noisy_affinities(), voxel_size=VOXEL)
    caplog.set_level(logging.INFO)
    assert main(["segment", str(source), f"{tmp_path}/seg.h5:default"]) == 0
    assert "merge threshold 0.5 (default)" in caplog.text and "stores no calibrated threshold" in caplog.text
    assert main(["segment", str(source), f"{tmp_path}/seg.h5:half", "--threshold", "0.5"]) == 0
    np.testing.assert_array_equal(read_volume(f"{tmp_path}/seg.h5:default"), read_volume(f"{tmp_path}/seg.h5:half"))


@pytest.fixture
def toy_boundaries():
    """Two objects, split into 2x4x4 fragments, with a noisy boundary map."""
    rng = np.random.default_rng(0)
    z, y, x = np.indices((8, 16, 16))
    fragments = ((z // 2) * 16 + (y // 4) * 4 + x // 4 + 1).astype(np.uint64)
    gt = np.where(x < 8, 1, 2).astype(np.uint64)
    boundaries = rng.uniform(0, 0.3, size=gt.shape).astype(np.float32)
    boundaries[:, :, 7:9] = rng.uniform(0.6, 1.0, size=(8, 16, 2))
    return boundaries, fragments, gt


def test_a_classifier_carries_its_threshold_and_older_files_load_without_one(tmp_path, toy_boundaries):
    import dataclasses
    import json

    from neuropil.segment.learned import MergeClassifier, train

    model = train(*toy_boundaries, epochs=1, n_estimators=4)
    assert model.merge_threshold is None
    dataclasses.replace(model, merge_threshold=0.65).save(tmp_path / "with.npz")
    assert MergeClassifier.load(tmp_path / "with.npz").merge_threshold == 0.65
    model.save(tmp_path / "without.npz")  # as written before thresholds were stored
    with np.load(tmp_path / "without.npz") as stored:
        assert "merge_threshold" not in json.loads(str(stored["metadata"]))
    assert MergeClassifier.load(tmp_path / "without.npz").merge_threshold is None
    with np.load(tmp_path / "with.npz") as stored:
        arrays = dict(stored)
    metadata = json.loads(str(arrays.pop("metadata")))
    np.savez(tmp_path / "bad.npz", metadata=np.array(json.dumps({**metadata, "merge_threshold": 3})), **arrays)
    with pytest.raises(NeuropilError, match="merge threshold"):
        MergeClassifier.load(tmp_path / "bad.npz")


def test_agglomeration_train_stores_the_threshold_of_lowest_training_voi_and_segment_uses_it(
    tmp_path, caplog, toy_boundaries
):
    from neuropil.cli import main
    from neuropil.evaluate import evaluate
    from neuropil.io import read_volume, write_volume
    from neuropil.segment import agglomerate
    from neuropil.segment.learned import MergeClassifier

    boundaries, fragments, gt = toy_boundaries
    for name, array in (("boundaries", boundaries), ("fragments", fragments), ("gt", gt)):
        write_volume(f"{tmp_path}/v.h5:{name}", array, voxel_size=VOXEL)
    model_path = tmp_path / "model.npz"
    arguments = ["--fragments", f"{tmp_path}/v.h5:fragments", "--gt", f"{tmp_path}/v.h5:gt", "--trees", "4"]
    caplog.set_level(logging.INFO)
    assert (
        main(
            [
                "agglomeration",
                "train",
                "--boundaries",
                f"{tmp_path}/v.h5:boundaries",
                *arguments,
                "--epochs",
                "1",
                "--out",
                str(model_path),
            ]
        )
        == 0
    )
    model = MergeClassifier.load(model_path)
    # independently: the first threshold of lowest VOI on the training volume
    segmented = agglomerate(boundaries, fragments, method="learned", model=model, thresholds=THRESHOLD_GRID)
    vois = [evaluate(s, gt).voi for s in segmented]
    assert model.merge_threshold == THRESHOLD_GRID[int(np.argmin(vois))]
    caplog.clear()
    segment = [
        "segment",
        f"{tmp_path}/v.h5:boundaries",
        "--method",
        "learned",
        "--model",
        str(model_path),
        "--fragments",
        f"{tmp_path}/v.h5:fragments",
    ]
    assert main([*segment, f"{tmp_path}/seg.h5:default"]) == 0
    assert f"merge threshold {model.merge_threshold:g}: the classifier's" in caplog.text
    assert main([*segment, f"{tmp_path}/seg.h5:given", "--threshold", str(model.merge_threshold)]) == 0
    np.testing.assert_array_equal(read_volume(f"{tmp_path}/seg.h5:default"), read_volume(f"{tmp_path}/seg.h5:given"))


def test_kept_rows_drop_later_and_partial_rows_and_pad_older_columns(tmp_path):
    from neuropil.train.trainer import kept_rows

    path = tmp_path / "validation.csv"
    path.write_text("iteration,domain,loss\n4,a,0.5\n8,a,0.4\n12,a,0.3\n16,a,0.")
    assert (
        kept_rows(path, "iteration,domain,loss,threshold", 8) == "iteration,domain,loss,threshold\n4,a,0.5,\n8,a,0.4,\n"
    )
    assert kept_rows(tmp_path / "missing.csv", "iteration,loss", 3) == "iteration,loss\n"


def test_hdf5_attributes_of_other_tools_read_as_plain_values(tmp_path):
    import h5py

    from neuropil.io import open_volume

    with h5py.File(tmp_path / "other.h5", "w") as file:
        dataset = file.create_dataset("raw", data=np.zeros((2, 3, 3), np.uint8))
        dataset.attrs["resolution"] = np.array([40.0, 4.0, 4.0])
        dataset.attrs["name"] = b"cremi"
        dataset.attrs["note"] = "{not json"
        dataset.attrs["empty"] = h5py.Empty("f4")
    with open_volume(f"{tmp_path}/other.h5:raw") as volume:
        assert volume.attributes == {
            "resolution": [40.0, 4.0, 4.0],
            "name": "cremi",
            "note": "{not json",
            "empty": None,
        }


def test_volumes_labelled_in_sections_only_are_scored_within_sections():
    import dataclasses

    from neuropil.evaluate import evaluate, section_ids
    from neuropil.model import UNet3D
    from neuropil.predict import predict_affinities
    from neuropil.segment import segment

    torch.manual_seed(0)
    model = UNet3D(ModelConfig(base_channels=2, depth=2, voxel_size=VOXEL)).eval()
    volume = blob_volume(0)
    # each section numbered on its own, as a serial-section set with 2-D labels is
    sections = np.where(volume.labels > 0, volume.labels + 100 * np.arange(8)[:, None, None], 0).astype(np.uint32)
    flat = dataclasses.replace(volume, labels=sections, in_plane_only=True)
    scored = validate_volume(model, flat, thresholds=(0.3, 0.7)).scores
    affinities = predict_affinities(flat.raw, model, progress=False)
    segmented = segment(affinities, voxel_size=VOXEL, thresholds=(0.3, 0.7)).segmentations
    for s, got in zip(segmented, scored):
        assert got == evaluate(section_ids(s), section_ids(sections))
    as_3d = validate_volume(model, dataclasses.replace(flat, in_plane_only=False), thresholds=(0.3, 0.7)).scores
    # segments crossing sections (at 0.7) are merges of 3-D "objects" the labels never meant
    assert as_3d[1].voi_merge > scored[1].voi_merge + 1
