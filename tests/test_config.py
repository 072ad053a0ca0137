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
    assert validation[0].startswith("iteration,domain,loss,") and [line.split(",")[1] for line in validation[1:]] == [
        "isbi2012"
    ]


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

    def interrupted(self, batch=None):
        if self.iteration == 3:
            raise KeyboardInterrupt
        return step(self, batch)

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


# ----------------------------------------------------------------------------- every configuration


def shipped(name: str) -> Path:
    from neuropil.config import CONFIG_FOLDER

    return CONFIG_FOLDER / f"{name}.yaml"


def differences(a, b, prefix="") -> set[str]:
    """The dotted keys where two nested mappings differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {d for key in {*a, *b} for d in differences(a.get(key), b.get(key), f"{prefix}{key}.")}
    return set() if a == b else {prefix.rstrip(".")}


def test_run_config_defaults_to_the_method_voxel_size():
    from neuropil.conventions import METHOD_VOXEL_SIZE

    config = parse_config({"domains": {"a": {"synthetic": "fib-like"}}})
    assert config.target_voxel_size == METHOD_VOXEL_SIZE == config.model.voxel_size


def test_shipped_configs_load_and_differ_only_where_meant(tmp_path):
    from neuropil.config import DemoConfig

    demo, quick = DemoConfig.load(shipped("demo")), DemoConfig.load(shipped("demo-quick"))
    for config in (demo, quick):
        assert config.training.target_voxel_size == tuple(TARGET)
        assert type(config).load(config.save(tmp_path / "saved.yaml")) == config
        divisor = UNet3D(config.training.model).divisor
        assert all(p % d == 0 for p, d in zip(config.training.train.patch_shape, divisor))
    # quick: a smaller model, shorter training, one smaller volume per domain, fewer thresholds
    domains = [
        f"training.domains.{name}.{key}" for name in demo.training.domains for key in ("shape", "seeds", "volumes")
    ]
    assert differences(demo.model_dump(), quick.model_dump()) == {
        "training.model.depth",
        "training.train.iterations",
        "training.train.patch_shape",
        "training.train.learning_rate",
        *domains,
        "test_shape",
        "segment.thresholds",
    }
    assert quick.training.domains["cremi-like"].seeds == (demo.training.domains["cremi-like"].seeds or ())[:1]


def test_synthetic_all_is_the_demo_training_run():
    from neuropil.config import DemoConfig

    assert load_config(CONFIGS / "synthetic-all.yaml") == DemoConfig.load(shipped("demo")).training


def test_explicit_seeds_draw_those_volumes():
    from neuropil.data.synth import synthetic_volume

    config = parse_config(
        tiny(
            domains={"fly": {"synthetic": "cremi-like", "shape": [6, 24, 24], "seeds": [4, 9], "validation_seeds": [7]}}
        )
    )
    domain = config.domains["fly"]
    assert (domain.volumes, domain.validation_volumes) == (2, 1)
    training, validation = build_domains(config)
    for volume, seed in zip([*training["fly"], *validation["fly"]], [4, 9, 7]):
        expected = synthetic_volume("cremi-like", shape=(6, 24, 24), target_voxel_size=tuple(TARGET), seed=seed)
        np.testing.assert_array_equal(volume.raw, expected.raw)
        np.testing.assert_array_equal(volume.labels, expected.labels)
    # the default seeds, seed * 1000 + i and seed * 1000 + 500 + j
    default = parse_config(tiny()).domains["fly"]
    assert (default.training_seeds(), default.held_out_seeds()) == ((3000,), (3500,))


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ({"seeds": [1, 2], "volumes": 3}, "'domains.x': 'volumes' is 3 but 'seeds' lists 2"),
        (
            {"validation_seeds": [5], "validation_volumes": 2},
            "'validation_volumes' is 2 but 'validation_seeds' lists 1",
        ),
        ({"seeds": [1, 5], "validation_seeds": [5]}, "'domains.x': a seed draws the same volume twice"),
        ({"seeds": []}, "'domains.x.seeds'"),
    ],
)
def test_bad_seeds_are_one_line_errors(domain, message):
    with pytest.raises(NeuropilError, match=message) as error:
        parse_config(tiny(domains={"x": {"synthetic": "fib-like", **domain}}), where="x.yaml")
    assert "\n" not in str(error.value)


def non_array_options(function, *array_inputs: str) -> dict:
    """A stage function's keyword options and defaults, its inputs (arrays, models, paths) left out."""
    import inspect

    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in array_inputs
    }


def test_segment_config_mirrors_the_segment_pipeline():
    from neuropil.config import SegmentConfig
    from neuropil.segment import segment

    # the offsets describe the input's channels (stored with the affinities), like its voxel size
    options = non_array_options(segment, "voxel_size", "fragment_ids", "model", "image", "mask", "offsets")
    assert list(SegmentConfig.model_fields) == list(options)
    assert SegmentConfig().model_dump() == {**options, "thresholds": tuple(options["thresholds"])}


def test_predict_config_mirrors_predict_file_and_blockwise_prediction():
    from neuropil.blockwise import predict_blockwise
    from neuropil.config import PredictConfig
    from neuropil.predict import predict_file

    options = non_array_options(predict_file, "voxel_size", "progress")
    assert [*options, "block_shape"] == list(PredictConfig.model_fields)
    defaults = PredictConfig().model_dump()
    assert {name: defaults[name] for name in options} == options
    assert defaults["block_shape"] == tuple(non_array_options(predict_blockwise)["block_shape"])


