"""docs/tutorial.md runs as written: every command of it, in order, in one folder, on the real fib-gala data.

The tutorial's ```console blocks hold commands (lines starting with ``$ ``, continued by a
trailing backslash) and example output (every other line, never asserted: summary lines
change). Its ```python and ```yaml blocks are files the reader saves; each starts with a
comment naming the file (``# NAME.py: ...``), and is written at its place in the sequence.
Commands run with bash (``$NEUROPIL_DATA`` expanded as in the reader's shell), with
``neuropil`` and ``python`` this interpreter running this checkout. ``neuropil view``
serves until Ctrl-C: it is started, its printed URL fetched, then interrupted.

What the commands wrote is checked afterwards: shapes, dtypes, voxel sizes, the stored
threshold, segment counts falling with the threshold, and scores below sane bounds.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from processes import serve_then_interrupt

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
SOURCE = str(Path(__file__).resolve().parents[1] / "src")
MODEL = "generalist-25x13x13"
URL = re.compile(r"^http://127\.0\.0\.1:\d+/v/[0-9a-f]+/$")

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
FILE_HEADER = re.compile(r"^# ([\w.-]+\.(?:py|yaml))\b")


@dataclass(frozen=True)
class Command:
    text: str


@dataclass(frozen=True)
class File:
    name: str
    content: str


def tutorial_steps(markdown: str) -> list[Command | File]:
    """The commands and files of a tutorial's fenced blocks, in order.

    Raises
    ------
    ValueError
        A python or yaml block that does not name its file, a continuation line at the end
        of a block, or a fenced block of another language (it would be skipped unseen).
    """
    steps: list[Command | File] = []
    for match in FENCE.finditer(markdown):
        language, body = match.group(1), match.group(2)
        if language == "console":
            steps.extend(_commands(body))
        elif language in ("python", "yaml"):
            header = FILE_HEADER.match(body)
            if header is None:
                raise ValueError(f"a {language} block must start with '# NAME.{language[:2]}...': {body[:60]!r}")
            steps.append(File(header.group(1), body))
        else:
            raise ValueError(f"fenced block of language {language!r}: use console, python or yaml")
    return steps


def _commands(body: str) -> list[Command]:
    commands, current = [], None
    for line in body.splitlines():
        if current is None:
            if not line.startswith("$ "):
                continue  # example output
            current = line[2:]
        else:
            current += "\n" + line
        if current.endswith("\\"):
            continue
        commands.append(Command(current))
        current = None
    if current is not None:
        raise ValueError(f"command continued past the end of its block: {current!r}")
    return commands


def test_tutorial_steps_are_commands_and_named_files():
    markdown = (
        "text\n```console\n$ neuropil data list\nname here\n$ neuropil predict A \\\n    B C\noutput\n```\n"
        "```yaml\n# run.yaml: a run\nkey: 1\n```\n```python\n# job.py\nprint(1)\n```\n"
    )
    assert tutorial_steps(markdown) == [
        Command("neuropil data list"),
        Command("neuropil predict A \\\n    B C"),
        File("run.yaml", "# run.yaml: a run\nkey: 1\n"),
        File("job.py", "# job.py\nprint(1)\n"),
    ]
    with pytest.raises(ValueError, match="must start with"):
        tutorial_steps("```python\nprint(1)\n```\n")
    with pytest.raises(ValueError, match="language 'bash'"):
        tutorial_steps("```bash\nls\n```\n")
    with pytest.raises(ValueError, match="past the end"):
        tutorial_steps("```console\n$ ls \\\n```\n")


def test_tutorial_has_every_stage():
    commands = [step.text for step in tutorial_steps(TUTORIAL.read_text()) if isinstance(step, Command)]
    for stage in ("data info", "models", "predict", "segment", "evaluate", "view", "train", "--block"):
        assert any(stage in command for command in commands), stage


def _tools(folder: Path) -> Path:
    """``neuropil`` and ``python`` for the commands: this interpreter, this checkout's source."""
    folder.mkdir()
    for name, line in (
        ("neuropil", f'exec "{sys.executable}" -m neuropil "$@"'),
        ("python", f'exec "{sys.executable}" "$@"'),
    ):
        path = folder / name
        path.write_text(f"#!/bin/sh\n{line}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return folder


def _view(command: str, cwd: Path, env: dict[str, str]) -> None:
    """Start ``neuropil view``, fetch the URL it prints, stop it with Ctrl-C (SIGINT): exit code 130."""
    served = serve_then_interrupt(["bash", "-c", f"exec {command}"], env=env, cwd=cwd, url=URL)
    assert "<html" in served.page.lower()
    assert served.returncode == 130, (command, served.stderr)


def _run(command: str, cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"$ {command}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_tutorial_runs_as_written(shared_data, tmp_path):
    from neuropil.data.resample import resampled_shape
    from neuropil.evaluate import evaluate
    from neuropil.io import open_volume, read_volume
    from neuropil.pretrained import describe

    if not (shared_data / "fib-gala").is_dir():
        pytest.skip(f"fib-gala not found in {shared_data}")
    work = tmp_path / "work"
    work.mkdir()
    tools = _tools(tmp_path / "bin")
    env = {
        **os.environ,
        "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(p for p in (SOURCE, os.environ.get("PYTHONPATH")) if p),
        "NEUROPIL_DATA": str(shared_data),
    }
    env.pop("NEUROPIL_CATALOG", None)

    for step in tutorial_steps(TUTORIAL.read_text()):
        if isinstance(step, File):
            (work / step.name).write_text(step.content)
        elif step.text.startswith("neuropil view "):
            _view(step.text, work, env)
        else:
            _run(step.text, work, env)

    # the model is the one the tutorial describes
    model = describe(MODEL)
    assert model["merge_threshold"] == 0.7 and model["non_commercial"] and model["channels"] == 3
    model_voxel_size = tuple(model["voxel_size"])
    with open_volume(work / "test-gt.lzf.h5") as volume:
        gt_shape = volume.shape
    labels = read_volume(work / "test-gt.lzf.h5")
    grid = resampled_shape(gt_shape, (10, 10, 10), model_voxel_size)

    def affinities(address: str) -> np.ndarray:
        with open_volume(work / address) as volume:
            assert volume.voxel_size == model_voxel_size and volume.shape == (3, *grid), address
            assert volume.attributes["neuropil"]["merge_threshold"] == 0.7, address
            values = volume.read()
        assert values.dtype == np.float32 and 0.0 <= values.min() and values.max() <= 1.0, address
        return values

    def segmentation(address: str, *, shape=grid, voxel_size=model_voxel_size) -> np.ndarray:
        with open_volume(work / address) as volume:
            assert volume.voxel_size == voxel_size and volume.shape == shape, address
            ids = volume.read()
        assert ids.dtype == np.uint64, address
        return ids

    def count(ids: np.ndarray) -> int:
        return len(np.unique(ids[ids > 0]))

    # 3-4: affinities at the model's grid; segments at its calibrated threshold, fewer at higher ones
    in_memory = affinities("affs.zarr/affinities")
    calibrated = segmentation("seg.zarr/segmentation")
    sweep = {t: segmentation(f"seg.zarr/sweep_t{t}") for t in ("0.5", "0.7", "0.9")}
    assert np.array_equal(sweep["0.7"], calibrated)
    assert count(sweep["0.5"]) >= count(sweep["0.7"]) >= count(sweep["0.9"])
    assert count(sweep["0.5"]) > count(sweep["0.9"]) > 5
    assert 10 < count(calibrated) < 2000

    # 5: scored at the ground truth's own grid; 0.9 merges more than the calibrated 0.7
    scores = {
        name: evaluate(segmentation(f"seg-10nm.zarr/{name}", shape=gt_shape, voxel_size=(10.0, 10.0, 10.0)), labels)
        for name in ("segmentation", "sweep_t0.5", "sweep_t0.7", "sweep_t0.9")
    }
    assert scores["segmentation"].arand < 0.15 and scores["segmentation"].voi < 1.5, scores["segmentation"]
    assert scores["sweep_t0.9"].voi_merge > scores["sweep_t0.7"].voi_merge, scores
    assert scores["sweep_t0.5"].voi_split > scores["sweep_t0.7"].voi_split, scores

    # 7: blockwise affinities equal the in-memory ones; the blockwise segmentation is close
    np.testing.assert_allclose(affinities("blocks.zarr/affinities"), in_memory, atol=1e-6)
    blockwise = segmentation("blocks.zarr/segmentation")
    assert count(blockwise) > 10
    assert evaluate(blockwise, read_volume(work / "seg.zarr/segmentation")).arand < 0.2

    # 8: a run folder with what the tutorial lists, the generalist's network fine-tuned: still close to it
    for name in ("config.yaml", "checkpoint.pt", "best.pt", "log.csv", "validation.csv"):
        assert (work / "runs" / "mine" / name).is_file(), name
    tuned = describe(work / "runs" / "mine" / "checkpoint.pt")
    assert tuned["base_channels"] == model["base_channels"] and tuned["voxel_size"] == model["voxel_size"]
    mine = segmentation("seg-10nm.zarr/mine", shape=gt_shape, voxel_size=(10.0, 10.0, 10.0))
    assert evaluate(mine, labels).arand < 0.3, evaluate(mine, labels)
