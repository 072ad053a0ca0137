"""Bad input to every command: one line on stderr, exit code 2, no traceback, existing outputs untouched.

The table crosses the commands (train, predict, segment in memory and blockwise, evaluate,
agglomeration train, data info and fetch, augment preview, models, experiment, demo) with
the classes of bad input: configuration values out of range or of the wrong kind, output
paths that are a folder, a file where a folder is needed, read-only or on a full disk,
inputs that are missing or of the wrong kind, a negative iteration count, affinities and
thresholds outside [0, 1], model and checkpoint files with missing or wrongly typed
fields, a merge classifier without training examples, damaged metadata that JSON cannot
hold, and an offline download. Below the table: the boundary of :func:`neuropil.cli.main`
itself (each kind of expected failure, internal errors, Ctrl-C, logging) and property-based
tests of address parsing and configuration loading.
"""

from __future__ import annotations

import builtins
import dataclasses
import errno
import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import blobs
from neuropil import checkpoint as checkpoints
from neuropil import cli
from neuropil.cli import main
from neuropil.config import RunConfig
from neuropil.errors import NeuropilError
from neuropil.files import (
    check_output_file,
    check_output_folder,
    save_figure_atomic,
    swap_in,
    write_text_atomic,
)
from neuropil.io import parse_address, write_volume
from neuropil.segment.learned import train as train_classifier

ROOT = Path(__file__).resolve().parents[1]
VOXEL = blobs.VOXEL
LEFTOVER = re.compile(r"\.partial|\.part$|\.old$")
"""Names of temporaries a failed write must not leave behind."""
PROGRESS = re.compile(r"^(DEBUG|INFO) [\w.]+: ")
"""A log line of progress (printed before a failure, when logging goes to stderr): not part of the error."""
CUDA = torch.cuda.is_available()


# ----------------------------------------------------------------------------- inputs


def tiny_run(**changes) -> dict:
    """A run configuration that trains in a moment: one small synthetic domain, no validation."""
    config = {
        "target_voxel_size": list(VOXEL),
        "model": {"base_channels": 2, "depth": 2},
        "train": {"iterations": 1, "patch_shape": [8, 16, 16], "checkpoint_every": 1, "augment": False},
        "domains": {"s": {"synthetic": "cremi-like", "volumes": 1, "shape": [8, 32, 32], "validation_volumes": 0}},
    }
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            config[section] = {**config[section], field: value}
        else:
            config[section] = value
    return config


def tiny_experiment(**changes) -> dict:
    run = tiny_run()
    config = {
        "target_voxel_size": run["target_voxel_size"],
        "model": run["model"],
        "train": run["train"],
        "sources": run["domains"],
        "targets": {"t": {"synthetic": "cremi-like", "seed": 7, "shape": [8, 32, 32]}},
    }
    config.update(changes)
    return config


def write_yaml(path: Path, content) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Small valid and broken inputs every case reads (never writes)."""

    folder: Path

    def __truediv__(self, name: str) -> str:
        return str(self.folder / name)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    folder = tmp_path_factory.mktemp("inputs")
    volume = blobs.blob_volume(0, shape=(8, 32, 32), cells=8)
    write_volume(folder / "raw.h5:raw", volume.raw, voxel_size=VOXEL)
    write_volume(folder / "gt.h5:gt", volume.labels, voxel_size=VOXEL)
    boundaries = (volume.labels == 0).astype(np.float32)
    write_volume(folder / "boundaries.h5:p", boundaries, voxel_size=VOXEL)
    affinities = np.random.default_rng(0).random((3, 8, 32, 32)).astype(np.float32)
    write_volume(folder / "affs.h5:affs", affinities, voxel_size=VOXEL)
    write_volume(folder / "affs.h5:outside", affinities * 3 - 1, voxel_size=VOXEL)
    write_volume(folder / "affs.zarr/affs", affinities, voxel_size=VOXEL, chunks=(3, 4, 16, 16))
    write_volume(folder / "affs.zarr/outside", affinities * 3 - 1, voxel_size=VOXEL, chunks=(3, 4, 16, 16))
    fragments = np.where(volume.labels == 0, 1, volume.labels).astype(np.uint64)
    write_volume(folder / "fragments.h5:frag", fragments, voxel_size=VOXEL)
    write_volume(folder / "fragments.h5:one", np.ones_like(fragments), voxel_size=VOXEL)
    write_volume(folder / "flat.h5:x", np.zeros((32, 32), np.float32))
    (folder / "notes.h5").write_text("not an HDF5 file\n")
    (folder / "notes.pt").write_text("not a checkpoint\n")
    with h5py.File(folder / "nan.h5", "w") as file:
        file.create_dataset("x", data=np.zeros((4, 8, 8), np.uint8)).attrs["resolution"] = [np.nan, 10.0, 10.0]
    # zarr arrays with one chunk removed: read as fill value unless checked
    write_volume(folder / "gap.zarr/gt", volume.labels, voxel_size=VOXEL, chunks=(4, 16, 16))
    write_volume(folder / "gap.zarr/affs", affinities, voxel_size=VOXEL, chunks=(3, 4, 16, 16))
    for key in ("gt", "affs"):
        chunks = sorted(p for p in (folder / "gap.zarr" / key).rglob("*") if p.is_file() and "json" not in p.name)
        chunks[0].unlink()

    # a checkpoint of `neuropil train`, and broken copies of it
    config = write_yaml(folder / "tiny.yaml", tiny_run())
    assert main(["train", str(config), "--out", str(folder / "run"), "--no-progress"]) == 0
    state = torch.load(folder / "run" / "checkpoint.pt", weights_only=True)
    model_config = dict(state["model_config"])
    for name, broken in {
        "no-model-state": {k: v for k, v in state.items() if k != "model_state"},
        "no-voxel-size": {**state, "model_config": {k: v for k, v in model_config.items() if k != "voxel_size"}},
        "config-not-a-mapping": {**state, "model_config": ["base_channels", 2]},
        "channels-a-word": {**state, "model_config": {**model_config, "base_channels": "two"}},
        "threshold-a-word": {**state, "merge_threshold": "high"},
        "iteration-a-word": {**state, "iteration": "many"},
    }.items():
        torch.save(broken, folder / f"{name}.pt")

    # a merge classifier, and copies with missing and wrongly typed metadata
    model = train_classifier(boundaries, fragments, volume.labels, epochs=1, n_estimators=2)
    model.save(folder / "merge.npz")
    with np.load(folder / "merge.npz") as stored:
        arrays = {name: stored[name] for name in stored.files}
    metadata = json.loads(str(arrays.pop("metadata")))
    for name, changed in {
        "merge-no-bins": {k: v for k, v in metadata.items() if k != "n_bins"},
        "merge-bins-a-word": {**metadata, "n_bins": "many"},
        "merge-names-a-number": {**metadata, "feature_names": 3},
    }.items():
        np.savez(folder / f"{name}.npz", metadata=np.array(json.dumps(changed)), **arrays)

    write_yaml(folder / "experiment.yaml", tiny_experiment())
    write_yaml(
        folder / "experiment-zero-interval.yaml", tiny_experiment(train={**tiny_run()["train"], "checkpoint_every": 0})
    )
    write_yaml(folder / "experiment-negative.yaml", tiny_experiment(train={**tiny_run()["train"], "iterations": -3}))
    write_yaml(
        folder / "experiment-missing-source.yaml",
        tiny_experiment(sources={"mine": {"raw": str(folder / "missing.h5:raw"), "labels": str(folder / "gt.h5:gt")}}),
    )
    write_yaml(
        folder / "experiment-wrong-kind.yaml",
        tiny_experiment(sources={"mine": {"raw": str(folder / "notes.h5"), "labels": str(folder / "gt.h5:gt")}}),
    )
    # a catalog whose one file is served from a port nobody listens on: offline
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    payload_hash = hashlib.sha256(b"payload").hexdigest()
    write_yaml(
        folder / "catalog.yaml",
        {
            "datasets": {
                "unreachable": {
                    "title": "a dataset on a server that does not answer",
                    "voxel_size": [40, 4, 4],
                    "folder": "unreachable",
                    "files": [{"name": "blob.bin", "url": f"http://127.0.0.1:{port}/blob.bin", "sha256": payload_hash}],
                    "volumes": {"a": {"raw": "blob.bin"}},
                }
            }
        },
    )
    return Inputs(folder)


# ----------------------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class Case:
    """One command given one bad input."""

    name: str
    argv: Callable[[Inputs, Path], list[str]]
    """The command line, from the inputs and the case's own folder."""
    setup: Callable[[Inputs, Path, pytest.MonkeyPatch], None] | None = None
    """Makes the bad condition: configuration files, outputs that exist before, a failing file system."""
    kept: str | None = None
    """An output (relative to the case's folder) that exists before and must be byte-identical after."""
    says: str | None = None
    """A part of the error line (case-insensitive)."""
    check: Callable[[str, Inputs, Path], None] | None = None
    needs_cpu_only: bool = False
    """A case about CUDA being unavailable: skipped where torch sees a GPU."""


