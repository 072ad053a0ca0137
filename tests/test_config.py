from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from neuropil.checkpoint import load_checkpoint, load_model, save_checkpoint
from neuropil.cli import main
from neuropil.config import (
    DatasetDomain,
    SyntheticDomain,
    build_domains,
    load_config,
    parse_config,
    save_config,
)
from neuropil.data.resample import resample
from neuropil.errors import NeuropilError
from neuropil.io import open_volume, read_volume, write_volume
from neuropil.model import ModelConfig, UNet3D
from neuropil.predict import predict_affinities

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TARGET = [25.0, 13.0, 13.0]


def tiny(**changes) -> dict:
    """A run that trains in about a second: one small synthetic domain, a 2-level, 2-channel U-Net."""
    config = {
        "target_voxel_size": TARGET,
        "model": {"base_channels": 2, "depth": 2},
        "train": {"iterations": 4, "patch_shape": [4, 16, 16], "checkpoint_every": 2, "augment": False},
        "domains": {"fly": {"synthetic": "cremi-like", "volumes": 1, "shape": [6, 24, 24], "seed": 3}},
    }
    config.update(changes)
    return config


def write_yaml(path: Path, content) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def test_config_fills_the_model_voxel_size_and_reads_back_equal(tmp_path):
    config = parse_config(tiny())
    assert config.model.voxel_size == tuple(TARGET)
    assert config.validation_width == 150
    assert isinstance(config.domains["fly"], SyntheticDomain)
    assert config.weights is None
    assert load_config(save_config(config, tmp_path / "run.yaml")) == config