def test_stage_configs_load_and_reject_bad_keys(tmp_path):
    from neuropil.config import PredictConfig, SegmentConfig

    segment_config = SegmentConfig.load(
        write_yaml(tmp_path / "segment.yaml", {"method": "quantile", "thresholds": [0.2, 0.4], "quantile": 75})
    )
    assert segment_config.thresholds == (0.2, 0.4) and segment_config.flood_threshold is None
    assert SegmentConfig.load(segment_config.save(tmp_path / "saved.yaml")) == segment_config
    predict_config = PredictConfig.parse({"tile_shape": None, "device": "cpu"})
    assert predict_config.tile_shape is None and predict_config.block_shape == (64, 256, 256)
    cases = [
        (SegmentConfig, {"method": "magic"}, "bad value for 'method': unknown agglomeration method 'magic'"),
        (SegmentConfig, {"thresholds": []}, "bad value for 'thresholds'"),
        (SegmentConfig, {"thresholds": [0.5, -1]}, "bad value for 'thresholds.1'"),
        (SegmentConfig, {"quantile": 101}, "bad value for 'quantile'"),
        (SegmentConfig, {"flood_threshold": 1}, "bad value for 'flood_threshold'"),
        (SegmentConfig, {"min_size": -1}, "bad value for 'min_size'"),
        (SegmentConfig, {"threshold": 0.5}, "unknown key 'threshold'"),
        (PredictConfig, {"tile_shape": [8, 0, 8]}, "bad value for 'tile_shape'"),
        (PredictConfig, {"block_shape": [8, 8]}, "bad value for 'block_shape'"),
        (PredictConfig, {"halo": [1, 1, 1]}, "unknown key 'halo'"),
    ]
    for kind, content, message in cases:
        path = write_yaml(tmp_path / "bad.yaml", content)
        with pytest.raises(NeuropilError, match=message) as error:
            kind.load(path)
        assert "\n" not in str(error.value) and str(path) in str(error.value)
    with pytest.raises(NeuropilError, match="a segmentation configuration is a mapping"):
        SegmentConfig.parse([0.5])


def experiment(**changes) -> dict:
    """A demo configuration: the tiny run plus test volumes and a segmentation."""
    training = tiny()
    training["domains"] = {
        "fly": {"synthetic": "cremi-like", "shape": [6, 24, 24], "seeds": [1], "validation_seeds": [2]}
    }
    config = {
        "training": training,
        "unseen": ["cryo-ecs"],
        "test_shape": [6, 24, 24],
        "test_seeds": {"fly": 9, "cryo-ecs": 9},
        "segment": {"thresholds": [0.3, 0.6]},
    }
    config.update(changes)
    return config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"test_seeds": {"fly": 9}},
            "bad value for 'test_seeds': needs one seed per domain .* missing \\['cryo-ecs'\\]",
        ),
        ({"test_seeds": {"fly": 1, "cryo-ecs": 9}}, "'test_seeds': seed 1 of 'fly' also draws"),
        ({"unseen": ["mars-like"]}, "bad value for 'unseen': unknown synthetic presets"),
        ({"unseen": ["cremi-like"]}, "bad value for 'unseen': \\['cremi-like'\\] are training domains"),
        ({"unseen": ["cryo-ecs", "cryo-ecs"]}, "bad value for 'unseen': an unseen domain is listed twice"),
        ({"unseen": []}, "bad value for 'unseen'"),
        ({"segment": {"method": "learned"}}, "bad value for 'segment': the learned method needs"),
        ({"test_shape": [6, 24]}, "bad value for 'test_shape'"),
        ({"thresholds": [0.5]}, "unknown key 'thresholds'"),
        (
            {"training": {**tiny(), "domains": {"x": {"dataset": "fib-gala"}}}},
            "'training': domain 'x' is not synthetic",
        ),
        ({"training": {**tiny(), "model": {"depth": 0}}}, "bad value for 'training.model.depth'"),
        (
            {"training": {**tiny(), "domains": {"x": {"synthetic": "mars-like"}}}},
            "'training.domains.x.synthetic': unknown synthetic preset",
        ),
    ],
)
def test_bad_experiment_config_is_one_line_naming_the_key(tmp_path, change, message):
    from neuropil.config import DemoConfig

    path = write_yaml(tmp_path / "bad.yaml", experiment(**change))
    with pytest.raises(NeuropilError, match=message) as error:
        DemoConfig.load(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_reseeded_experiment_moves_every_seed():
    from neuropil.config import DemoConfig

    config = DemoConfig.parse(experiment())
    assert config.reseeded(0) is config
    moved = config.reseeded(2)
    assert moved.training.train.seed == 2
    assert moved.training.domains["fly"].training_seeds() == (2001,)
    assert moved.training.domains["fly"].held_out_seeds() == (2002,)
    assert moved.test_seeds == {"fly": 2009, "cryo-ecs": 2009}
    # a domain with the default seeds moves the same way: seed * 1000 + i
    default = DemoConfig.parse(experiment(training=tiny(), test_seeds={"fly": 9, "cryo-ecs": 9})).reseeded(1)
    assert default.training.domains["fly"].training_seeds() == (4000,)