def existing_file(name: str, content: bytes = b"an earlier output\n"):
    def make(inputs: Inputs, folder: Path, monkeypatch) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)

    return make


def existing_folder(name: str):
    def make(inputs: Inputs, folder: Path, monkeypatch) -> None:
        (folder / name).mkdir(parents=True)
        (folder / name / "kept.txt").write_text("an earlier output\n")

    return make


def config_file(content: dict | list | bytes, name: str = "config.yaml"):
    def make(inputs: Inputs, folder: Path, monkeypatch) -> None:
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            write_yaml(path, content)

    return make


def both(*setups):
    def make(inputs: Inputs, folder: Path, monkeypatch) -> None:
        for setup in setups:
            setup(inputs, folder, monkeypatch)

    return make


def read_only(under: str):
    """The file system says nothing can be written under ``under`` (as a read-only mount would, even to root)."""

    def make(inputs: Inputs, folder: Path, monkeypatch) -> None:
        blocked = (folder / under).resolve()
        access, replace, statvfs = os.access, os.replace, os.statvfs

        def refused(path) -> bool:
            return Path(path).resolve().is_relative_to(blocked)

        def fake_access(path, mode, *args, **kwargs):
            return False if refused(path) and mode & os.W_OK else access(path, mode, *args, **kwargs)

        def fake_replace(source, target, *args, **kwargs):
            if refused(target):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(source), None, os.fspath(target))
            return replace(source, target, *args, **kwargs)

        def fake_statvfs(path):
            if not refused(path):
                return statvfs(path)
            real = statvfs(path)
            fields = {name: getattr(real, name) for name in dir(real) if name.startswith("f_")}
            return SimpleNamespace(**{**fields, "f_flag": real.f_flag | os.ST_RDONLY})

        (folder / under).mkdir(parents=True, exist_ok=True)
        monkeypatch.setattr(os, "access", fake_access)
        monkeypatch.setattr(os, "replace", fake_replace)
        monkeypatch.setattr(os, "statvfs", fake_statvfs)

    return make


def full_disk(under: str, *, room: int = 100):
    """Every file written under ``under`` fills the disk after ``room`` bytes.

    Python's file writes raise ``ENOSPC``; torch's own writer, given a path there, writes
    ``room`` bytes and then fails as it does on a full disk (the rest goes to ``/dev/full``).
    """

    def make(inputs: Inputs, folder: Path, monkeypatch) -> None:
        blocked = (folder / under).resolve()
        real_open, real_save = builtins.open, torch.save

        def inside(file) -> bool:
            return isinstance(file, (str, os.PathLike)) and Path(file).resolve().is_relative_to(blocked)

        class FillingFile(io.FileIO):
            left = room

            def write(self, data) -> int:
                data = memoryview(data).cast("B")
                if len(data) <= self.left:
                    self.left -= len(data)
                    return super().write(data)
                super().write(data[: self.left])
                self.left = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)

        def fake_open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, *args, **kwargs):
            if not inside(file) or not set(mode) & set("wax+"):
                return real_open(file, mode, buffering, encoding, errors, newline, *args, **kwargs)
            raw = FillingFile(file, mode.replace("b", "").replace("t", ""))
            buffered = io.BufferedRandom(raw) if "+" in mode else io.BufferedWriter(raw)
            if "b" in mode:
                return buffered
            return io.TextIOWrapper(buffered, encoding=encoding or "utf-8", errors=errors, newline=newline)

        def fake_save(obj, f, *args, **kwargs):
            if not inside(f):
                return real_save(obj, f, *args, **kwargs)
            with real_open(f, "wb") as half:
                half.write(b"\0" * room)
            real_save(obj, "/dev/full", *args, **kwargs)
            raise AssertionError("/dev/full took everything")

        (folder / under).mkdir(parents=True, exist_ok=True)
        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(torch, "save", fake_save)

    return make


