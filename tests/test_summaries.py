"""Every command that writes ends with one summary line of what it wrote; --quiet silences it, --json makes it JSON."""

import argparse
import json

import numpy as np
import pytest
import torch

from neuropil.checkpoint import save_checkpoint
from neuropil.cli import build_parser, main
from neuropil.io import read_volume, write_volume
from neuropil.model import ModelConfig, UNet3D

WRITING_COMMANDS = [
    ("predict",),
    ("segment",),
    ("train",),
    ("demo",),
    ("experiment",),
    ("study",),
    ("augment", "preview"),
    ("models", "export"),
    ("agglomeration", "train"),
    ("data", "fetch"),
]


def subcommand(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in names:
        (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("names", WRITING_COMMANDS, ids=" ".join)
def test_every_writing_command_has_quiet_and_json(names):
    options = subcommand(build_parser(), names)._option_string_actions
    assert "--quiet" in options and "--json" in options


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = UNet3D(ModelConfig(base_channels=2, depth=3, voxel_size=(20.0, 10.0, 10.0)))
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model_config": model.config.model_dump(mode="json"), "model_state": model.state_dict()})
    return path


def test_predict_says_what_it_wrote_in_words_and_in_json(tmp_path, checkpoint, capsys):
    raw = np.random.default_rng(0).integers(0, 255, size=(8, 24, 24), dtype=np.uint8)
    write_volume(f"{tmp_path / 'raw.h5'}:raw", raw, voxel_size=(40, 20, 20))
    assert main(["predict", str(checkpoint), f"{tmp_path / 'raw.h5'}:raw", f"{tmp_path / 'a.h5'}:affs"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    affinities = read_volume(f"{tmp_path / 'a.h5'}:affs")
    shape = "x".join(map(str, affinities.shape))
    assert line.startswith(f"wrote affinities {tmp_path / 'a.h5'}:affs: {shape} float32, 20x10x10 nm (z y x)")
    assert "40x20x20 nm rescaled" in line
    assert main(["predict", str(checkpoint), f"{tmp_path / 'raw.h5'}:raw", f"{tmp_path / 'b.h5'}:affs", "--json"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert record["shape"] == list(affinities.shape) and record["dtype"] == "float32"
    assert record["voxel_size"] == [20.0, 10.0, 10.0] and record["input_voxel_size"] == [40.0, 20.0, 20.0]


def two_objects(tmp_path) -> str:
    affinities = np.full((3, 8, 32, 32), 0.95, dtype=np.float32)
    affinities[1:, :, 16] = 0.0  # a wall: two objects
    address = f"{tmp_path / 'in.zarr'}/affs"
    write_volume(address, affinities, voxel_size=(40, 8, 8))
    return address


@pytest.mark.parametrize("blockwise", [False, True], ids=["in memory", "blockwise"])
def test_segment_json_has_one_record_per_threshold_with_its_segment_count(tmp_path, capsys, blockwise):
    more = ["--block", "8", "16", "16", "--scheduler", "synchronous"] if blockwise else []
    out = f"{tmp_path / 'out.zarr'}/seg"
    assert main(["segment", two_objects(tmp_path), out, "--threshold", "0.3", "0.6", "--json", *more]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["threshold"] for r in records] == [0.3, 0.6]
    for record in records:
        written = read_volume(record["wrote"])
        assert record["segments"] == len(np.unique(written[written > 0])) == 2
        assert record["shape"] == [8, 32, 32] and record["voxel_size"] == [40.0, 8.0, 8.0]


def test_quiet_prints_nothing_and_still_writes(tmp_path, capsys):
    out = f"{tmp_path / 'out.zarr'}/seg"
    assert main(["segment", two_objects(tmp_path), out, "--threshold", "0.5", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert read_volume(out).max() > 0
