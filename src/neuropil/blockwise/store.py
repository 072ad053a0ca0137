"""Blockwise outputs: zarr arrays written chunk by chunk in the job's work folder, moved into place when done.

Everything a job keeps to resume is in its work folder, ``dir.zarr/key.work`` (a zarr
group): the settings it was started with, one record per finished block, the array being
written (``dir.zarr/key.work/array``, marked unfinished) and each pass's small results.
Small files are written whole or not at all (:func:`replacing`), so a failure, a full disk
included, leaves no temporary file; the work folder itself stays when some block was
finished (the next run resumes from it) and is removed when none was
(:func:`discard_if_nothing_done`). The finished array is marked complete
(:data:`~neuropil.io.backend.COMPLETE_ATTRIBUTE`) and moved to ``dir.zarr/key``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from neuropil.errors import NeuropilError
from neuropil.files import swap_in, write_text_atomic
from neuropil.io import parse_address
from neuropil.io.backend import COMPLETE_ATTRIBUTE

logger = logging.getLogger(__name__)


WORK_SUFFIX = ".work"
"""The work folder of the job writing ``dir.zarr/key`` is ``dir.zarr/key.work``."""
SETTINGS = "settings.json"
"""The job's settings in its work folder; a run with other settings starts over."""


class Output(NamedTuple):
    """A zarr array being written blockwise: its final address and the array being written."""

    container: Path
    key: str

    @property
    def final(self) -> Path:
        return self.container / self.key

    @property
    def partial(self) -> Path:
        """The array being written, in the work folder (marked unfinished until :func:`finish_output`)."""
        return work_folder(self) / "array"


def zarr_output(address: str) -> Output:

    where = parse_address(address)
    if where.kind != "zarr" or where.is_n5:
        raise NeuropilError(f"{address}: blockwise output must be a zarr array (dir.zarr/key), written chunk by chunk")
    return Output(where.path, where.key or "data")


def work_folder(output: Output) -> Path:
    return output.container / f"{output.key}{WORK_SUFFIX}"


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` (same suffix) to write to: moved to ``path`` if the block ends normally.

    Removed on any failure, so neither ``path`` nor a temporary file is ever half-written.
    """
    temporary = path.with_name(f"{path.stem}.partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def prepare_output(output: Output, settings: dict, shape: tuple[int, ...], chunks: tuple[int, ...], dtype) -> bool:
    """Create the array being written, or keep it (and the finished blocks) when the job's settings are unchanged.

    Returns whether the earlier state was kept.
    """
    import zarr

    work = work_folder(output)
    stored = work / SETTINGS
    same = stored.is_file() and json.loads(stored.read_text()) == settings and output.partial.is_dir()
    if same:
        return True
    if work.exists():
        logger.info("%s: settings changed, starting over", output.final)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(output.container / f"{output.key}.partial", ignore_errors=True)  # where earlier versions wrote
    root = zarr.open_group(str(output.container), mode="a")
    # a zarr group, so that the array being written has an address (dir.zarr/key.work/array)
    group = root.require_group(f"{output.key}{WORK_SUFFIX}")
    group.create_array(
        output.partial.name,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=0,
        attributes={COMPLETE_ATTRIBUTE: False},
        config={"write_empty_chunks": True},
    )
    write_text_atomic(stored, json.dumps(settings))  # last: settings on disk mean the array is there
    return False


def finish_output(output: Output, voxel_size: Sequence[float] | None, attributes: dict | None = None) -> None:
    """Store the metadata, mark the array complete and move it into place."""
    import zarr

    # a worker stopped while writing a chunk can leave zarr's temporary file of it
    for folder, _, names in os.walk(output.partial):
        for name in names:
            if name.endswith(".partial"):
                os.unlink(os.path.join(folder, name))
    array = zarr.open_array(str(output.partial), mode="r+")
    if voxel_size is not None:
        array.attrs["resolution"] = [float(v) for v in voxel_size]
    for name, value in (attributes or {}).items():
        array.attrs[name] = value
    array.attrs[COMPLETE_ATTRIBUTE] = True
    swap_in(output.partial, output.final)


def discard_if_nothing_done(outputs: Sequence[Output]) -> None:
    """Remove the work folders of a failed job that finished no block: nothing is left to resume."""
    records = work_folder(outputs[0]).glob("*/*.json")  # one folder of block records per pass
    if any(path.name != "zarr.json" for path in records):
        return
    for output in outputs:
        shutil.rmtree(work_folder(output), ignore_errors=True)


def open_array(path: str):
    import zarr

    return zarr.open_array(path, mode="r+")


def write_region(path: str, region: tuple[slice, ...], values) -> None:
    """Write ``values`` into ``region`` of the zarr array at ``path``.

    After a failed write (a full disk), zarr's tasks for the other chunks are waited for
    (:func:`neuropil.io.zarr.settle_abandoned_tasks`), so none is still writing when the
    block runs again and none is reported when the worker exits.
    """
    from neuropil.io.zarr import settle_abandoned_tasks

    try:
        open_array(path)[region] = values
    except BaseException:
        settle_abandoned_tasks()
        raise


def job_settings(**values) -> dict:
    """JSON-normal settings (tuples become lists), as read back from ``settings.json``."""
    return json.loads(json.dumps(values))