def full_disk_hdf5(inputs: Inputs, folder: Path, monkeypatch) -> None:
    """Writing an HDF5 dataset fills the disk (the file already exists under its temporary name)."""

    def fake(self, *args, **kwargs):
        raise OSError(
            errno.ENOSPC,
            f"Can't synchronously write data (file write failed: filename = '{self.file.filename}', errno = 28, "
            "error message = 'No space left on device')",
        )

    monkeypatch.setattr(h5py.Group, "create_dataset", fake)


def offline_catalog(inputs: Inputs, folder: Path, monkeypatch) -> None:
    monkeypatch.setenv("NEUROPIL_CATALOG", inputs / "catalog.yaml")
    monkeypatch.setenv("NEUROPIL_CACHE", str(folder / "cache"))


def shipped(model_file: str):
    """The package ships one model: ``model_file`` of the inputs."""

    def make(inputs: Inputs, folder: Path, monkeypatch) -> None:
        models = folder / "models"
        models.mkdir()
        shutil.copyfile(inputs / model_file, models / "broken.pt")
        monkeypatch.setattr(checkpoints, "SHIPPED", models)

    return make


def part_file_claim_is_true(line: str, inputs: Inputs, folder: Path) -> None:
    """An offline fetch may say a partial download was kept only if there is one."""
    if ".part" in line:
        assert list((folder / "cache").rglob("*.part")), f"says a .part file was kept, but there is none: {line}"


def cmd(*parts):
    """A command line whose parts may name the inputs' folder (``{i}``) and the case's own (``{d}``)."""
    return lambda i, d: [part.format(i=i.folder, d=d) for part in parts]


def train(config: str = "{d}/config.yaml", out: str = "{d}/run"):
    return cmd("train", config, "--out", out, "--no-progress")


def predict(out: str, *more: str, checkpoint: str = "{i}/run/checkpoint.pt", raw: str = "{i}/raw.h5:raw"):
    return cmd("predict", checkpoint, raw, out, "--no-progress", *more)


def segment(source: str, out: str, *more: str):
    return cmd("segment", source, out, *more)


def blockwise(source: str, out: str, *more: str):
    return cmd("segment", source, out, "--threshold", "0.5", *more, *BLOCK)


def learn(*more: str, fragments: str = "{i}/fragments.h5:frag", gt: str = "{i}/gt.h5:gt", out: str = "{d}/m.npz"):
    source = more if "--affinities" in more else ("--boundaries", "{i}/boundaries.h5:p", *more)
    return cmd("agglomeration", "train", "--fragments", fragments, *source, "--gt", gt, "--out", out, "--trees", "2",
               "--epochs", "1")  # fmt: skip


def train_config(**changes):
    return config_file(tiny_run(**changes))


def own_domain(raw: str):
    """A run configuration training on one's own volume ``raw`` (an address relative to the inputs)."""

    def make(inputs: Inputs, folder: Path, monkeypatch) -> None:
        write_yaml(
            folder / "config.yaml", tiny_run(domains={"mine": {"raw": inputs / raw, "labels": inputs / "gt.h5:gt"}})
        )

    return make


def copy_of_run(inputs: Inputs, folder: Path, monkeypatch) -> None:
    shutil.copytree(inputs.folder / "run", folder / "run")


BLOCK = ("--block", "4", "16", "16", "--workers", "1", "--scheduler", "synchronous", "--no-progress")
TINY = "{i}/tiny.yaml"
AT_05 = ("--threshold", "0.5")

