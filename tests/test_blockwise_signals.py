"""Blockwise jobs stopped by signals or failures: no worker left behind, no temporary file, an exact resume."""

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

import neuropil.checkpoint as checkpoint_module
from neuropil.blockwise import segment as blockwise_segment
from neuropil.blockwise import segment_blockwise
from neuropil.blockwise.blocks import stopping_on_signals
from neuropil.checkpoint import save_checkpoint
from neuropil.io import read_volume, write_volume
from neuropil.model import ModelConfig, UNet3D
from processes import processes_with

SHAPE = (32, 96, 96)
BLOCK = ("8", "32", "32")  # 4 x 3 x 3 blocks


def workers(token: str) -> list[int]:
    """The worker processes (multiprocessing's spawned children) among :func:`processes_with`."""
    found = []
    for pid in processes_with(token):
        try:
            if b"--multiprocessing-fork" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def wait_until(condition, seconds: float, child=None) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        if child is not None and child.poll() is not None:
            return False
        time.sleep(0.02)
    return condition()


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(arguments: list[str], token: str) -> subprocess.Popen:
    """The command in a process group of its own, as a shell starts a job.

    With SIGINT at its default action: a test run from a background job (``cmd &``, nohup)
    inherits SIGINT ignored, and a child inheriting that never sees Ctrl-C.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "neuropil", *arguments],
        env={**os.environ, "NEUROPIL_TEST_RUN": token},
        start_new_session=True,
        preexec_fn=default_sigint,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished_blocks(work: Path, stage: str) -> list[Path]:
    return list((work / stage).glob("*.json"))


@pytest.fixture(scope="module")
def affinities(tmp_path_factory) -> str:
    values = np.random.default_rng(0).random((3, *SHAPE)).astype(np.float32)
    address = f"{tmp_path_factory.mktemp('input') / 'in.zarr'}/affinities"
    write_volume(address, values, voxel_size=(25.0, 13.0, 13.0))
    return address


@pytest.fixture(scope="module")
def uninterrupted(affinities, tmp_path_factory):
    """The segmentation of ``affinities`` by a run never stopped."""
    out = f"{tmp_path_factory.mktemp('uninterrupted') / 'out.zarr'}/seg"
    segment_blockwise(affinities, [out], block_shape=tuple(map(int, BLOCK)), scheduler="synchronous", progress=False)
    return read_volume(out)


def segment_arguments(source: str, out: str) -> list[str]:
    return ["segment", source, out, "--block", *BLOCK, "--scheduler", "processes", "--workers", "2", "--no-progress"]


pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds processes through /proc")


def test_sigkill_of_blockwise_segmentation_leaves_no_worker(tmp_path, affinities):
    token = uuid.uuid4().hex
    out = tmp_path / "out.zarr"
    child = start(segment_arguments(affinities, f"{out}/seg"), token)
    try:
        # workers exist and are busy: they have finished a block of the first pass
        assert wait_until(lambda: finished_blocks(out / "seg.work", "watershed"), 60, child), child.communicate()[1]
        assert len(workers(token)) == 2
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert wait_until(lambda: not processes_with(token), 10), processes_with(token)


def test_sigkill_of_blockwise_prediction_leaves_no_worker(tmp_path):
    torch.manual_seed(0)
    model = UNet3D(ModelConfig(base_channels=2, depth=2, voxel_size=(20.0, 10.0, 10.0)))
    checkpoint = tmp_path / "checkpoint.pt"
    save_checkpoint(
        checkpoint, {"model_config": model.config.model_dump(mode="json"), "model_state": model.state_dict()}
    )
    raw = np.random.default_rng(1).integers(0, 255, size=(32, 128, 128), dtype=np.uint8)
    write_volume(f"{tmp_path / 'raw.h5'}:raw", raw, voxel_size=(20, 10, 10))
    token = uuid.uuid4().hex
    out = tmp_path / "affs.zarr"
    arguments = ["predict", str(checkpoint), f"{tmp_path / 'raw.h5'}:raw", f"{out}/affs", "--block", "8", "32", "32"]
    child = start([*arguments, "--scheduler", "processes", "--workers", "2", "--no-progress"], token)
    try:
        # killed as soon as both workers exist, perhaps before they have started their first block
        assert wait_until(lambda: len(workers(token)) == 2, 60, child), child.communicate()[1]
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert wait_until(lambda: not processes_with(token), 10), processes_with(token)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_stop_cleanly_and_a_rerun_resumes_to_the_same_output(
    tmp_path, affinities, uninterrupted, monkeypatch, signum, code
):
    token = uuid.uuid4().hex
    out = tmp_path / "out.zarr"
    child = start(segment_arguments(affinities, f"{out}/seg"), token)
    try:
        assert wait_until(lambda: finished_blocks(out / "seg.work", "watershed"), 60, child), child.communicate()[1]
        # to the whole job, workers included, as Ctrl-C in a terminal and batch systems (scancel) send them
        os.killpg(child.pid, signum)
        _, error = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == code, error
    assert "run again to resume" in error and "Traceback" not in error
    assert wait_until(lambda: not processes_with(token), 10), processes_with(token)  # the workers were stopped
    done = len(finished_blocks(out / "seg.work", "watershed"))
    assert done >= 1 and not (out / "seg").exists()
    # (a worker stopped while zarr wrote a chunk may leave zarr's temporary file of it in the arrays being
    # written; the rerun removes those)
    arrays = (out / "seg.work" / "array", out / "seg.work" / "fragments.zarr")
    assert not [p for p in out.rglob("*.partial*") if not any(a in p.parents for a in arrays)]

    calls = []
    original = blockwise_segment._watershed_block

    def counted(block, **options):
        calls.append(block.index)
        return original(block, **options)

    monkeypatch.setattr(blockwise_segment, "_watershed_block", counted)
    segment_blockwise(
        affinities, [f"{out}/seg"], block_shape=tuple(map(int, BLOCK)), scheduler="synchronous", progress=False
    )
    assert len(calls) == 36 - done  # the finished blocks were not done again
    np.testing.assert_array_equal(read_volume(f"{out}/seg"), uninterrupted)
    assert sorted(p.name for p in out.iterdir()) == ["seg", "zarr.json"]


def test_stopping_on_signals_turns_sigterm_into_exit_143_and_restores_the_handler(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as raised, stopping_on_signals(tmp_path):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert raised.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is before


WATCHED_WORKER = """
import os, subprocess, sys
# a worker whose parent (this process) exits at once: it must notice and go too
watch = "import sys; from neuropil.blockwise.blocks import _watch_parent; _watch_parent(int(sys.argv[1]))"
subprocess.Popen([sys.executable, "-c", watch, str(os.getpid())], stdout=subprocess.DEVNULL)
os._exit(0)
"""


def test_without_pdeathsig_a_worker_watches_its_parent_and_exits_when_it_is_gone():
    token = uuid.uuid4().hex
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WATCHED_WORKER)],
        env={**os.environ, "NEUROPIL_TEST_RUN": token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert wait_until(lambda: not processes_with(token), 10), processes_with(token)


# ----------------------------------------------------------------------------- full disk


def full_disk() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_save_checkpoint_on_a_full_disk_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch, failing):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"weights": torch.zeros(10)})
    before = path.read_bytes()
    real_open = open

    class FullDisk:
        """A file that takes the first 100 bytes, then reports a full disk."""

        def __init__(self, *args):
            self.file = real_open(*args)

        def write(self, data):
            self.file.write(bytes(data)[:100])
            self.file.flush()
            raise full_disk()

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    def fails(*args, **kwargs):
        raise full_disk()

    if failing == "write":
        monkeypatch.setattr(checkpoint_module, "open", FullDisk, raising=False)
    else:
        monkeypatch.setattr(checkpoint_module.os, failing, fails)
    with pytest.raises(OSError) as raised:
        save_checkpoint(path, {"weights": torch.ones(10_000)})
    monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_blockwise_writes_on_a_full_disk_leave_no_temporary_file_and_resume(tmp_path, affinities, monkeypatch):
    out = f"{tmp_path / 'out.zarr'}/seg"
    options = dict(block_shape=tuple(map(int, BLOCK)), scheduler="synchronous", progress=False)
    segment_blockwise(affinities, [out], thresholds=[0.4], **options)
    earlier = digest(tmp_path / "out.zarr" / "seg")

    def temporaries() -> list[Path]:
        return [p for p in (tmp_path / "out.zarr").rglob("*") if ".partial" in p.name]

    # the disk fills while a block's table of contacts is written (after 5 tables)
    real_savez = np.savez
    written = []

    def savez(path, **arrays):
        if len(written) == 5:
            Path(path).write_bytes(b"half a table")
            raise full_disk()
        written.append(path)
        real_savez(path, **arrays)

    monkeypatch.setattr(np, "savez", savez)
    with pytest.raises(OSError) as raised:
        segment_blockwise(affinities, [out], thresholds=[0.5], **options)
    monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC
    assert not temporaries()
    assert digest(tmp_path / "out.zarr" / "seg") == earlier  # the earlier output is as it was

    # then while a block of the last pass is recorded as done
    real_write_text = Path.write_text

    def write_text(self, text, *args, **kwargs):
        if self.parent.name == "relabel" and len(list(self.parent.glob("*.json"))) == 3:
            real_write_text(self, text[:5], *args, **kwargs)
            raise full_disk()
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(OSError):
        segment_blockwise(affinities, [out], thresholds=[0.5], **options)
    monkeypatch.undo()
    assert not temporaries()
    assert digest(tmp_path / "out.zarr" / "seg") == earlier
    # a worker killed while zarr wrote a chunk leaves zarr's temporary file of it in the array being written
    stray = tmp_path / "out.zarr" / "seg.work" / "array" / "c" / "0" / "0" / "0.5d1f.partial"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half a chunk")

    segment_blockwise(affinities, [out], thresholds=[0.5], **options)  # resumes
    segment_blockwise(affinities, [f"{tmp_path / 'fresh.zarr'}/seg"], thresholds=[0.5], **options)
    np.testing.assert_array_equal(read_volume(out), read_volume(f"{tmp_path / 'fresh.zarr'}/seg"))
    assert not temporaries()
    assert sorted(p.name for p in (tmp_path / "out.zarr").iterdir()) == ["seg", "zarr.json"]
