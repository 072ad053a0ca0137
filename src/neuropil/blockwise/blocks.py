"""Blocks of a volume and the one block iterator: each block's task runs once, on Dask, and is recorded so a job resumes."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuropil.errors import NeuropilError
from neuropil.files import TEMPORARY_MARK, write_text_atomic
from neuropil.progress import progress as progress_bar

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
        The workers of a local scheduler, kept across several calls (see :func:`worker_pool`);
        without one, ``"processes"`` runs in a :func:`worker_pool` of its own.

    Returns
    -------
    dict
        Each block's result, by block index.
    """
    import dask
    from dask.callbacks import Callback

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
    bar = progress_bar(total=len(todo), initial=len(results), desc=description, unit="block", disable=not progress)
    keys = {task.key for task in tasks}

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if key in keys:
                bar.update(1)

    options: dict[str, Any] = {}
    chosen = scheduler or active_client() or "threads"
    options["scheduler"] = chosen
    with contextlib.ExitStack() as stack:
        if pool is None and chosen == "processes":
            pool = stack.enter_context(worker_pool(chosen, num_workers))
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
def worker_pool(scheduler, num_workers: int | None) -> Iterator[Any]:
    """Worker processes kept for every pass of a job (``scheduler == "processes"``), else None.

    Dask's process scheduler otherwise starts new processes for each ``compute``, and
    each new process imports the libraries and loads the compiled kernels again.

    No worker outlives the job. The workers ignore SIGINT and SIGTERM, which a terminal's
    Ctrl-C or a batch system sends to every process of the job: the parent alone decides
    (:func:`stopping_on_signals`). When the job ends by an exception (a failed block,
    Ctrl-C, SIGTERM), the parent kills them at once, without waiting for their blocks,
    which the next run does again. When the parent dies without cleaning up (SIGKILL, the
    out-of-memory killer), the kernel kills each worker: on Linux every worker asks for
    SIGKILL at its parent's death (``PR_SET_PDEATHSIG``), which acts even while a worker is
    deep in a compiled kernel that holds the GIL. (The kernel sends it when the thread that
    started the worker ends: workers start on demand in the thread that submits the tasks,
    the one running the job, which outlives the pool.) Elsewhere a thread in each worker
    checks every second that its parent is still there. A process group of the workers
    would not do: once the parent is gone, nothing is left to signal the group.
    """
    if scheduler != "processes":
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from neuropil.segment.graph import cores

    workers = int(num_workers) if num_workers else (os.cpu_count() or 1)
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_started,
        initargs=(os.getpid(), max(1, cores() // workers)),
    )
    try:
        yield pool
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def _stop_workers(pool) -> None:
    """Stop a process pool's workers now, whatever they are running, and wait until they are gone."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # concurrent.futures' pid -> Process
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()  # SIGKILL: the workers ignore SIGTERM
    for process in processes:
        process.join()
    pool.shutdown(wait=True)


PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal a process gets when its parent dies (linux/prctl.h)."""


def _worker_started(parent: int, threads: int) -> None:
    """In each worker process, before its first task: leave SIGINT and SIGTERM to the parent, die with it,
    and run the segmentation kernels in ``threads`` threads (the worker's share of the cores)."""
    from neuropil.segment.graph import limit_threads

    limit_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if not _die_with_parent():
        threading.Thread(target=_watch_parent, args=(parent,), name="neuropil-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before this worker could ask
        os._exit(1)


def _die_with_parent() -> bool:
    """Ask the kernel for SIGKILL when the parent process dies (Linux); whether it was granted."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM during a blockwise job."""


@contextlib.contextmanager
def stopping_on_signals(work: Path) -> Iterator[None]:
    """SIGTERM and Ctrl-C stop a blockwise job cleanly: its workers are stopped, its finished blocks kept.

    SIGINT raises KeyboardInterrupt as usual (the command line exits with 130); SIGTERM
    ends the process with exit status 143 (128 + 15), as its default action would, after
    the same clean-up. A second SIGTERM ends it at once. Each finished block is recorded
    as it finishes (in ``work``), so the next run resumes with the others. Only the
    main thread receives signals; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except _Terminated:
        _sweep_partial_records(work)
        logger.warning("stopped by SIGTERM; %s", _kept(work))
        raise SystemExit(128 + signal.SIGTERM) from None
    except KeyboardInterrupt:
        _sweep_partial_records(work)
        logger.warning("interrupted; %s", _kept(work))
        raise
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _sweep_partial_records(work: Path) -> None:
    """Remove the half-written records of blocks whose workers were stopped while writing them.

    Those blocks are done again by the next run. zarr's own temporary files inside the
    arrays being written (``*.zarr``, ``array``) are left to the next run, which removes them.
    """
    if not work.is_dir():
        return
    for path in work.rglob("*.partial*"):
        inside_array = any(part.endswith(".zarr") or part == "array" for part in path.relative_to(work).parts[:-1])
        if path.is_file() and not inside_array and TEMPORARY_MARK.search(path.name):
            path.unlink(missing_ok=True)


def _kept(work: Path) -> str:
    if work.exists():
        return f"the finished blocks are kept in {work}: run again to resume"
    return "no block was finished"


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
    write_text_atomic(Path(work) / f"{block.name}.json", json.dumps({"block": list(block.index), "result": result}))
    return result