# fmt: off
CASES = [
    # --- train: configuration values
    Case("train/zero checkpoint interval", train(), train_config(**{"train.checkpoint_every": 0}), says="checkpoint_every"),
    Case("train/zero batch size", train(), train_config(**{"train.batch_size": 0}), says="batch_size"),
    Case("train/batch size a word", train(), train_config(**{"train.batch_size": "two"}), says="batch_size"),
    Case("train/zero channels", train(), train_config(model={"base_channels": 0, "depth": 2}), says="base_channels"),
    Case("train/NaN learning rate", train(), train_config(**{"train.learning_rate": float("nan")}), says="learning_rate"),
    Case("train/unknown device", train(), train_config(**{"train.device": "tpu9"}), says="tpu9"),
    Case("train/CUDA unavailable", train(), train_config(**{"train.device": "cuda"}), says="cuda", needs_cpu_only=True),
    Case("train/config not UTF-8", train(), config_file(b"train:\n  device: \xff\xfe cpu\n"), says="UTF-8"),
    Case("train/config a list", train(), config_file([1, 2]), says="mapping"),
    Case("train/negative iteration count", train(), train_config(**{"train.iterations": -3}), says="iterations"),
    # --- train: outputs and inputs
    Case("train/out is a file", train(TINY), existing_file("run"), kept="run", says="folder"),
    Case("train/out under a file", train(TINY, "{d}/run/inner"), existing_file("run"), kept="run", says="folder"),
    Case("train/out read-only", train(TINY, "{d}/ro/run"), read_only("ro"), says="read-only"),
    Case("train/full disk", train(), both(copy_of_run, train_config(**{"train.iterations": 2}), full_disk("run")),
         kept="run/checkpoint.pt", says="no space left"),
    Case("train/full disk at a checkpoint", train(),
         both(copy_of_run, train_config(**{"train.iterations": 2}), full_disk("run", room=20_000)),
         kept="run/checkpoint.pt", says="checkpoint.pt"),
    Case("train/config missing", train("{d}/missing.yaml"), says="missing.yaml"),
    Case("train/domain volume missing", train(), own_domain("missing.h5:raw"), says="missing.h5"),
    Case("train/domain volume not HDF5", train(), own_domain("notes.h5"), says="notes.h5"),
    # --- predict
    Case("predict/out is a folder", predict("{d}/out.h5:affs"), existing_folder("out.h5"), kept="out.h5", says="folder"),
    Case("predict/out under a file", predict("{d}/out/a.h5:affs"), existing_file("out"), kept="out", says="folder"),
    Case("predict/zarr container is a file", predict("{d}/out.zarr/affs"), existing_file("out.zarr"), kept="out.zarr",
         says="folder"),
    Case("predict/zarr array is a file", predict("{d}/out.zarr/affs"), existing_file("out.zarr/affs"),
         kept="out.zarr/affs", says="folder"),
    Case("predict/out read-only", predict("{d}/ro/a.h5:affs"), read_only("ro"), says="read-only"),
    Case("predict/out not writable (/sys)", predict("/sys/neuropil-test.h5:affs"), says="/sys/neuropil-test.h5"),
    Case("predict/full disk", predict("{d}/out.h5:affs"),
         both(lambda i, d, m: write_volume(d / "out.h5:old", np.arange(10)), full_disk_hdf5), kept="out.h5",
         says="no space left"),
    Case("predict/raw missing", predict("{d}/a.h5:affs", raw="{i}/missing.h5:raw"), says="missing.h5"),
    Case("predict/raw not HDF5", predict("{d}/a.h5:affs", raw="{i}/notes.h5"), says="notes.h5"),
    Case("predict/raw is 2-D", predict("{d}/a.h5:affs", "--voxel-size", "20", "10", "10", raw="{i}/flat.h5:x")),
    Case("predict/checkpoint missing", predict("{d}/a.h5:affs", checkpoint="{i}/missing.pt"), says="missing.pt"),
    Case("predict/checkpoint not a checkpoint", predict("{d}/a.h5:affs", checkpoint="{i}/notes.pt"), says="notes.pt"),
    Case("predict/checkpoint without weights", predict("{d}/a.h5:affs", checkpoint="{i}/no-model-state.pt"),
         says="no-model-state.pt"),
    Case("predict/checkpoint without voxel size", predict("{d}/a.h5:affs", checkpoint="{i}/no-voxel-size.pt"),
         says="no-voxel-size.pt"),
    Case("predict/checkpoint config a list", predict("{d}/a.h5:affs", checkpoint="{i}/config-not-a-mapping.pt"),
         says="config-not-a-mapping.pt"),
    Case("predict/checkpoint channels a word", predict("{d}/a.h5:affs", checkpoint="{i}/channels-a-word.pt"),
         says="channels-a-word.pt"),
    Case("predict/checkpoint threshold a word", predict("{d}/a.h5:affs", checkpoint="{i}/threshold-a-word.pt"),
         says="threshold-a-word.pt"),
    Case("predict/unknown device", predict("{d}/a.h5:affs", "--device", "tpu9"), says="tpu9"),
    Case("predict/memory zero", predict("{d}/a.h5:affs", "--memory", "0"), says="--memory"),
    Case("predict/memory too small for the context", predict("{d}/a.h5:affs", "--memory", "1e-6"), says="memory budget"),
    Case("predict/CUDA unavailable", predict("{d}/a.h5:affs", "--device", "cuda"), says="cuda", needs_cpu_only=True),
    # --- segment, in memory
    Case("segment/affinities outside [0, 1]", segment("{i}/affs.h5:outside", "{d}/s.h5:seg", *AT_05),
         existing_file("s.h5"), kept="s.h5", says="[0, 1]"),
    Case("segment/boundary map of raw intensities", segment("{i}/raw.h5:raw", "{d}/s.h5:seg", *AT_05), says="[0, 1]"),
    Case("segment/threshold above 1", segment("{i}/affs.h5:affs", "{d}/s.h5:seg", "--threshold", "1.5"),
         says="threshold"),
    Case("segment/threshold negative", segment("{i}/affs.h5:affs", "{d}/s.h5:seg", "--threshold", "0.3", "-0.5"),
         says="threshold"),
    Case("segment/threshold NaN", segment("{i}/affs.h5:affs", "{d}/s.h5:seg", "--threshold", "nan"), says="threshold"),
    Case("segment/out is a folder", segment("{i}/affs.h5:affs", "{d}/s.h5:seg", *AT_05), existing_folder("s.h5"),
         kept="s.h5", says="folder"),
    Case("segment/out under a file", segment("{i}/affs.h5:affs", "{d}/s/s.h5:seg"), existing_file("s"), kept="s",
         says="folder"),
    Case("segment/one of several outputs is a folder", segment("{i}/affs.h5:affs", "{d}/s.h5", "--threshold", "0.3", "0.6"),
         existing_folder("s_t0.6.h5"), kept="s_t0.6.h5", says="folder"),
    Case("segment/out read-only", segment("{i}/affs.h5:affs", "{d}/ro/s.h5:seg", *AT_05), read_only("ro"),
         says="read-only"),
    Case("segment/full disk", segment("{i}/affs.h5:affs", "{d}/s.h5:seg", *AT_05),
         both(lambda i, d, m: write_volume(d / "s.h5:old", np.arange(10)), full_disk_hdf5), kept="s.h5",
         says="no space left"),
    Case("segment/input missing", segment("{i}/missing.h5:affs", "{d}/s.h5:seg", *AT_05), says="missing.h5"),
    Case("segment/input not HDF5", segment("{i}/notes.h5", "{d}/s.h5:seg", *AT_05), says="notes.h5"),
    Case("segment/input is 2-D", segment("{i}/flat.h5:x", "{d}/s.h5:seg", *AT_05, "--voxel-size", "20", "10", "10")),
    Case("segment/fragments of another shape",
         segment("{i}/affs.h5:affs", "{d}/s.h5:seg", *AT_05, "--fragments", "{i}/flat.h5:x")),
    Case("segment/classifier without bins",
         segment("{i}/boundaries.h5:p", "{d}/s.h5:seg", *AT_05, "--method", "learned", "--model", "{i}/merge-no-bins.npz"),
         says="merge-no-bins.npz"),
    Case("segment/classifier bins a word",
         segment("{i}/boundaries.h5:p", "{d}/s.h5:seg", *AT_05, "--method", "learned", "--model",
                 "{i}/merge-bins-a-word.npz"),
         says="merge-bins-a-word.npz"),
    Case("segment/classifier names a number",
         segment("{i}/boundaries.h5:p", "{d}/s.h5:seg", *AT_05, "--method", "learned", "--model",
                 "{i}/merge-names-a-number.npz"),
         says="merge-names-a-number.npz"),
    # --- segment --block
    Case("segment --block/affinities outside [0, 1]", blockwise("{i}/affs.zarr/outside", "{d}/s.zarr/seg"),
         says="[0, 1]"),
    Case("segment --block/threshold above 1",
         cmd("segment", "{i}/affs.zarr/affs", "{d}/s.zarr/seg", "--threshold", "1.5", *BLOCK),
         says="threshold"),
    Case("segment --block/out not zarr", blockwise("{i}/affs.zarr/affs", "{d}/s.h5:seg"), existing_file("s.h5"),
         kept="s.h5", says="zarr"),
    Case("segment --block/container is a file", blockwise("{i}/affs.zarr/affs", "{d}/s.zarr/seg"),
         existing_file("s.zarr"), kept="s.zarr", says="folder"),
    Case("segment --block/array is a file", blockwise("{i}/affs.zarr/affs", "{d}/s.zarr/seg"),
         existing_file("s.zarr/seg"), kept="s.zarr/seg", says="folder"),
    Case("segment --block/out read-only", blockwise("{i}/affs.zarr/affs", "{d}/ro/s.zarr/seg"), read_only("ro"),
         says="read-only"),
    Case("segment --block/input missing", blockwise("{i}/missing.zarr/affs", "{d}/s.zarr/seg"), says="missing.zarr"),
    Case("segment --block/input with a missing chunk", blockwise("{i}/gap.zarr/affs", "{d}/s.zarr/seg"),
         says="chunk"),
    # --- evaluate
    Case("evaluate/segmentation missing", cmd("evaluate", "{i}/missing.h5:seg", "{i}/gt.h5:gt"), says="missing.h5"),
    Case("evaluate/ground truth not HDF5", cmd("evaluate", "{i}/gt.h5:gt", "{i}/notes.h5"), says="notes.h5"),
    Case("evaluate/shapes differ", cmd("evaluate", "{i}/gt.h5:gt", "{i}/affs.h5:affs"), says="shape"),
    Case("evaluate/mask missing", cmd("evaluate", "{i}/gt.h5:gt", "{i}/gt.h5:gt", "--mask", "{i}/gt.h5:nothing"),
         says="nothing"),
    Case("evaluate/objects zero", cmd("evaluate", "{i}/gt.h5:gt", "{i}/gt.h5:gt", "--objects", "0"), says="--objects"),
    Case("evaluate/missing chunk", cmd("evaluate", "{i}/gap.zarr/gt", "{i}/gt.h5:gt"), says="chunk",
         ),
    # --- agglomeration train
    Case("agglomeration train/no examples", learn(fragments="{i}/fragments.h5:one"), existing_file("m.npz"),
         kept="m.npz", says="example"),
    Case("agglomeration train/boundaries outside [0, 1]", learn("--affinities", "{i}/affs.h5:outside"), says="[0, 1]"),
    Case("agglomeration train/out is a folder", learn(), existing_folder("m.npz"), kept="m.npz", says="folder"),
    Case("agglomeration train/out under a file", learn(out="{d}/m/m.npz"), existing_file("m"), kept="m",
         says="folder"),
    Case("agglomeration train/out read-only", learn(out="{d}/ro/m.npz"), read_only("ro"), says="read-only"),
    Case("agglomeration train/full disk", learn(out="{d}/out/m.npz"), both(existing_file("out/m.npz"), full_disk("out")),
         kept="out/m.npz", says="no space left"),
    Case("agglomeration train/fragments missing", learn(fragments="{i}/missing.h5:frag"), says="missing.h5"),
    Case("agglomeration train/ground truth of another shape", learn(gt="{i}/flat.h5:x"), says="shape"),
    # --- data info
    Case("data info/NaN voxel size, --json", cmd("data", "info", "{i}/nan.h5:x", "--json"), says="voxel_size"),
    Case("data info/address missing", cmd("data", "info", "{i}/missing.h5:x"), says="missing.h5"),
    Case("data info/not HDF5", cmd("data", "info", "{i}/notes.h5", "--json"), says="notes.h5"),
    Case("data info/neither name nor address", cmd("data", "info", "no-such-dataset"), says="no-such-dataset"),
    Case("data info/missing chunk", cmd("data", "info", "{i}/gap.zarr/gt"), says="chunk"),
    # --- data fetch
    Case("data fetch/offline", cmd("data", "fetch", "unreachable"), offline_catalog, says="connect",
         check=part_file_claim_is_true),
    Case("data fetch/dest is a file", cmd("data", "fetch", "unreachable", "--dest", "{d}/dest"),
         both(offline_catalog, existing_file("dest")), kept="dest", says="folder"),
    Case("data fetch/dest read-only", cmd("data", "fetch", "unreachable", "--dest", "{d}/ro/dest"),
         both(offline_catalog, read_only("ro")), says="read-only"),
    Case("data fetch/unknown dataset", cmd("data", "fetch", "no-such-dataset"), says="no-such-dataset"),
    # --- augment preview
    Case("augment preview/out is a folder", cmd("augment", "preview", TINY, "--out", "{d}/grid.png"),
         existing_folder("grid.png"), kept="grid.png", says="folder"),
    Case("augment preview/out under a file", cmd("augment", "preview", TINY, "--out", "{d}/grid/grid.png"),
         existing_file("grid"), kept="grid", says="folder"),
    Case("augment preview/out of an unknown format", cmd("augment", "preview", TINY, "--out", "{d}/grid.txt"),
         says="grid.txt"),
    Case("augment preview/out read-only", cmd("augment", "preview", TINY, "--out", "{d}/ro/grid.png"), read_only("ro"),
         says="read-only"),
    Case("augment preview/probability above 1", cmd("augment", "preview", "{d}/config.yaml", "--out", "{d}/grid.png"),
         train_config(**{"train.augment": {"flip": {"probability": 2}}}), says="probability"),
    Case("augment preview/zero samples", cmd("augment", "preview", TINY, "--out", "{d}/grid.png", "--samples", "0"),
         says="--samples"),
    Case("augment preview/config missing", cmd("augment", "preview", "{d}/missing.yaml", "--out", "{d}/grid.png"),
         says="missing.yaml"),
    # --- models
    Case("models/shipped model without voxel size", cmd("models"), shipped("no-voxel-size.pt"), says="broken.pt",
         ),
    Case("models/shipped model iteration a word", cmd("models", "--json"), shipped("iteration-a-word.pt"),
         says="broken.pt"),
    Case("models/shipped model not a checkpoint", cmd("models"), shipped("notes.pt"), says="broken.pt"),
    Case("models export/out is a folder", cmd("models", "export", "{i}/run/checkpoint.pt", "{d}/m.pt"),
         existing_folder("m.pt"), kept="m.pt", says="folder"),
    Case("models export/out under a file", cmd("models", "export", "{i}/run/checkpoint.pt", "{d}/m/m.pt"),
         existing_file("m"), kept="m", says="folder"),
    Case("models export/full disk", cmd("models", "export", "{i}/run/checkpoint.pt", "{d}/out/m.pt"),
         both(existing_file("out/m.pt"), full_disk("out")), kept="out/m.pt", says="no space left"),
    Case("models export/checkpoint not a checkpoint", cmd("models", "export", "{i}/notes.pt", "{d}/m.pt"),
         says="notes.pt"),
    Case("models export/checkpoint without weights", cmd("models", "export", "{i}/no-model-state.pt", "{d}/m.pt"),
         says="no-model-state.pt"),
    # --- experiment
    Case("experiment --check/zero checkpoint interval", cmd("experiment", "{i}/experiment-zero-interval.yaml", "--check"),
         says="checkpoint_every"),
    Case("experiment --check/negative iteration count", cmd("experiment", "{i}/experiment-negative.yaml", "--check"),
         says="iterations"),
    Case("experiment --check/source missing", cmd("experiment", "{i}/experiment-missing-source.yaml", "--check"),
         says="missing.h5"),
    Case("experiment --check/source not HDF5", cmd("experiment", "{i}/experiment-wrong-kind.yaml", "--check"),
         says="notes.h5"),
    Case("experiment --check/a run configuration", cmd("experiment", TINY, "--check"), says="sources"),
    Case("experiment/out is a file", cmd("experiment", "{i}/experiment.yaml", "--out", "{d}/out"), existing_file("out"),
         kept="out", says="folder"),
    Case("experiment/out read-only", cmd("experiment", "{i}/experiment.yaml", "--out", "{d}/ro/out"), read_only("ro"),
         says="read-only"),
    # --- demo and study
    Case("study/out is a file", cmd("study", "--quick", "--out", "{d}/out"), existing_file("out"), kept="out",
         says="folder"),
    Case("demo/out is a file", cmd("demo", "--quick", "--out", "{d}/out"), existing_file("out"), kept="out",
         says="folder"),
    Case("demo/out under a file", cmd("demo", "--quick", "--out", "{d}/out/inner"), existing_file("out"), kept="out",
         says="folder"),
]
# fmt: on


