import re

import numpy as np
import pytest
import torch

import blobs
from neuropil.checkpoint import load_model
from neuropil.data.sampling import MultiDomainSampler
from neuropil.data.volumes import TrainingVolume
from neuropil.errors import NeuropilError
from neuropil.model import ModelConfig, UNet3D, downsample_factors_for
from neuropil.train import TrainConfig, Trainer
from neuropil.train.loss import masked_bce_loss
from processes import processes_with

VOXEL = blobs.VOXEL


def blob_volume(seed: int, shape=(16, 48, 48)) -> TrainingVolume:
    """Cells around random seeds, separated by dark one-voxel boundaries."""
    return blobs.blob_volume(seed, shape=shape, cells=12)


def small_configs(iterations=30, patch_shape=(8, 32, 32)):
    model_config = ModelConfig(base_channels=4, depth=3, voxel_size=VOXEL)
    train_config = TrainConfig(iterations=iterations, patch_shape=patch_shape, checkpoint_every=10, learning_rate=3e-3)
    return model_config, train_config


def test_downsample_factors_pool_fine_axes_first():
    assert downsample_factors_for((40, 4, 4), 4) == [(1, 2, 2), (1, 2, 2), (1, 2, 2)]
    assert downsample_factors_for((10, 10, 10), 3) == [(2, 2, 2), (2, 2, 2)]
    assert downsample_factors_for((25, 13, 13), 4) == [(1, 2, 2), (2, 2, 2), (2, 2, 2)]


def test_sampler_picks_domains_uniformly_then_volumes():
    domains = {"a": [blob_volume(0)], "b": [blob_volume(1), blob_volume(2), blob_volume(3)]}
    sampler = MultiDomainSampler(domains, patch_shape=(8, 16, 16), seed=0)
    draws = [sampler.sample() for _ in range(2000)]
    share_a = np.mean([d.domain == "a" for d in draws])
    assert share_a == pytest.approx(0.5, abs=0.04)
    volumes_b = np.bincount([d.volume for d in draws if d.domain == "b"], minlength=3) / (2000 * (1 - share_a))
    np.testing.assert_allclose(volumes_b, 1 / 3, atol=0.05)
    assert all(d.raw.shape == (8, 16, 16) and 0 <= d.raw.min() and d.raw.max() <= 1 for d in draws[:20])


def test_sampler_weights_and_bad_input():
    domains = {"a": [blob_volume(0)], "b": [blob_volume(1)]}
    sampler = MultiDomainSampler(domains, patch_shape=(8, 16, 16), weights={"a": 1.0, "b": 0.0}, seed=0)
    assert {sampler.sample().domain for _ in range(50)} == {"a"}
    with pytest.raises(NeuropilError, match="unknown domains"):
        MultiDomainSampler(domains, patch_shape=(8, 16, 16), weights={"c": 1.0})
    with pytest.raises(NeuropilError, match="smaller than the patch"):
        MultiDomainSampler(domains, patch_shape=(32, 16, 16))


def test_masked_loss_ignores_unknown_affinities():
    logits = torch.tensor([[5.0, -5.0]])
    target = torch.tensor([[1.0, 1.0]])
    known_first = masked_bce_loss(logits, target, torch.tensor([[1.0, 0.0]]), balance=False)
    assert known_first.item() == pytest.approx(np.log1p(np.exp(-5.0)), rel=1e-5)


@pytest.mark.slow
def test_training_lowers_loss_saves_and_resumes(tmp_path):
    domains = {"blobs": [blob_volume(0), blob_volume(1)]}
    # a small patch: 4 x 4 x 4 voxels at the network's bottom (pooling (1, 2, 2), then (2, 2, 2))
    model_config, train_config = small_configs(iterations=120, patch_shape=(8, 16, 16))
    trainer = Trainer(domains, out_dir=tmp_path, model_config=model_config, train_config=train_config)
    losses = [trainer.step() for _ in range(120)]
    assert np.mean(losses[-20:]) < 0.85 * np.mean(losses[:20])
    trainer.save()
    assert (tmp_path / "config.yaml").exists()
    resumed = Trainer(domains, out_dir=tmp_path, model_config=model_config, train_config=train_config)
    assert resumed.iteration == 120
    model = load_model(tmp_path / "checkpoint.pt")
    for name, tensor in trainer.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor)