def test_domain_weights_feed_the_sampler():
    config = parse_config(
        tiny(
            domains={
                "a": {"synthetic": "cremi-like", "weight": 3},
                "b": {"synthetic": "fib-like"},
            }
        )
    )
    assert config.weights == {"a": 3.0, "b": 1.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"learning_rate": 1}, "unknown key 'learning_rate'"),
        ({"model": {"depth": 0}}, "bad value for 'model.depth'"),
        ({"model": {"voxel_size": [40, 4, 4]}}, "model.voxel_size .* differs from target_voxel_size"),
        ({"train": {"iterations": "many"}}, "bad value for 'train.iterations'"),
        ({"train": {"weights": {"fly": 1}}}, "weight"),
        ({"target_voxel_size": [25, 13]}, "bad value for 'target_voxel_size'"),
        ({"target_voxel_size": [25, 0, 13]}, "target_voxel_size.*positive"),
        ({"validation_width": -1}, "bad value for 'validation_width'"),
        ({"domains": {}}, "bad value for 'domains'"),
        ({"domains": {"x": {"synthetic": "mars-like"}}}, "'domains.x.synthetic': unknown synthetic preset 'mars-like'"),
        ({"domains": {"x": {"synthetic": "fib-like", "shape": [8, 0, 8]}}}, "'domains.x.shape'"),
        ({"domains": {"x": {"synthetic": "fib-like", "colour": 1}}}, "unknown key 'domains.x.colour'"),
        ({"domains": {"x": {"dataset": "no-such-set"}}}, "'domains.x.dataset': unknown dataset 'no-such-set'"),
        ({"domains": {"x": {"dataset": "fib-gala", "synthetic": "fib-like"}}}, "'domains.x'.*exactly one of"),
        ({"domains": {"x": {"volumes": 2}}}, "'domains.x'.*exactly one of"),
        ({"domains": {"x": {"dataset": "fib-gala", "weight": -1}}}, "'domains.x.weight'"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, change, message):
    path = write_yaml(tmp_path / "bad.yaml", tiny(**change))
    with pytest.raises(NeuropilError, match=message) as error:
        load_config(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_unreadable_config_files(tmp_path):
    with pytest.raises(NeuropilError, match="no such configuration file"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("domains: [unclosed\n")
    with pytest.raises(NeuropilError, match="cannot read configuration") as error:
        load_config(broken)
    assert "\n" not in str(error.value)
    listed = write_yaml(tmp_path / "list.yaml", [1, 2])
    with pytest.raises(NeuropilError, match="mapping"):
        load_config(listed)


def test_example_configs_are_valid():
    synthetic = load_config(CONFIGS / "synthetic-all.yaml")
    assert set(synthetic.domains) == {"cremi-like", "snemi-like", "fib-like"}
    mixed = load_config(CONFIGS / "real-and-synthetic.yaml")
    kinds = {name: type(domain) for name, domain in mixed.domains.items()}
    assert kinds == {
        "fib-gala": DatasetDomain,
        "isbi2012": DatasetDomain,
        "vnc-gerhard2013": DatasetDomain,
        "cryo-ecs": SyntheticDomain,
    }
    for config in (synthetic, mixed):
        divisor = UNet3D(config.model).divisor
        assert all(p % d == 0 for p, d in zip(config.train.patch_shape, divisor))


def test_synthetic_domains_hold_disjoint_validation_volumes():
    config = parse_config(
        tiny(domains={"fly": {"synthetic": "cremi-like", "volumes": 2, "shape": [6, 24, 24], "validation_volumes": 1}})
    )
    training, validation = build_domains(config)
    volumes = training["fly"] + validation["fly"]
    assert [v.raw.shape for v in volumes] == [(6, 24, 24)] * 3
    assert all(v.voxel_size == tuple(TARGET) for v in volumes)
    assert len({v.raw.tobytes() for v in volumes}) == 3


def test_dataset_band_width_domain_over_entry_over_run(shared_data):
    # fib-gala: 200 x voxels at 10 nm are 154 at 13 nm; its catalog entry sets a 50-voxel band.
    def widths(domain, **run):
        config = parse_config(tiny(domains={"fib": domain}, **run))
        training, validation = build_domains(config)
        return training["fib"][0].raw.shape[2], validation["fib"][0].raw.shape[2]

    assert widths({"dataset": "fib-gala"}) == (104, 50)
    assert widths({"dataset": "fib-gala"}, validation_width=20) == (104, 50)
    assert widths({"dataset": "fib-gala", "validation_width": 30}) == (124, 30)


def test_real_and_synthetic_domains_train_together(shared_data, tmp_path):
    config = tiny(
        domains={
            "isbi2012": {"dataset": "isbi2012"},
            "fly": {"synthetic": "cremi-like", "volumes": 1, "shape": [6, 24, 24], "validation_volumes": 0},
        },
        train={"iterations": 2, "patch_shape": [4, 16, 16], "checkpoint_every": 2, "augment": False},
    )
    path = write_yaml(tmp_path / "mixed.yaml", config)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    validation = (tmp_path / "run" / "validation.csv").read_text().splitlines()
    assert validation[0] == "iteration,domain,loss" and [line.split(",")[1] for line in validation[1:]] == ["isbi2012"]


def test_train_command_trains_saves_config_and_resumes(tmp_path):
    config_path = write_yaml(tmp_path / "tiny.yaml", tiny())
    out = tmp_path / "run"
    assert main(["train", str(config_path), "--out", str(out), "--no-progress"]) == 0
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["iteration"] == 4
    assert load_config(out / "config.yaml") == load_config(config_path)
    assert state["run_config"] == load_config(config_path).model_dump(mode="json")
    validation = (out / "validation.csv").read_text().splitlines()
    assert [line.split(",")[:2] for line in validation[1:]] == [["2", "fly"], ["4", "fly"]]
    assert all(np.isfinite(float(line.split(",")[2])) for line in validation[1:])
    first = load_model(out / "checkpoint.pt").state_dict()

    # More iterations in the same folder continue from the checkpoint, not from scratch.
    write_yaml(config_path, tiny(train={**tiny()["train"], "iterations": 6}))
    assert main(["train", str(config_path), "--out", str(out), "--no-progress"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["iteration"] == 6
    assert [line.split(",")[0] for line in (out / "log.csv").read_text().splitlines()] == [
        "iteration",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
    ]
    second = load_model(out / "checkpoint.pt").state_dict()
    assert any(not torch.equal(first[k], second[k]) for k in first)

    # A different model cannot continue this run.
    write_yaml(config_path, tiny(model={"base_channels": 3, "depth": 2}))
    assert main(["train", str(config_path), "--out", str(out), "--no-progress"]) == 2


def test_train_command_bad_config_exits_2(tmp_path, capsys):
    path = write_yaml(tmp_path / "bad.yaml", tiny(domains={"x": {"synthetic": "mars-like"}}))
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("neuropil: error:") and "domains.x.synthetic" in error and "\n" not in error
    assert not (tmp_path / "run").exists()
    assert main(["train", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "run")]) == 2


# ----------------------------------------------------------------------------- predict


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    model = UNet3D(ModelConfig(base_channels=2, depth=2, voxel_size=(25.0, 13.0, 13.0)))
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model_config": model.config.model_dump(mode="json"), "model_state": model.state_dict()})
    return path


def test_predict_rescales_to_the_model_voxel_size(tmp_path, checkpoint):
    raw = np.random.default_rng(0).integers(0, 256, size=(10, 40, 36), dtype=np.uint8)
    write_volume(tmp_path / "raw.h5:raw", raw, voxel_size=(50.0, 6.5, 6.5))
    out = f"{tmp_path / 'affs.zarr'}/affinities"
    assert (
        main(
            ["predict", str(checkpoint), f"{tmp_path / 'raw.h5'}:raw", out, "--tile", "8", "16", "16", "--no-progress"]
        )
        == 0
    )
    with open_volume(out) as volume:
        assert volume.dtype == np.float32 and volume.voxel_size == (25.0, 13.0, 13.0)
        affinities = volume.read()
    assert affinities.shape == (3, 20, 20, 18)
    rescaled = resample(raw, voxel_size=(50.0, 6.5, 6.5), target_voxel_size=(25.0, 13.0, 13.0), kind="image")
    expected = predict_affinities(rescaled, load_model(checkpoint), tile_shape=(8, 16, 16), progress=False)
    np.testing.assert_allclose(affinities, expected, atol=1e-5)


def test_predict_at_the_model_voxel_size_is_plain_prediction(tmp_path, checkpoint):
    raw = np.random.default_rng(1).integers(0, 256, size=(6, 20, 20), dtype=np.uint8)
    write_volume(tmp_path / "raw.tif", raw)
    out = tmp_path / "affs.h5"
    # A TIFF stores no voxel size: it must be given.
    assert main(["predict", str(checkpoint), str(tmp_path / "raw.tif"), f"{out}:affs", "--no-progress"]) == 2
    assert not out.exists()
    assert (
        main(
            [
                "predict",
                str(checkpoint),
                str(tmp_path / "raw.tif"),
                f"{out}:affs",
                "--voxel-size",
                "25",
                "13",
                "13",
                "--no-progress",
            ]
        )
        == 0
    )
    expected = predict_affinities(raw, load_model(checkpoint), progress=False)
    np.testing.assert_array_equal(read_volume(f"{out}:affs"), expected)
    assert not list(tmp_path.glob("*.partial"))


def test_predict_bad_input_exits_2(tmp_path, checkpoint, capsys):
    raw = np.zeros((4, 8, 8), np.uint8)
    write_volume(tmp_path / "raw.h5:raw", raw, voxel_size=(25.0, 13.0, 13.0))
    address = f"{tmp_path / 'raw.h5'}:raw"
    out = f"{tmp_path / 'affs.h5'}:affs"
    cases = [
        [str(tmp_path / "missing.pt"), address, out],
        [str(checkpoint), f"{tmp_path / 'raw.h5'}:nothing", out],
        [str(checkpoint), address, out, "--voxel-size", "30", "13", "13"],
        [str(checkpoint), address, out, "--tile", "0", "16", "16"],
    ]
    for arguments in cases:
        assert main(["predict", *arguments, "--no-progress"]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("neuropil: error:") and "\n" not in error
    assert not (tmp_path / "affs.h5").exists()


def test_predict_takes_the_voxel_size_from_the_catalog(shared_data, tmp_path, checkpoint):
    # fib-gala's HDF5 files store no voxel size; the catalog says 10 nm: 50x100x200 -> 20x77x154 at 25x13x13.
    out = f"{tmp_path / 'affs.h5'}:affs"
    assert main(["predict", str(checkpoint), "fib-gala/test", out, "--no-progress"]) == 0
    with open_volume(out) as volume:
        assert volume.shape == (3, 20, 77, 154) and volume.voxel_size == (25.0, 13.0, 13.0)
    assert (
        main(["predict", str(checkpoint), "fib-gala/test", out, "--voxel-size", "10", "4", "4", "--no-progress"]) == 2
    )


def test_centre_crop_keeps_the_middle_of_large_validation_volumes():
    from neuropil.data.volumes import TrainingVolume
    from neuropil.train.trainer import centre_crop

    labels = np.arange(6 * 10 * 7, dtype=np.uint64).reshape(6, 10, 7)
    volume = TrainingVolume(
        raw=labels.astype(np.uint8),
        labels=labels,
        voxel_size=(25.0, 13.0, 13.0),
        known=labels % 2 == 0,
        in_plane_only=True,
    )
    crop = centre_crop(volume, (4, 4, 8))
    np.testing.assert_array_equal(crop.labels, labels[1:5, 3:7, :])
    np.testing.assert_array_equal(crop.known, labels[1:5, 3:7, :] % 2 == 0)
    assert crop.in_plane_only and crop.voxel_size == volume.voxel_size
    assert centre_crop(volume, None) is volume and centre_crop(volume, (6, 10, 7)) is volume


def test_interrupted_training_saves_and_resumes(tmp_path, monkeypatch):
    from neuropil.train import Trainer

    step = Trainer.step

    def interrupted(self):
        if self.iteration == 3:
            raise KeyboardInterrupt
        return step(self)

    config_path = write_yaml(tmp_path / "tiny.yaml", tiny(train={**tiny()["train"], "checkpoint_every": 100}))
    monkeypatch.setattr(Trainer, "step", interrupted)
    assert main(["train", str(config_path), "--out", str(tmp_path / "run"), "--no-progress"]) == 130
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 3
    monkeypatch.setattr(Trainer, "step", step)
    assert main(["train", str(config_path), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["iteration"] == 4


def test_non_positive_voxel_size_is_a_one_line_error():
    from neuropil.config import parse_config

    with pytest.raises(NeuropilError, match="'target_voxel_size': voxel sizes must be positive"):
        parse_config({"target_voxel_size": [0, 13, 13], "domains": {"a": {"synthetic": "fib-like"}}}, where="x.yaml")