def _param(case: Case):
    marks = []
    if case.needs_cpu_only and CUDA:
        marks.append(pytest.mark.skip(reason="torch sees a GPU here"))
    return pytest.param(case, marks=marks, id=case.name)


def snapshot(path: Path) -> dict[str, bytes] | None:
    """Every byte of a file or folder (relative name -> content), or None when absent."""
    if path.is_file():
        return {"": path.read_bytes()}
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return None


def leftovers(*folders: Path) -> list[str]:
    return [str(p) for folder in folders for p in folder.rglob("*") if LEFTOVER.search(p.name)]


def error_of(stderr: str) -> list[str]:
    """stderr without the progress logged before the failure (only where logging goes to stderr)."""
    return [line for line in stderr.splitlines() if line.strip() and not PROGRESS.match(line)]


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_outputs_alone(case, inputs, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "case"
    folder.mkdir()
    monkeypatch.chdir(folder)
    if case.setup is not None:
        case.setup(inputs, folder, monkeypatch)
    before = snapshot(folder / case.kept) if case.kept else None
    assert case.kept is None or before is not None
    capsys.readouterr()
    code = main([str(part) for part in case.argv(inputs, folder)])
    monkeypatch.undo()  # the file system and the environment are themselves again
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr, stderr
    lines = error_of(stderr)
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("neuropil: error: ") and stderr.rstrip().endswith(lines[0]), stderr
    if case.says is not None:
        assert case.says.lower() in lines[0].lower(), lines[0]
    if case.check is not None:
        case.check(lines[0], inputs, folder)
    if case.kept is not None:
        assert snapshot(folder / case.kept) == before, f"{case.kept} changed"
    assert leftovers(folder, inputs.folder) == []


def test_the_table_covers_every_command():
    commands = {case.name.split("/")[0] for case in CASES}
    assert commands >= {
        "train", "predict", "segment", "segment --block", "evaluate", "agglomeration train", "data info",
        "data fetch", "augment preview", "models", "models export", "experiment --check", "experiment", "demo", "study",
    }  # fmt: skip


# ----------------------------------------------------------------------------- output paths


def test_output_checks_name_the_file_in_the_way(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    assert check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert check_output_file(tmp_path / "new" / "a.h5") == tmp_path / "new" / "a.h5"
    assert check_output_file(tmp_path / "file") == tmp_path / "file"  # replaced whole when the new one is done
    with pytest.raises(NeuropilError, match=r"file: is a file, where a folder is needed"):
        check_output_folder(tmp_path / "file")
    with pytest.raises(NeuropilError, match=rf"inner: {re.escape(str(tmp_path / 'file'))} is a file"):
        check_output_folder(tmp_path / "file" / "inner")
    with pytest.raises(NeuropilError, match=r"folder: is a folder, where a file is needed"):
        check_output_file(tmp_path / "folder")
    with pytest.raises(NeuropilError, match=r"is a file, where a folder is needed"):
        check_output_file(tmp_path / "file" / "a.png")
    access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kwargs: Path(path) != tmp_path / "folder" and access(path, mode)
    )
    with pytest.raises(
        NeuropilError, match=rf"out.h5: cannot write in {re.escape(str(tmp_path / 'folder'))}: permission denied"
    ):
        check_output_file(tmp_path / "folder" / "out.h5")
    with pytest.raises(NeuropilError, match=r"cannot write in .*: permission denied"):
        check_output_folder(tmp_path / "folder" / "new" / "run")


def test_a_failed_text_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    path.write_text("old")

    def full(self, *args, **kwargs):
        Path.write_bytes(self, b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_a_figure_without_a_suffix_is_saved_as_png_and_a_folder_in_the_way_stays(tmp_path):
    from matplotlib.figure import Figure

    written = save_figure_atomic(Figure(figsize=(1, 1)), tmp_path / "grid")
    assert written.read_bytes().startswith(b"\x89PNG") and sorted(p.name for p in tmp_path.iterdir()) == ["grid"]
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(IsADirectoryError):
        save_figure_atomic(Figure(figsize=(1, 1)), tmp_path / "taken.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid", "taken.png"]


def test_swap_in_keeps_the_old_folder_when_the_new_one_cannot_move_in(tmp_path, monkeypatch):
    final, new = tmp_path / "a.zarr", tmp_path / "a.zarr.partial"
    final.mkdir()
    (final / "chunk").write_text("old")
    new.mkdir()
    (new / "chunk").write_text("new")
    replace = os.replace

    def second_fails(source, target):
        if Path(source) == new:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(source))
        replace(source, target)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(OSError):
        swap_in(new, final)
    monkeypatch.undo()
    assert (final / "chunk").read_text() == "old" and not (tmp_path / "a.zarr.old").exists()
    # a crash between the two renames left the old array aside: it is put back first, then replaced
    os.replace(final, tmp_path / "a.zarr.old")
    swap_in(new, final)
    assert (final / "chunk").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_swap_in_refuses_to_replace_a_file_with_a_folder(tmp_path):
    (tmp_path / "seg").write_text("not an array")
    (tmp_path / "seg.partial").mkdir()
    with pytest.raises(NeuropilError, match="is a file, where a folder is needed"):
        swap_in(tmp_path / "seg.partial", tmp_path / "seg")
    assert (tmp_path / "seg").read_text() == "not an array"


# ----------------------------------------------------------------------------- the boundary


def failing_command(monkeypatch, error: BaseException) -> None:
    """``neuropil evaluate`` raises ``error``."""

    def run(args):
        raise error

    monkeypatch.setattr("neuropil.cli.evaluate.run", run)


def one_error_line(capsys) -> str:
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
    return stderr.strip()


def validation_error():
    from neuropil.model import ModelConfig

    try:
        ModelConfig.model_validate({"depth": "deep"})
    except Exception as error:  # pydantic's ValidationError
        return error
    raise AssertionError("ModelConfig accepted a depth that is a word")


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (NeuropilError("x.h5: no dataset 'y'\n(second line)"), "neuropil: error: x.h5: no dataset 'y' (second line)"),
        (
            OSError(errno.EROFS, "Read-only file system", "/data/out.h5.partial", None, "/data/out.h5"),
            "neuropil: error: read-only file system (/data/out.h5)",
        ),
        (PermissionError(errno.EACCES, "Permission denied", "/data/grid.partial.png"), "neuropil: error: permission denied (/data/grid.png)"),
        (OSError(errno.ENOSPC, "No space left on device", "run/checkpoint.pt.partial"), "neuropil: error: no space left on device (run/checkpoint.pt)"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "m.pt.partial", None, "m.pt"), "neuropil: error: is a folder, where a file is needed (m.pt)"),
        (
            PermissionError(errno.EACCES, "Unable to synchronously create file (unable to open file: name = '/sys/a.h5.partial', errno = 13)"),
            "neuropil: error: permission denied (/sys/a.h5)",
        ),
        (ModuleNotFoundError("No module named 'distributed'", name="distributed"), "neuropil: error: the optional package distributed is not installed (pip install 'neuropil[cluster]')"),
        (ImportError("cannot import name 'SummaryWriter'", name="tensorboard.summary"), "neuropil: error: the optional package tensorboard is not installed (pip install 'neuropil[tensorboard]')"),
        (validation_error(), "neuropil: error: bad value for 'depth': Input should be a valid integer, unable to parse string as an integer (ModelConfig)"),
        (AssertionError("Torch not compiled with CUDA enabled"), "neuropil: error: CUDA is not available: Torch not compiled with CUDA enabled (use device cpu, or install a CUDA build of torch)"),
        (
            RuntimeError("Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a driver"),
            "neuropil: error: CUDA is not available: Found no NVIDIA driver on your system (use device cpu, or install a CUDA build of torch)",
        ),
        (RuntimeError("Invalid device string: 'cuda:x'"), "neuropil: error: unknown torch device 'cuda:x' (cpu, cuda, cuda:N, mps, ...)"),
    ],
    ids=[
        "NeuropilError", "read-only", "permission", "full disk", "is a folder", "h5py's message", "optional package",
        "optional submodule", "pydantic", "torch without CUDA", "no driver", "unknown device",
    ],
)  # fmt: skip
def test_every_expected_failure_is_one_line_and_exit_2(error, line, monkeypatch, capsys):
    failing_command(monkeypatch, error)
    assert main(["evaluate", "a.h5:x", "b.h5:y"]) == 2
    assert one_error_line(capsys) == line


