"""Validation at the edges: every configuration value with a range, devices, config files, segmentation inputs.

Each bad value is a one-line :class:`~neuropil.errors.NeuropilError` naming its key (or
what is wrong with the input); on the command line it is one line on stderr and exit 2.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from neuropil.cli import main
from neuropil.config import ExperimentConfig, PredictConfig, RunConfig, SegmentConfig, load_config
from neuropil.errors import NeuropilError
from neuropil.io import write_volume
from neuropil.model import available_devices, check_device
from neuropil.segment import fragments, segment
from neuropil.segment.pipeline import check_thresholds

TARGET = [25.0, 13.0, 13.0]
VOXEL_SIZE = (25.0, 13.0, 13.0)
NAN, INF = math.nan, math.inf
CUDA = torch.cuda.is_available()
MPS = torch.backends.mps.is_available()


def run_config(**sections) -> dict:
    """A small valid run configuration; ``sections`` replace or extend its top-level keys."""
    config = {
        "target_voxel_size": TARGET,
        "model": {"base_channels": 2, "depth": 2},
        "train": {"iterations": 4, "patch_shape": [4, 16, 16], "checkpoint_every": 2, "augment": False},
        "domains": {"fly": {"synthetic": "cremi-like", "volumes": 1, "shape": [6, 24, 24], "seed": 3}},
    }
    for key, value in sections.items():
        config[key] = {**config[key], **value} if isinstance(config.get(key), dict) and key != "domains" else value
    return config


def experiment_config(**sections) -> dict:
    """A small valid experiment configuration (a synthetic source and target, no files)."""
    config = {
        "target_voxel_size": TARGET,
        "sources": {"fly": {"synthetic": "cremi-like", "shape": [8, 32, 32]}},
        "targets": {"other": {"synthetic": "snemi-like", "shape": [8, 32, 32]}},
    }
    config.update(sections)
    return config


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


# --------------------------------------------------------------------------- run configuration fields

TRAIN_CASES = [
    ("iterations", -5),
    ("iterations", 0),
    ("checkpoint_every", 0),
    ("checkpoint_every", -1),
    ("batch_size", 0),
    ("patch_shape", [4, 0, 16]),
    ("workers", -1),
    ("warmup_iterations", -1),
    ("validation_shape", [0, 16, 16]),
    ("validation_shape", [8, -1, 16]),
    ("learning_rate", 0),
    ("learning_rate", -1e-3),
    ("learning_rate", NAN),
    ("learning_rate", INF),
    ("final_learning_rate_fraction", -0.1),
    ("final_learning_rate_fraction", 1.5),
    ("final_learning_rate_fraction", NAN),
    ("max_minutes", 0),
    ("max_minutes", NAN),
    ("max_minutes", INF),
    ("thresholds", [0.5, 1.2]),
    ("thresholds", [-0.1]),
    ("thresholds", [NAN]),
    ("device", "gpu"),
    ("device", "meta"),
    ("device", f"cuda:{torch.cuda.device_count()}"),
]


@pytest.mark.parametrize(("key", "value"), TRAIN_CASES, ids=[f"{k}={v}" for k, v in TRAIN_CASES])
def test_a_bad_train_value_is_one_line_naming_its_key(key, value):
    with pytest.raises(NeuropilError, match=f"config: bad value for 'train.{key}") as error:
        RunConfig.parse(run_config(train={key: value}))
    one_line(error)


MODEL_CASES = [
    ("base_channels", 0),
    ("base_channels", -2),
    ("depth", 0),
    ("in_channels", 0),
    ("channel_factor", 0),
    ("offsets", []),
    ("downsample_factors", [[1, 0, 2]]),
]


@pytest.mark.parametrize(("key", "value"), MODEL_CASES, ids=[f"{k}={v}" for k, v in MODEL_CASES])
def test_a_bad_model_value_is_one_line_naming_its_key(key, value):
    with pytest.raises(NeuropilError, match=f"config: bad value for 'model.{key}") as error:
        RunConfig.parse(run_config(model={key: value}))
    one_line(error)


AUGMENT_CASES = [
    ("noise", {"probability": 1.5}, "noise.probability"),
    ("noise", {"probability": -0.1}, "noise.probability"),
    ("flip", {"probability": NAN}, "flip.probability"),
    ("contrast", {"factor": [1.4, 0.6]}, "contrast.factor"),
    ("contrast", {"factor": [0.6, INF]}, "contrast.factor.1"),
    ("rotation", {"degrees": [NAN, 10]}, "rotation.degrees.0"),
    ("brightness", {"shift": [NAN, NAN]}, "brightness.shift.0"),
    ("elastic", {"spacing_nm": INF}, "elastic.spacing_nm"),
    ("elastic", {"spacing_nm": 0}, "elastic.spacing_nm"),
    ("open_gaps", {"width_nm": [-1, 10]}, "open_gaps.width_nm.0"),
    ("missing_section", {"value": [0.2, 1.5]}, "missing_section.value.1"),
    ("misalignment", {"step_probability": 2}, "misalignment.step_probability"),
    ("style", {"segments": 0}, "style.segments"),
]


@pytest.mark.parametrize(("name", "change", "key"), AUGMENT_CASES, ids=[c[2] for c in AUGMENT_CASES])
def test_a_bad_augmentation_value_is_one_line_naming_its_key(name, change, key):
    with pytest.raises(NeuropilError, match=f"bad value for 'train.augment.{key}'") as error:
        RunConfig.parse(run_config(train={"augment": {name: change}}))
    one_line(error)


DOMAIN_CASES = [
    ({"volumes": 0}, "domains.fly.volumes"),
    ({"shape": [6, 0, 24]}, "domains.fly.shape"),
    ({"weight": -1}, "domains.fly.weight"),
    ({"weight": INF}, "domains.fly.weight"),
    ({"weight": NAN}, "domains.fly.weight"),
    ({"validation_volumes": -1}, "domains.fly.validation_volumes"),
]


@pytest.mark.parametrize(("change", "key"), DOMAIN_CASES, ids=[f"{c}" for c, _ in DOMAIN_CASES])
def test_a_bad_domain_value_is_one_line_naming_its_key(change, key):
    domain = {"synthetic": "cremi-like", "volumes": 1, "shape": [6, 24, 24], "seed": 3, **change}
    with pytest.raises(NeuropilError, match=f"bad value for '{key}") as error:
        RunConfig.parse(run_config(domains={"fly": domain}))
    one_line(error)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"dataset": "fib-gala", "weight": INF}, "domains.fly.weight"),
        ({"dataset": "fib-gala", "validation_width": -1}, "domains.fly.validation_width"),
        ({"raw": "a.h5:raw", "labels": "a.h5:labels", "weight": NAN}, "domains.fly.weight"),
        ({"raw": "a.h5:raw", "labels": "a.h5:labels", "voxel_size": [NAN, 4, 4]}, "domains.fly.voxel_size.0"),
    ],
)
def test_bad_dataset_and_volume_domain_values_name_their_key(change, key):
    with pytest.raises(NeuropilError, match=f"bad value for '{key}") as error:
        RunConfig.parse(run_config(domains={"fly": change}))
    one_line(error)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"target_voxel_size": [NAN, 13, 13]}, "target_voxel_size.0"),
        ({"target_voxel_size": [INF, 13, 13]}, "target_voxel_size.0"),
        ({"validation_width": -1}, "validation_width"),
    ],
)
def test_bad_run_values_name_their_key(change, key):
    with pytest.raises(NeuropilError, match=f"bad value for '{key}") as error:
        RunConfig.parse({**run_config(), **change})
    one_line(error)


def test_good_edge_values_are_accepted():
    config = RunConfig.parse(
        run_config(
            train={
                "iterations": 1,
                "checkpoint_every": 1,
                "batch_size": 1,
                "workers": 0,
                "warmup_iterations": 0,
                "final_learning_rate_fraction": 0,
                "thresholds": [0, 1],
                "validation_shape": None,
                "device": "cpu",
            }
        )
    )
    assert config.train.iterations == 1 and config.train.thresholds == (0, 1)
    assert (
        RunConfig.parse(run_config(train={"final_learning_rate_fraction": 1})).train.final_learning_rate_fraction == 1
    )


# --------------------------------------------------------------------------- stage and experiment configurations

STAGE_CASES = [
    (SegmentConfig, {"thresholds": [1.2]}, "thresholds.0"),
    (SegmentConfig, {"thresholds": [0.5, -0.1]}, "thresholds.1"),
    (SegmentConfig, {"thresholds": [NAN]}, "thresholds.0"),
    (SegmentConfig, {"fragment_threshold": 1.5}, "fragment_threshold"),
    (SegmentConfig, {"fragment_threshold": NAN}, "fragment_threshold"),
    (SegmentConfig, {"flood_threshold": INF}, "flood_threshold"),
    (PredictConfig, {"device": "gpu"}, "device"),
    (PredictConfig, {"device": f"cuda:{torch.cuda.device_count()}"}, "device"),
    (PredictConfig, {"tile_shape": [0, 8, 8]}, "tile_shape"),
    (PredictConfig, {"block_shape": [8, -8, 8]}, "block_shape"),
]


@pytest.mark.parametrize(("kind", "content", "key"), STAGE_CASES, ids=[f"{k.__name__}:{c}" for k, c, _ in STAGE_CASES])
def test_a_bad_stage_value_is_one_line_naming_its_key(kind, content, key):
    with pytest.raises(NeuropilError, match=f"config: bad value for '{key}'") as error:
        kind.parse(content)
    one_line(error)


EXPERIMENT_CASES = [
    ({"segment": {"thresholds": [0.5, 1.2]}}, "segment.thresholds.1"),
    ({"quick": {"iterations": 0}}, "quick.iterations"),
    ({"quick": {"target_shape": [0, 64, 64]}}, "quick.target_shape"),
    ({"quick": {"source_shape": [16, 96, -96]}}, "quick.source_shape"),
    ({"train": {"learning_rate": NAN}}, "train.learning_rate"),
    ({"train": {"device": "gpu"}}, "train.device"),
    ({"targets": {"other": {"synthetic": "snemi-like", "shape": [8, 0, 32]}}}, "targets.other.shape"),
    (
        {"targets": {"other": {"synthetic": "snemi-like", "shape": [8, 32, 32], "changes": {"noise": NAN}}}},
        "targets.other.changes.noise",
    ),
    ({"targets": {"other": {"dataset": "fib-gala", "largest_objects": 0}}}, "targets.other.largest_objects"),
    ({"validation_width": -1}, "validation_width"),
]


@pytest.mark.parametrize(("change", "key"), EXPERIMENT_CASES, ids=[key for _, key in EXPERIMENT_CASES])
def test_a_bad_experiment_value_is_one_line_naming_its_key(change, key):
    with pytest.raises(NeuropilError, match=f"config: bad value for '{key}") as error:
        ExperimentConfig.parse(experiment_config(**change))
    one_line(error)


def test_the_experiment_config_used_here_is_valid():
    assert ExperimentConfig.parse(experiment_config()).segment.thresholds


# --------------------------------------------------------------------------- devices


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("gpu", "unknown torch device 'gpu'"),
        ("", "unknown torch device ''"),
        ("cuda:-1", "unknown torch device 'cuda:-1'"),
        ("meta", "device 'meta': neuropil runs on cpu, cuda or mps"),
        (f"cuda:{torch.cuda.device_count()}", f"device 'cuda:{torch.cuda.device_count()}'"),
        pytest.param("cuda", "device 'cuda': CUDA is not available", marks=pytest.mark.skipif(CUDA, reason="CUDA")),
        pytest.param("mps", "device 'mps': MPS is not available", marks=pytest.mark.skipif(MPS, reason="MPS")),
    ],
)
def test_a_device_this_machine_lacks_is_one_line_naming_it_and_what_is_available(name, words):
    with pytest.raises(NeuropilError, match=words) as error:
        check_device(name)
    message = one_line(error)
    assert f"(available: {', '.join(available_devices())})" in message


def test_devices_this_machine_has_are_accepted():
    assert available_devices()[0] == "cpu"
    for name in ("cpu", "cpu:0", *available_devices()):
        assert check_device(name) == name
    if CUDA:
        assert check_device("cuda") == "cuda"


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_cuda_without_cuda_is_an_error_of_the_train_device():
    with pytest.raises(NeuropilError, match=r"bad value for 'train.device': device 'cuda': CUDA is not available"):
        RunConfig.parse(run_config(train={"device": "cuda"}))
    with pytest.raises(NeuropilError, match=r"bad value for 'device': device 'cuda:0'"):
        PredictConfig.parse({"device": "cuda:0"})


# --------------------------------------------------------------------------- config files


def write_yaml(path: Path, content) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.mark.parametrize(
    "content",
    [
        b"train: {iterations: 4}\n# caf\xe9\n",  # Latin-1
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",  # binary
        b"\xff\xfe t\x00r\x00a\x00i\x00n\x00",  # UTF-16
    ],
    ids=["latin-1", "png", "utf-16"],
)
def test_a_config_file_that_is_not_utf8_is_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "run.yaml"
    path.write_bytes(content)
    with pytest.raises(NeuropilError, match="not UTF-8 text") as error:
        load_config(path)
    assert one_line(error).startswith(f"{path}: cannot read configuration")


def test_a_utf8_file_with_control_bytes_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"train:\n  iterations: 4\x00\x00\x01\n")
    with pytest.raises(NeuropilError) as error:
        load_config(path)
    assert one_line(error).startswith(f"{path}: cannot read configuration")


def test_a_utf8_file_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(run_config()).encode())
    assert load_config(path).train.iterations == 4


# --------------------------------------------------------------------------- the train command

TRAIN_CLI_CASES = [
    ("checkpoint_every", {"train": {"checkpoint_every": 0}}, "train.checkpoint_every"),
    ("batch_size", {"train": {"batch_size": 0}}, "train.batch_size"),
    ("iterations", {"train": {"iterations": -5}}, "train.iterations"),
    ("channels", {"model": {"base_channels": 0}}, "model.base_channels"),
    ("nan-learning-rate", {"train": {"learning_rate": NAN}}, "train.learning_rate"),
    ("unknown-device", {"train": {"device": "gpu"}}, "train.device"),
    pytest.param("cuda", {"train": {"device": "cuda"}}, "train.device", marks=pytest.mark.skipif(CUDA, reason="CUDA")),
    ("patch", {"train": {"patch_shape": [4, 16, 0]}}, "train.patch_shape.2"),
]


@pytest.mark.parametrize(("name", "change", "key"), TRAIN_CLI_CASES)
def test_train_with_a_bad_config_exits_2_with_one_line(tmp_path, capsys, name, change, key):
    path = write_yaml(tmp_path / "run.yaml", run_config(**change))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert lines[0].startswith(f"neuropil: error: {path}: bad value for '{key}'")
    assert not out.exists()


def test_train_with_a_non_utf8_config_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_bytes(yaml.safe_dump(run_config()).encode() + b"# \xe9\n")
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert lines[0].startswith(f"neuropil: error: {path}: cannot read configuration: not UTF-8 text")


# --------------------------------------------------------------------------- segmentation inputs


def two_objects() -> np.ndarray:
    """Nearest-neighbour affinities (3, 4, 12, 12) of two objects split along x, in [0, 1]."""
    labels = np.ones((4, 12, 12), dtype=np.uint64)
    labels[:, :, 6:] = 2
    affinities = np.ones((3, *labels.shape), dtype=np.float32)
    affinities[2][:, :, 6] = 0
    affinities[0][0], affinities[1][:, 0], affinities[2][:, :, 0] = 0, 0, 0
    return affinities


def with_value(array: np.ndarray, value: float, index=(0, 1, 1, 1)) -> np.ndarray:
    changed = array.copy()
    changed[index] = value
    return changed


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (1.5, "affinities must lie in [0, 1], found values from 0 to 1.5"),
        (-0.2, "affinities must lie in [0, 1], found values from -0.2 to 1"),
        (1 + 1e-4, "affinities must lie in [0, 1]"),
        (INF, "affinities must lie in [0, 1], found values from 0 to inf"),
        (NAN, "affinities contain NaN values"),
    ],
)
def test_affinities_outside_0_1_are_an_error_of_segment_and_fragments(value, words):
    affinities = with_value(two_objects(), value)
    for run in (
        lambda: segment(affinities, voxel_size=VOXEL_SIZE),
        lambda: fragments(affinities, voxel_size=VOXEL_SIZE),
        lambda: segment(affinities, voxel_size=None, fragment_ids=np.ones((4, 12, 12), dtype=np.uint64)),
    ):
        with pytest.raises(NeuropilError, match=words.replace("[", r"\[").replace("]", r"\]")) as error:
            run()
        one_line(error)


@pytest.mark.parametrize("value", [1 + 1e-7, -1e-7])
def test_float_noise_at_the_ends_of_0_1_is_accepted(value):
    affinities = with_value(two_objects(), value, (2, 1, 1, 1))
    result = segment(affinities, voxel_size=VOXEL_SIZE, thresholds=(0.5,))
    assert len(np.unique(result.segmentations[0])) == 2


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (1.5, "boundary map values must lie in [0, 1], found values from 0 to 1.5"),
        (NAN, "boundary map values contain NaN"),
    ],
)
def test_a_boundary_map_outside_0_1_is_an_error(value, words):
    boundaries = np.zeros((4, 12, 12), dtype=np.float32)
    boundaries[:, :, 6] = 1
    boundaries[1, 1, 1] = value
    pattern = words.replace("[", r"\[").replace("]", r"\]")
    for run in (
        lambda: segment(boundaries, voxel_size=VOXEL_SIZE),
        lambda: fragments(boundaries, voxel_size=VOXEL_SIZE),
        lambda: segment(boundaries, voxel_size=None, fragment_ids=np.ones((4, 12, 12), dtype=np.uint64)),
    ):
        with pytest.raises(NeuropilError, match=pattern) as error:
            run()
        one_line(error)


def test_long_range_affinities_outside_0_1_are_an_error():
    affinities = np.concatenate([two_objects(), np.full((1, 4, 12, 12), 1.5, dtype=np.float32)])
    with pytest.raises(NeuropilError, match="long-range affinities must lie in") as error:
        segment(
            affinities, voxel_size=VOXEL_SIZE, method="mutex", offsets=[(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, -3)]
        )
    one_line(error)


@pytest.mark.parametrize("thresholds", [(-0.1,), (1.2,), (0.5, NAN), (0.3, 2.0)])
def test_merge_thresholds_outside_0_1_are_an_error_of_segment(thresholds):
    with pytest.raises(NeuropilError, match="merge thresholds must lie in") as error:
        segment(two_objects(), voxel_size=VOXEL_SIZE, thresholds=thresholds)
    one_line(error)


def test_merge_thresholds_at_0_and_1_are_accepted():
    assert check_thresholds([0, 1]) == (0.0, 1.0) and check_thresholds(0.5) == (0.5,)
    result = segment(two_objects(), voxel_size=VOXEL_SIZE, thresholds=(0, 1))
    assert result.thresholds == (0.0, 1.0)
    with pytest.raises(NeuropilError, match="no merge threshold"):
        check_thresholds([])


@pytest.mark.parametrize("threshold", [-0.5, 1.5, NAN])
def test_a_fragment_threshold_outside_0_1_is_an_error(threshold):
    with pytest.raises(NeuropilError, match="fragment threshold must lie in"):
        segment(two_objects(), voxel_size=VOXEL_SIZE, fragment_threshold=threshold)


# --------------------------------------------------------------------------- the segment command


def segment_command(tmp_path: Path, capsys, values: np.ndarray, *options: str) -> tuple[int, list[str], Path]:
    source = f"{tmp_path / 'in.h5'}:values"
    write_volume(source, values, voxel_size=VOXEL_SIZE)
    out = tmp_path / "seg.h5"
    code = main(["segment", source, f"{out}:segmentation", *options])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err.strip().splitlines(), out


@pytest.mark.parametrize(
    ("value", "words"),
    [(1.5, "affinities must lie in [0, 1], found values from 0 to 1.5"), (NAN, "affinities contain NaN values")],
)
def test_segment_command_on_affinities_outside_0_1_exits_2_with_one_line(tmp_path, capsys, value, words):
    code, lines, out = segment_command(tmp_path, capsys, with_value(two_objects(), value))
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("neuropil: error: ") and words in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("threshold", ["-0.1", "1.2"])
def test_segment_command_with_a_threshold_outside_0_1_exits_2_with_one_line(tmp_path, capsys, threshold):
    code, lines, out = segment_command(tmp_path, capsys, two_objects(), "--threshold", threshold)
    assert code == 2 and len(lines) == 1
    assert lines[0] == f"neuropil: error: merge thresholds must lie in [0, 1], not {float(threshold):g}"
    assert not out.exists()


def test_segment_command_on_good_affinities_still_works(tmp_path, capsys):
    code, lines, out = segment_command(tmp_path, capsys, two_objects(), "--threshold", "0.5")
    assert code == 0 and out.exists() and not lines