def test_corrupt_or_foreign_checkpoints_raise(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(NeuropilError, match="not a readable checkpoint"):
        load_model(tmp_path / "bad.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(NeuropilError, match="not a neuropil checkpoint"):
        load_model(tmp_path / "foreign.pt")
    with pytest.raises(NeuropilError, match="no such checkpoint"):
        load_model(tmp_path / "missing.pt")


def test_voxel_size_mismatch_is_refused(tmp_path):
    model_config, train_config = small_configs()
    volume = blob_volume(0)
    other = TrainingVolume(raw=volume.raw, labels=volume.labels, voxel_size=(40.0, 4.0, 4.0))
    with pytest.raises(NeuropilError, match="resample them first"):
        Trainer({"a": [volume], "b": [other]}, out_dir=tmp_path, model_config=model_config, train_config=train_config)


def test_cosine_schedule_decays_to_the_final_fraction(tmp_path):
    model_config, _ = small_configs()
    train_config = TrainConfig(iterations=100, patch_shape=(8, 32, 32), learning_rate=1e-3)
    trainer = Trainer(
        {"blobs": [blob_volume(0)]}, out_dir=tmp_path, model_config=model_config, train_config=train_config
    )
    assert trainer.learning_rate() == pytest.approx(1e-3)
    trainer.iteration = 50
    assert trainer.learning_rate() == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    trainer.iteration = 100
    assert trainer.learning_rate() == pytest.approx(1e-4)


def test_checkpoint_without_normalization_field_loads_a_network_without_normalization(tmp_path):
    network = UNet3D(ModelConfig(base_channels=2, depth=2, normalization="none"))
    saved = network.config.model_dump(mode="json")
    saved.pop("normalization")  # as written before the option existed
    torch.save({"model_config": saved, "model_state": network.state_dict()}, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert loaded.config.normalization == "none"
    x = torch.rand(1, 1, 4, 8, 8)
    torch.testing.assert_close(loaded(x), network.eval()(x))


def test_batch_normalized_network_is_the_default_and_differs_in_train_and_eval():
    torch.manual_seed(0)
    network = UNet3D(ModelConfig(base_channels=2, depth=2))
    assert network.config.normalization == "batch"
    x = torch.rand(2, 1, 4, 8, 8) * 3 + 1
    with torch.no_grad():
        training = network.train()(x)
        evaluation = network.eval()(x)
    assert not torch.allclose(training, evaluation)


RUN_UNTIL_KILLED = """
import sys
import torch
sys.path.insert(0, {tests!r})
from test_train import exact_resume_run
torch.set_num_threads({threads})
exact_resume_run({out!r}, workers=2).train(progress=False)
"""


def exact_resume_run(out_dir, workers: int = 0) -> Trainer:
    """The tiny run of the exact-resume test (augmented, checkpoint every 3 iterations)."""
    model_config = ModelConfig(base_channels=2, depth=2, voxel_size=VOXEL)
    train_config = TrainConfig(
        iterations=16, patch_shape=(8, 16, 16), checkpoint_every=3, learning_rate=3e-3, workers=workers
    )
    volumes = {"a": [blob_volume(0, shape=(8, 32, 32))], "b": [blob_volume(1, shape=(8, 32, 32))]}
    return Trainer(volumes, out_dir=out_dir, model_config=model_config, train_config=train_config)


@pytest.mark.slow
def test_a_run_killed_between_checkpoints_resumes_to_bit_identical_weights(tmp_path):
    """Killed while two worker processes make its batches; resumed and compared without workers."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    killed = tmp_path / "killed"
    script = RUN_UNTIL_KILLED.format(tests=str(Path(__file__).parent), threads=torch.get_num_threads(), out=str(killed))
    token = f"{os.getpid()}-{time.time_ns()}"
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "NEUROPIL_TEST_RUN": token})
    try:
        deadline = time.monotonic() + 120
        while not (killed / "checkpoint.pt").exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10  # the workers see their parent gone and stop
    while processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not processes_with(token)
    stopped_at = torch.load(killed / "checkpoint.pt", weights_only=True)["iteration"]
    assert 3 <= stopped_at < 16  # killed after a checkpoint, before the end
    resumed = exact_resume_run(killed)
    assert resumed.iteration == stopped_at
    resumed.train(progress=False)
    straight = exact_resume_run(tmp_path / "straight")
    straight.train(progress=False)
    weights = straight.model.state_dict()
    for name, tensor in resumed.model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    lines = (killed / "log.csv").read_text().splitlines()
    assert lines[0] == "iteration,loss,learning_rate,time,samples_per_second"
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, 17))
    # the same losses and rates, row by row (times and speeds differ)
    straight_lines = (tmp_path / "straight" / "log.csv").read_text().splitlines()
    assert [line.split(",")[:3] for line in lines] == [line.split(",")[:3] for line in straight_lines]


def test_warmup_ramps_the_rate_linearly_then_follows_the_schedule(tmp_path):
    model_config, _ = small_configs()
    volumes = {"blobs": [blob_volume(0)]}
    for schedule in ("constant", "cosine"):
        plain = TrainConfig(
            iterations=100, patch_shape=(8, 32, 32), learning_rate=1e-3, learning_rate_schedule=schedule
        )
        warm = plain.model_copy(update={"warmup_iterations": 4})
        trainers = [
            Trainer(volumes, out_dir=tmp_path / f"{schedule}{i}", model_config=model_config, train_config=c)
            for i, c in enumerate((plain, warm))
        ]
        for iteration in (0, 1, 3, 4, 50):
            for trainer in trainers:
                trainer.iteration = iteration
            factor = (iteration + 1) / 4 if iteration < 4 else 1.0
            assert trainers[1].learning_rate() == pytest.approx(factor * trainers[0].learning_rate())
    assert trainers[0].learning_rate() == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # no warm-up by default
    with pytest.raises(ValueError, match="warmup_iterations"):
        TrainConfig(warmup_iterations=-1)


def test_a_time_budget_saves_and_stops_and_counts_over_resumes(tmp_path, caplog):
    import datetime
    import logging

    model_config, _ = small_configs()
    volumes = {"blobs": [blob_volume(0)]}
    budgeted = TrainConfig(iterations=50, patch_shape=(8, 16, 16), checkpoint_every=20, max_minutes=1e-6)
    caplog.set_level(logging.WARNING)
    Trainer(volumes, out_dir=tmp_path, model_config=model_config, train_config=budgeted).train(progress=False)
    # the first step spends the budget of 60 microseconds: saved at iteration 1, not 50
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 1
    assert "time budget of 1e-06 minutes spent at iteration 1" in caplog.text
    again = Trainer(volumes, out_dir=tmp_path, model_config=model_config, train_config=budgeted)
    assert again.training_seconds > 60e-6
    again.train(progress=False)
    assert again.iteration == 1  # the budget counts the time before the resume too
    unlimited = budgeted.model_copy(update={"max_minutes": None, "iterations": 3})
    Trainer(volumes, out_dir=tmp_path, model_config=model_config, train_config=unlimited).train(progress=False)
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert lines[0] == "iteration,loss,learning_rate,time,samples_per_second"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(row[0]) for row in rows] == [1, 2, 3]
    times = [datetime.datetime.fromisoformat(row[3]) for row in rows]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)
    assert all(float(row[4]) > 0 for row in rows)
    assert float(rows[0][2]) == pytest.approx(budgeted.learning_rate)  # iteration 0 of the cosine schedule


def test_a_batch_depends_on_the_seed_and_its_index_only_whoever_makes_it(tmp_path):
    from neuropil.train.augment import AugmentConfig
    from neuropil.train.batches import BatchMaker, batches

    domains = {"a": [blob_volume(0)], "b": [blob_volume(1)]}
    options = dict(patch_shape=(8, 16, 16), batch_size=2, offsets=[(-1, 0, 0), (0, -1, 0), (0, 0, -1)])
    maker = BatchMaker(domains, augment_config=AugmentConfig(), seed=3, **options)
    fives = [maker(5), BatchMaker(domains, augment_config=AugmentConfig(), seed=3, **options)(5)]
    for first, second in zip(*fives):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(maker(5).raw, maker(6).raw)
    assert not np.array_equal(maker(5).raw, BatchMaker(domains, augment_config=AugmentConfig(), **options)(5).raw)
    made_here = list(batches(maker, 4, 8))
    from_workers = list(batches(maker, 4, 8, workers=2))
    assert len(from_workers) == 4
    for here, there in zip(made_here, from_workers):
        for a, b in zip(here, there):
            np.testing.assert_array_equal(a, np.asarray(b))


def test_workers_train_the_same_weights_as_the_training_process(tmp_path):
    model_config, train_config = small_configs(iterations=4, patch_shape=(8, 16, 16))
    volumes = {"a": [blob_volume(0)], "b": [blob_volume(1)]}
    weights = []
    for workers in (0, 2):
        config = train_config.model_copy(update={"workers": workers, "validation": False})
        trainer = Trainer(volumes, out_dir=tmp_path / str(workers), model_config=model_config, train_config=config)
        weights.append(trainer.train(progress=False).state_dict())
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    with pytest.raises(ValueError, match="workers"):
        TrainConfig(workers=-1)


def test_tensorboard_gets_the_log_and_validation_curves_and_a_resume_drops_later_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model_config, train_config = small_configs(iterations=6, patch_shape=(8, 16, 16))
    config = train_config.model_copy(update={"tensorboard": True, "checkpoint_every": 3})
    volumes, validation = {"blobs": [blob_volume(0)]}, {"blobs": [blob_volume(1)]}
    options = dict(out_dir=tmp_path, model_config=model_config, validation=validation)
    Trainer(volumes, train_config=config.model_copy(update={"iterations": 3}), **options).train(progress=False)
    Trainer(volumes, train_config=config, **options).train(progress=False)
    board = EventAccumulator(str(tmp_path / "tensorboard"))
    board.Reload()
    assert {"train/loss", "train/learning_rate", "validation/voi", "validation/blobs/arand"} <= set(
        board.Tags()["scalars"]
    )
    assert sorted({event.step for event in board.Scalars("train/loss")}) == list(range(1, 7))
    assert [event.step for event in board.Scalars("validation/voi")] == [3, 6]
    logged = [float(line.split(",")[1]) for line in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    assert [event.value for event in board.Scalars("train/loss")] == pytest.approx(logged, rel=1e-4)


def test_fine_tuning_starts_from_the_given_weights_and_refuses_another_network(tmp_path):
    domains = {"blobs": [blob_volume(0)]}
    model_config, train_config = small_configs(iterations=10, patch_shape=(8, 16, 16))
    first = Trainer(domains, out_dir=tmp_path / "first", model_config=model_config, train_config=train_config)
    for _ in range(10):
        first.step()
    first.save()
    tuned_config = train_config.model_copy(update={"initial_weights": str(tmp_path / "first" / "checkpoint.pt")})
    tuned = Trainer(domains, out_dir=tmp_path / "tuned", model_config=model_config, train_config=tuned_config)
    for name, tensor in first.model.state_dict().items():
        torch.testing.assert_close(tuned.model.state_dict()[name], tensor)
    scratch = Trainer(domains, out_dir=tmp_path / "scratch", model_config=model_config, train_config=train_config)
    assert not torch.equal(scratch.model.down[0][0].weight, tuned.model.down[0][0].weight)
    wider = model_config.model_copy(update={"base_channels": 8})
    with pytest.raises(NeuropilError, match=re.escape("base_channels 4 (the run: 8)")):
        Trainer(domains, out_dir=tmp_path / "wider", model_config=wider, train_config=tuned_config)


def test_a_run_config_that_fine_tunes_takes_the_checkpoints_network():
    from neuropil.config import RunConfig

    config = RunConfig.parse(
        {
            "train": {"initial_weights": "generalist-25x13x13", "iterations": 5},
            "domains": {"blobs": {"synthetic": "fib-like", "shape": [16, 48, 48]}},
        }
    )
    assert config.model.base_channels == 16 and tuple(config.target_voxel_size) == (25.0, 13.0, 13.0)