def test_a_file_in_the_way_of_a_folder_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "out").write_text("x")
    failing_command(monkeypatch, NotADirectoryError(errno.ENOTDIR, "Not a directory", str(tmp_path / "out" / "a.h5")))
    assert main(["evaluate", "a.h5:x", "b.h5:y"]) == 2
    assert (
        one_error_line(capsys)
        == f"neuropil: error: {tmp_path / 'out'} is a file, where a folder is needed ({tmp_path / 'out' / 'a.h5'})"
    )


@pytest.mark.parametrize(
    "error",
    [
        ZeroDivisionError("integer modulo by zero"),
        ValueError("bad\nthings"),
        RuntimeError("CUDA error: an illegal memory access"),
    ],
)
def test_an_internal_error_is_one_line_exit_1_and_its_traceback_with_v(error, monkeypatch, capsys):
    failing_command(monkeypatch, error)
    assert main(["evaluate", "a.h5:x", "b.h5:y"]) == 1
    message = " ".join(str(error).split())
    assert one_error_line(capsys) == (
        f"neuropil: internal error: {type(error).__name__}: {message} (run with -v for the traceback)"
    )
    for argv in (["-v", "evaluate", "a.h5:x", "b.h5:y"], ["evaluate", "a.h5:x", "b.h5:y", "-v"]):
        assert main(argv) == 1
        stderr = capsys.readouterr().err
        assert "Traceback (most recent call last)" in stderr and f"{type(error).__name__}: " in stderr
        assert stderr.rstrip().endswith(f"neuropil: internal error: {type(error).__name__}: {message}")


