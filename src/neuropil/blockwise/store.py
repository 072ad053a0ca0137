"""Blockwise outputs: zarr arrays written chunk by chunk under a temporary name, with the job's work folder beside them."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from neuropil.errors import NeuropilError
from neuropil.files import swap_in
from neuropil.io import parse_address

logger = logging.getLogger(__name__)


WORK_SUFFIX = ".work"
"""The work folder of the job writing ``dir.zarr/key`` is ``dir.zarr/key.work``."""


class Output(NamedTuple):
    """A zarr array being written blockwise: its final address and its temporary array."""

    container: Path
    key: str

    @property
    def final(self) -> Path:
        return self.container / self.key

    @property
    def partial(self) -> Path:
        return self.container / f"{self.key}.partial"


def zarr_output(address: str) -> Output:

    where = parse_address(address)
    if where.kind != "zarr" or where.is_n5:
        raise NeuropilError(f"{address}: blockwise output must be a zarr array (dir.zarr/key), written chunk by chunk")
    return Output(where.path, where.key or "data")


def work_folder(output: Output) -> Path:
    return output.container / f"{output.key}{WORK_SUFFIX}"


def prepare_output(output: Output, settings: dict, shape: tuple[int, ...], chunks: tuple[int, ...], dtype) -> bool:
    """Create the temporary array, or keep it (and the finished blocks) when the job's settings are unchanged.

    Returns whether the earlier state was kept.
    """
    import zarr

    work = work_folder(output)
    stored = work / "settings.json"
    same = stored.is_file() and json.loads(stored.read_text()) == settings and output.partial.is_dir()
    if same:
        return True
    if work.exists():
        logger.info("%s: settings changed, starting over", output.final)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(output.partial, ignore_errors=True)
    root = zarr.open_group(str(output.container), mode="a")
    root.create_array(
        output.partial.name,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=0,
        overwrite=True,
        config={"write_empty_chunks": True},
    )
    work.mkdir(parents=True)
    temporary = stored.with_name(stored.name + ".partial")
    temporary.write_text(json.dumps(settings))
    os.replace(temporary, stored)
    return False


def finish_output(output: Output, voxel_size: Sequence[float] | None, attributes: dict | None = None) -> None:
    """Store the metadata and move the finished array into place."""
    import zarr

    array = zarr.open_array(str(output.partial), mode="r+")
    if voxel_size is not None:
        array.attrs["resolution"] = [float(v) for v in voxel_size]
    for name, value in (attributes or {}).items():
        array.attrs[name] = value
    swap_in(output.partial, output.final)


def open_array(path: str):
    import zarr

    return zarr.open_array(path, mode="r+")


def job_settings(**values) -> dict:
    """JSON-normal settings (tuples become lists), as read back from ``settings.json``."""
    return json.loads(json.dumps(values))
