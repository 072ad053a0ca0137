"""Blocks of a volume and the one block iterator: each block's task runs once, on Dask, and is recorded so a job resumes."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuropil.errors import NeuropilError

logger = logging.getLogger(__name__)


DEFAULT_BLOCK_SHAPE = (64, 256, 256)


@dataclass(frozen=True)
class Block:
    """One block of a volume: the region it writes, and its place in the grid."""

    index: tuple[int, ...]
    """Position in the block grid."""
    write: tuple[slice, ...]
    """The voxels the block owns (its output region)."""

    @property
    def name(self) -> str:
        return "_".join(str(i) for i in self.index)

    def read(self, context: Sequence[int] | Sequence[tuple[int, int]], shape: Sequence[int]) -> tuple[slice, ...]:
        """The write region grown by ``context`` voxels on each side (or ``(low, high)`` per axis), clipped to ``shape``."""
        region = []
        for write, grow, size in zip(self.write, context, shape):
            low, high = grow if isinstance(grow, tuple) else (grow, grow)
            region.append(slice(max(write.start - low, 0), min(write.stop + high, size)))
        return tuple(region)


def blocks(shape: Sequence[int], block_shape: Sequence[int]) -> list[Block]:
    """The blocks of ``block_shape`` that tile a volume of ``shape`` (the last ones clipped to it)."""
    if len(block_shape) != len(shape) or any(int(b) < 1 for b in block_shape):
        raise NeuropilError(f"block shape needs {len(shape)} positive values, got {tuple(block_shape)}")
    grid = [range(math.ceil(s / b)) for s, b in zip(shape, block_shape)]
    return [
        Block(index, tuple(slice(i * b, min((i + 1) * b, s)) for i, b, s in zip(index, block_shape, shape)))
        for index in itertools.product(*grid)
    ]


def run_blocks(
    function: Callable[[Block], Any],
    todo: Sequence[Block],
    work: Path,
    *,
    description: str,
    scheduler: str | None = None,
    num_workers: int | None = None,
    pool=None,
    progress: bool = True,
) -> dict[tuple[int, ...], Any]:
    """Run ``function`` on every block not yet recorded as done in ``work``, with Dask.

    ``function(block)`` returns a JSON-serialisable result; it is written to
    ``work/<block name>.json`` (atomically) once the block is done, and a later run
    skips that block and reads its result back.

    Parameters
    ----------
    function : callable
        Picklable (a module-level function or a ``functools.partial`` of one) for
        process or cluster schedulers.
    todo : sequence of Block
    work : path of the folder recording finished blocks
    description : str
        Progress bar label.
    scheduler : {"threads", "processes", "synchronous"}, optional
        Dask scheduler; None uses a ``dask.distributed`` client if one is running,
        else threads.
    num_workers : int, optional
        Threads or processes of a local scheduler (default: Dask's, the CPU count).
    pool : concurrent.futures.Executor, optional
        The workers of a local scheduler, kept across several calls (see :func:`worker_pool`).

    Returns
    -------
    dict
        Each block's result, by block index.
    """
    import dask
    from dask.callbacks import Callback
    from tqdm.auto import tqdm

    work.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[int, ...], Any] = {}
    pending = []
    for block in todo:
        record = work / f"{block.name}.json"
        if record.is_file():
            results[block.index] = json.loads(record.read_text())["result"]
        else:
            pending.append(block)
    if len(results):
        logger.info("%s: %d of %d blocks already done", description, len(results), len(todo))
    tasks = [
        dask.delayed(_run_and_record, pure=False)(
            function, block, str(work), dask_key_name=f"{description}-{block.name}"
        )
        for block in pending
    ]
    bar = tqdm(total=len(todo), initial=len(results), desc=description, unit="block", disable=not progress)
    keys = {task.key for task in tasks}

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if key in keys:
                bar.update(1)

    options: dict[str, Any] = {}
    chosen = scheduler or active_client() or "threads"
    options["scheduler"] = chosen
    if pool is not None:
        options["pool"] = pool
    elif num_workers is not None and isinstance(chosen, str) and chosen != "synchronous":
        options["num_workers"] = int(num_workers)
    try:
        with _Progress():
            done = dask.compute(*tasks, **options)
    finally:
        bar.close()
    for block, result in zip(pending, done):
        results[block.index] = result
    return results


@contextlib.contextmanager
def worker_pool(scheduler, num_workers: int | None):
    """Worker processes kept for every pass of a job (``scheduler == "processes"``), else None.

    Dask's process scheduler otherwise starts new processes for each ``compute``, and
    each new process imports the libraries and loads the compiled kernels again.
    """
    if scheduler != "processes":
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = int(num_workers) if num_workers else (os.cpu_count() or 1)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def active_client():
    """The running ``dask.distributed`` client, or None (also when distributed is not installed)."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def _run_and_record(function, block: Block, work: str) -> Any:
    result = function(block)
    record = Path(work) / f"{block.name}.json"
    temporary = record.with_name(record.name + ".partial")
    temporary.write_text(json.dumps({"block": list(block.index), "result": result}))
    os.replace(temporary, record)
    return result