def test_an_import_error_of_a_required_package_is_internal(monkeypatch, capsys):
    failing_command(monkeypatch, ModuleNotFoundError("No module named 'numpy'", name="numpy"))
    assert main(["evaluate", "a.h5:x", "b.h5:y"]) == 1
    assert one_error_line(capsys).startswith("neuropil: internal error: ModuleNotFoundError: No module named 'numpy'")


def test_a_reader_of_stdout_that_went_away_ends_the_command_quietly(monkeypatch, capsys):
    failing_command(monkeypatch, BrokenPipeError(errno.EPIPE, "Broken pipe"))
    assert main(["evaluate", "a.h5:x", "b.h5:y"]) == 1
    assert capsys.readouterr().err == ""


def test_ctrl_c_exits_130(monkeypatch, capsys):
    failing_command(monkeypatch, KeyboardInterrupt())
    assert main(["evaluate", "a.h5:x", "b.h5:y"]) == 130
    assert one_error_line(capsys) == "neuropil: interrupted"


def test_the_optional_packages_are_the_extras_of_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for package, extra in cli.OPTIONAL_PACKAGES.items():
        assert any(re.match(rf"{package}\b", requirement) for requirement in extras[extra]), (package, extra)


def test_on_stderr_the_error_is_the_last_line_and_later_log_messages_are_muted(inputs, tmp_path):
    """As a user runs it: progress logged before the failure, the error line once, nothing after it."""
    script = (
        "import logging, sys\n"
        "from neuropil.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "logging.getLogger('asyncio').error('Task exception was never retrieved')\n"
        "sys.exit(code)\n"
    )
    argv = ["segment", inputs / "affs.h5:affs", str(tmp_path / "s.h5:seg"), "--fragments", inputs / "missing.h5:f"]
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[:-1] and all(PROGRESS.match(line) for line in lines[:-1]), done.stderr  # the threshold chosen
    assert lines[-1].startswith("neuropil: error: ") and "missing.h5" in lines[-1]
    assert "Task exception" not in done.stderr


