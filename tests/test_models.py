"""Shipped pretrained models: exported without training state, listed with their licences, used by name."""

import json

import numpy as np
import pytest
import torch

import blobs
from neuropil import checkpoint as checkpoints
from neuropil.checkpoint import export_model, load_checkpoint, load_model, shipped_models
from neuropil.cli import main
from neuropil.data.catalog import get_dataset
from neuropil.io import read_volume, write_volume
from neuropil.model import ModelConfig
from neuropil.predict import predict_affinities
from neuropil.pretrained import describe
from neuropil.train import TrainConfig, Trainer

VOXEL = blobs.VOXEL


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny calibrated run whose configuration names a synthetic domain and a non-commercial catalog set."""
    out = tmp_path_factory.mktemp("run")
    volume = blobs.blob_volume(0, shape=(8, 32, 32), cells=8)
    run_config = {
        "domains": {"blobs": {"synthetic": "cremi-like"}, "isbi2012": {"dataset": "isbi2012"}},
        "train": {
            "augment": {"flip": {"probability": 0.5}, "open_gaps": {"probability": 0.2}},
            "patch_shape": [8, 16, 16],
        },
    }
    trainer = Trainer(
        {"blobs": [volume]},
        out_dir=out,
        model_config=ModelConfig(base_channels=4, depth=2, voxel_size=VOXEL),
        train_config=TrainConfig(iterations=4, patch_shape=(8, 16, 16), checkpoint_every=4, augment=False),
        validation={"blobs": [blobs.blob_volume(1, shape=(8, 32, 32), cells=8)]},
        run_config=run_config,
    )
    trainer.train(progress=False)
    return out / "checkpoint.pt", volume


def test_an_exported_model_drops_the_training_state_and_predicts_as_the_checkpoint(run, tmp_path):
    path, volume = run
    exported = export_model(path, tmp_path / "small.pt", description="for tests")
    state, original = load_checkpoint(exported), load_checkpoint(path)
    assert "optimizer_state" not in state and "random_states" not in state
    assert all(t.dtype == torch.float16 for t in state["model_state"].values() if t.is_floating_point())
    assert state["merge_threshold"] == original["merge_threshold"] is not None
    assert state["run_config"] == original["run_config"] and state["description"] == "for tests"
    assert exported.stat().st_size < path.stat().st_size / 2
    model = load_model(exported)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ours = predict_affinities(volume.raw, model, progress=False)
    theirs = predict_affinities(volume.raw, load_model(path), progress=False)
    assert np.abs(ours - theirs).max() < 1e-2


def test_a_shipped_name_works_where_a_checkpoint_path_does(run, tmp_path, monkeypatch, capsys):
    path, volume = run
    shipped = tmp_path / "models"
    shipped.mkdir()
    monkeypatch.setattr(checkpoints, "SHIPPED", shipped)
    assert main(["models", "export", str(path), str(shipped / "tiny-blobs.pt"), "--description", "blobs"]) == 0
    assert shipped_models() == {"tiny-blobs": shipped / "tiny-blobs.pt"}
    write_volume(tmp_path / "raw.h5:raw", volume.raw, voxel_size=VOXEL)
    assert (
        main(["predict", "tiny-blobs", f"{tmp_path / 'raw.h5'}:raw", f"{tmp_path / 'a.h5'}:affs", "--no-progress"]) == 0
    )
    by_path = predict_affinities(volume.raw, load_model(shipped / "tiny-blobs.pt"), progress=False)
    np.testing.assert_array_equal(read_volume(f"{tmp_path / 'a.h5'}:affs"), by_path)
    capsys.readouterr()
    assert main(["predict", "no-such-model", f"{tmp_path / 'raw.h5'}:raw", f"{tmp_path / 'b.h5'}:affs"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "no-such-model" in error and "tiny-blobs" in error


def test_models_lists_voxel_size_calibration_recipe_and_the_licences_of_the_training_data(
    run, tmp_path, monkeypatch, capsys
):
    path, _ = run
    monkeypatch.setattr(checkpoints, "SHIPPED", tmp_path)
    export_model(path, tmp_path / "tiny-blobs.pt", description="blobs")
    assert main(["models", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)["tiny-blobs"]
    assert facts["voxel_size"] == list(VOXEL) and facts["channels"] == 3 and facts["iterations"] == 4
    assert facts["merge_threshold"] == load_checkpoint(path)["merge_threshold"]
    licences = {item["domain"]: item["licence"] for item in facts["training_data"]}
    assert "non-commercial" in licences["isbi2012"] and "synthetic" in licences["blobs"]
    assert facts["non_commercial"] is True
    assert "EM augmentation (1 kinds)" in facts["recipe"] and "open_gaps" in facts["recipe"]
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "tiny-blobs: 20x10x10 nm, 3 channels, 4 iterations" in text and "non-commercial use only" in text


def test_every_shipped_model_loads_is_small_and_says_what_it_was_trained_on():
    models = shipped_models()
    assert models, "the package ships at least one pretrained model"
    for name, path in models.items():
        assert path.stat().st_size < 8 * 2**20, name
        facts = describe(name)
        assert facts["merge_threshold"] is not None and facts["iterations"] > 0 and facts["training_data"]
        assert facts["description"]
        load_model(name)


GENERALIST = "generalist-25x13x13"
FIB_GALA = get_dataset("fib-gala").base_folder()


@pytest.mark.slow
@pytest.mark.skipif(not FIB_GALA.exists(), reason=f"fib-gala (real FIB-SEM) is not in {FIB_GALA}")
def test_the_generalist_segments_a_held_out_real_fib_sem_volume_with_the_threshold_it_carries():
    from neuropil.data.resample import labels_on_grid, resample
    from neuropil.evaluate import evaluate
    from neuropil.io import read_volume
    from neuropil.segment import segment

    assert GENERALIST in shipped_models()
    model, facts = load_model(GENERALIST), describe(GENERALIST)
    assert facts["non_commercial"]  # trained on isbi2012 and vnc-gerhard2013 too
    raw = read_volume(f"{FIB_GALA / 'test-image.h5'}:stack")
    truth = read_volume(f"{FIB_GALA / 'test-gt.lzf.h5'}:stack")
    size = tuple(facts["voxel_size"])
    image = resample(raw, voxel_size=(10, 10, 10), target_voxel_size=size, kind="image")
    affinities = predict_affinities(image, model, tile_shape=None, progress=False)
    segmented = segment(affinities, voxel_size=size, thresholds=(facts["merge_threshold"],)).segmentations[0]
    scores = evaluate(
        labels_on_grid(segmented, voxel_size=size, target_voxel_size=(10, 10, 10), shape=truth.shape), truth
    )
    assert scores.arand <= 0.10, scores