# ----------------------------------------------------------------------------- properties

ADDRESS_PARTS = st.sampled_from(
    ["a.h5", "b.hdf5", "c.HDF", ":", "/", "key", "d.zarr", "e.n5", "f.tif", "g.TIFF", "folder", "..", ".", " ", "\\",
     "\x00", "é", ".zarr", ".h5:", "::", "//"]
)  # fmt: skip


@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=40), st.lists(ADDRESS_PARTS, max_size=8).map("".join)))
def test_parsing_any_address_succeeds_or_says_why(text):
    try:
        address = parse_address(text)
    except NeuropilError as error:
        assert "\n" not in str(error)
        return
    assert address.kind in ("hdf5", "zarr", "tiff", "slices")
    assert parse_address(str(address)).kind == address.kind


RUN_KEYS = ["target_voxel_size", "model", "train", "domains", "validation_width", "base_channels", "depth",
            "iterations", "patch_shape", "batch_size", "learning_rate", "device", "augment", "synthetic", "dataset",
            "raw", "labels", "shape", "seed", "volumes", "weight", "offsets", "thresholds", "flip", "probability"]  # fmt: skip
VALUES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12), st.sampled_from(["cremi-like", "cpu", "cuda", "fib-gala", "nan", "-1", "1e309"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.one_of(st.sampled_from(RUN_KEYS), st.text(max_size=6)), children, max_size=4)
    ),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    content=st.one_of(
        VALUES,
        st.fixed_dictionaries({"domains": VALUES}, optional={key: VALUES for key in ("model", "train", "target_voxel_size")}),
        st.fixed_dictionaries(
            {"domains": st.just({"s": {"synthetic": "cremi-like"}})},
            optional={"model": st.dictionaries(st.sampled_from(RUN_KEYS), VALUES, max_size=3),
                      "train": st.dictionaries(st.sampled_from(RUN_KEYS), VALUES, max_size=3)},
        ),
    )
)  # fmt: skip
def test_any_configuration_value_loads_or_is_a_neuropil_error(content):
    try:
        RunConfig.parse(content, where="fuzz.yaml")
    except NeuropilError as error:
        assert str(error).startswith("fuzz.yaml") and "\n" not in str(error)


YAML_TEXT = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(["domains:", " s:", "  synthetic: cremi-like", "train:", "  iterations: ", "-3", "[", "]",
                              "{", "}", ": ", "- ", "!!python/object:os.system", "&a", "*a", "\t", "\n", "nan", ".inf",
                              "'", '"', "%YAML 1.1", "---", "...", "\ufeff", "model: {base_channels: 0}"]),
             max_size=12).map("".join),
    # a valid file with a line added: often still valid, else one bad key
    st.tuples(st.sampled_from(RUN_KEYS), VALUES).map(lambda kv: yaml.safe_dump(tiny_run()) + yaml.safe_dump({kv[0]: kv[1]})),
    VALUES.map(yaml.safe_dump),
)  # fmt: skip


@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=YAML_TEXT)
def test_any_configuration_file_loads_or_is_a_neuropil_error(text, tmp_path):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        RunConfig.load(path)
    except NeuropilError as error:
        assert "\n" not in str(error)
