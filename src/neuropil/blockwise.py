"""Blockwise prediction and segmentation of volumes larger than memory, run by Dask.

A volume is cut into blocks (:func:`blocks`); one task per block reads only its
region plus a halo of context from the input file and writes only its own region
of a chunked zarr output, whose chunks are the blocks, so no two tasks write the
same chunk. :func:`run_blocks` is the one block iterator: it records each finished
block in the job's work folder (with the block's small result, such as its number
of fragments), so a job that was interrupted, killed or failed resumes with the
blocks it has not finished. Outputs are written under a temporary name and moved
into place when every block is done.

The tasks run on Dask: threads by default for prediction (PyTorch uses every core
within a block), processes for segmentation (the numba kernels hold the GIL);
any Dask scheduler can be named, and a ``dask.distributed.Client`` created before
the call runs the tasks on its cluster (every worker must see the same files).

Segmentation follows the usual blockwise scheme (Funke et al. 2019; Lee et al.
2017): watershed fragments per block, with ids made unique by offsetting each
block's ids by the fragments of the blocks before it; per block, the statistics of
every contact between fragments (within the block and across its lower faces);
then one agglomeration of the whole region adjacency graph, which is small next to
the volume; and a last pass that writes each block's segment ids. Agglomerating
the whole graph at once makes the result equal to an in-memory agglomeration of
the same fragments (the merge order depends only on the summed statistics).

References
----------
Funke, J. et al. (2019). Large scale image segmentation with structured loss based
deep learning for connectome reconstruction. IEEE TPAMI 41(7), 1669-1680.
doi:10.1109/TPAMI.2018.2835450
Lee, K., Zung, J., Li, P., Jain, V. & Seung, H. S. (2017). Superhuman accuracy on
the SNEMI3D connectomics challenge. arXiv:1706.00120
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from neuropil.agglomeration import graph
from neuropil.errors import NeuropilError

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_SHAPE = (64, 256, 256)
WORK_SUFFIX = ".work"
"""The work folder of the job writing ``dir.zarr/key`` is ``dir.zarr/key.work``."""


# ----------------------------------------------------------------------------- blocks


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
        dask.delayed(_run_and_record, pure=False)(function, block, str(work), dask_key_name=f"{description}-{block.name}")
        for block in pending
    ]
    bar = tqdm(total=len(todo), initial=len(results), desc=description, unit="block", disable=not progress)
    keys = {task.key for task in tasks}

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if key in keys:
                bar.update(1)

    options: dict[str, Any] = {}
    chosen = scheduler or _active_client() or "threads"
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


def _active_client():
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


# ----------------------------------------------------------------------------- outputs


class _Output(NamedTuple):
    """A zarr array being written blockwise: its final address and its temporary array."""

    container: Path
    key: str

    @property
    def final(self) -> Path:
        return self.container / self.key

    @property
    def partial(self) -> Path:
        return self.container / f"{self.key}.partial"


def _zarr_output(address: str) -> _Output:
    from neuropil.data.io import parse_address

    where = parse_address(address)
    if where.kind != "zarr" or where.is_n5:
        raise NeuropilError(f"{address}: blockwise output must be a zarr array (dir.zarr/key), written chunk by chunk")
    return _Output(where.path, where.key or "data")


def _work_folder(output: _Output) -> Path:
    return output.container / f"{output.key}{WORK_SUFFIX}"


def _prepare(output: _Output, settings: dict, shape: tuple[int, ...], chunks: tuple[int, ...], dtype) -> bool:
    """Create the temporary array, or keep it (and the finished blocks) when the job's settings are unchanged.

    Returns whether the earlier state was kept.
    """
    import zarr

    work = _work_folder(output)
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
        output.partial.name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0, overwrite=True,
        config={"write_empty_chunks": True},
    )
    work.mkdir(parents=True)
    temporary = stored.with_name(stored.name + ".partial")
    temporary.write_text(json.dumps(settings))
    os.replace(temporary, stored)
    return False


def _finish(output: _Output, voxel_size: Sequence[float] | None, attributes: dict | None = None) -> None:
    """Store the metadata and move the finished array into place."""
    import zarr

    from neuropil.data.io import _swap_in

    array = zarr.open_array(str(output.partial), mode="r+")
    if voxel_size is not None:
        array.attrs["resolution"] = [float(v) for v in voxel_size]
    for name, value in (attributes or {}).items():
        array.attrs[name] = value
    _swap_in(output.partial, output.final)


def _open_array(path: str):
    import zarr

    return zarr.open_array(path, mode="r+")


def _settings(**values) -> dict:
    """JSON-normal settings (tuples become lists), as read back from ``settings.json``."""
    return json.loads(json.dumps(values))


# ----------------------------------------------------------------------------- prediction


@functools.lru_cache(maxsize=2)
def _model(checkpoint: str, modified: float, device: str):
    """The checkpoint's model, loaded once per worker process (``modified`` invalidates the cache)."""
    from neuropil.train import load_model

    return load_model(checkpoint, device=device)


def _predict_block(
    block: Block, *, checkpoint: str, modified: float, raw, voxel_size, target_shape, halo, partial: str, device: str
) -> None:
    from neuropil.data.resample import resample_region
    from neuropil.predict import predict_affinities

    model = _model(checkpoint, modified, device)
    region = block.read(halo, target_shape)
    model_voxel_size = tuple(model.config.voxel_size)
    if np.allclose(voxel_size, model_voxel_size, rtol=1e-3):
        image = raw[region]
    else:
        image = resample_region(raw, region, voxel_size=voxel_size, target_voxel_size=model_voxel_size)
    # the whole read region in one pass: its start lies on the pooling grid and its
    # halo covers the network's context, so the kept centre equals a whole-volume pass
    affinities = predict_affinities(image, model, tile_shape=None, device=device, progress=False)
    inner = tuple(slice(w.start - r.start, w.stop - r.start) for w, r in zip(block.write, region))
    _open_array(partial)[(slice(None), *block.write)] = affinities[(slice(None), *inner)]


def predict_blockwise(
    checkpoint: str | os.PathLike,
    raw: str,
    out: str,
    *,
    block_shape: Sequence[int] = DEFAULT_BLOCK_SHAPE,
    voxel_size: Sequence[float] | None = None,
    device: str = "cpu",
    scheduler: str | None = None,
    num_workers: int | None = 1,
    progress: bool = True,
):
    """Predict the affinities of a volume block by block into a zarr array; resumable.

    Each block reads its region plus the network's context (rounded to the pooling
    grid) and keeps its own region, so the result equals
    :func:`neuropil.predict.predict_affinities` of the whole volume. A raw volume at
    another voxel size is rescaled to the model's block by block
    (:func:`neuropil.data.resample.resample_region`: equal to rescaling it whole, as
    :func:`neuropil.predict.predict_file` does).

    Parameters
    ----------
    checkpoint : path of a ``checkpoint.pt`` from :class:`neuropil.train.Trainer`
    raw : address of the raw volume (any readable format) or catalog name
    out : zarr address ``dir.zarr/key`` of the (c, z, y, x) float32 affinities
    block_shape : (z, y, x) voxels per block, rounded up to the model's pooling grid
    voxel_size : (z, y, x) nm of ``raw`` when its file stores none
    device : torch device of every task
    scheduler, num_workers : see :func:`run_blocks`; one thread by default (PyTorch
        already uses every core in a block, and a GPU runs one block at a time)

    Returns
    -------
    neuropil.predict.PredictionWritten

    Raises
    ------
    NeuropilError
        A raw volume that is not 3-D or whose voxel size is unknown, an output that
        is not zarr, a bad block shape.
    """
    from neuropil.data.catalog import raw_in_catalog
    from neuropil.data.io import open_volume
    from neuropil.data.resample import resampled_shape
    from neuropil.predict import PredictionWritten, _round_up

    output = _zarr_output(out)
    checkpoint = str(Path(checkpoint).resolve())
    modified = _modified(checkpoint)
    model = _model(checkpoint, modified, device)
    model_voxel_size = tuple(float(v) for v in model.config.voxel_size)
    address, catalog_voxel_size = raw_in_catalog(raw) or (raw, None)
    volume = open_volume(address, voxel_size=voxel_size or catalog_voxel_size)
    if volume.ndim != 3:
        raise NeuropilError(f"{volume.address}: expected a 3-D (z, y, x) volume, got shape {volume.shape}")
    if volume.voxel_size is None:
        raise NeuropilError(f"{address}: voxel size unknown; give it (the model is for {model_voxel_size} nm)")
    input_voxel_size = tuple(float(v) for v in volume.voxel_size)
    target_shape = volume.shape
    if not np.allclose(input_voxel_size, model_voxel_size, rtol=1e-3):
        logger.info("rescaling %s from %s nm to the model's %s nm block by block", address, input_voxel_size,
                    model_voxel_size)
        target_shape = resampled_shape(volume.shape, input_voxel_size, model_voxel_size)
    if len(block_shape) != 3 or any(int(b) < 1 for b in block_shape):
        raise NeuropilError(f"block shape needs 3 positive values (z y x), got {tuple(block_shape)}")
    divisor = model.divisor
    block_shape = tuple(_round_up(int(b), d) for b, d in zip(block_shape, divisor))
    halo = tuple(_round_up(c, d) for c, d in zip(model.context, divisor))
    shape = (model.config.out_channels, *target_shape)
    settings = _settings(
        job="predict", checkpoint=checkpoint, modified=modified, raw=str(volume.address),
        voxel_size=input_voxel_size, shape=shape, block_shape=block_shape, halo=halo,
    )
    _prepare(output, settings, shape, (shape[0], *block_shape), np.float32)
    task = functools.partial(
        _predict_block, checkpoint=checkpoint, modified=modified, raw=volume,
        voxel_size=input_voxel_size, target_shape=target_shape, halo=halo, partial=str(output.partial), device=device,
    )
    volume.close()
    run_blocks(
        task, blocks(target_shape, block_shape), _work_folder(output) / "blocks", description="predicting",
        scheduler=scheduler, num_workers=num_workers, progress=progress,
    )
    _finish(output, model_voxel_size)
    shutil.rmtree(_work_folder(output))
    return PredictionWritten(str(output.container / output.key), shape, model_voxel_size, input_voxel_size)


def _modified(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        raise NeuropilError(f"{path}: no such checkpoint") from None


# ----------------------------------------------------------------------------- segmentation

BLOCKWISE_METHODS = ("mean", "quantile", "learned")
"""Agglomeration methods whose statistics the blocks sum (see :func:`segment_blockwise`)."""


class _Source(NamedTuple):
    """Where a segmentation job reads: the affinities or boundaries, and the fragments."""

    values: Any
    """:class:`neuropil.data.io.Volume` of (c, z, y, x) affinities or a (z, y, x) boundary map."""
    fragments: Any
    """Volume of the given fragments, or None: a watershed per block."""
    local: str | None
    """zarr array of each block's own watershed ids (1..n per block), when fragments are computed."""
    block_shape: tuple[int, ...]
    offsets: str | None = None
    """``.npy`` file of the block grid's id offsets (the fragments of the blocks before each)."""
    image: Any = None
    """Volume of the raw image, for a learned classifier trained with one."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape[-3:])

    def affinities(self, region: tuple[slice, ...]) -> NDArray[np.float32]:
        """(3, z, y, x) nearest-neighbour affinities of a region, exact at its lower faces.

        A boundary map gives ``1 - mean`` of each voxel pair's boundary values, like
        the in-memory methods; the voxels before the region are read for its first layer.
        """
        from neuropil.agglomeration.core import as_affinities

        if self.values.ndim == 4:
            return as_affinities(self.values[(slice(0, 3), *region)])
        return _pairs_with_voxel_before(self.values, region, as_affinities)

    def image_pairs(self, region: tuple[slice, ...]) -> NDArray[np.float32]:
        """(3, z, y, x) image pair values ``1 - mean`` of a region's voxel pairs, exact at its lower faces."""
        from neuropil.agglomeration.learned import image_values
        from neuropil.watershed import affinities_from_boundaries

        return _pairs_with_voxel_before(
            self.image, region, lambda image: affinities_from_boundaries(image_values(image, image.shape), combine="mean")
        )

    def voxel_boundaries(self, region: tuple[slice, ...]) -> NDArray[np.float32]:
        """Boundary value of each voxel of a region: the boundary map, or 1 - the mean affinity to its neighbours.

        The mean reaches one voxel beyond the region on each side, so it equals the
        whole volume's (:func:`neuropil.agglomeration.learned.voxel_boundaries`).
        """
        from neuropil.agglomeration.core import as_affinities
        from neuropil.agglomeration.learned import voxel_boundaries

        if self.values.ndim == 3:
            return voxel_boundaries(self.values[region], None)
        grown = tuple(slice(max(r.start - 1, 0), min(r.stop + 1, s)) for r, s in zip(region, self.shape))
        affinities = self.values[(slice(0, 3), *grown)]
        boundary = voxel_boundaries(affinities, as_affinities(affinities))
        return boundary[tuple(slice(r.start - g.start, r.stop - g.start) for r, g in zip(region, grown))]

    def fragment_ids(self, region: tuple[slice, ...]) -> NDArray[np.uint64]:
        """Fragment ids of a region, unique over the volume."""
        if self.fragments is not None:
            ids = self.fragments[region]
            return graph.check_fragments(ids, ids.shape).astype(np.uint64, copy=False)
        import zarr

        local = zarr.open_array(self.local, mode="r")
        offsets = np.load(self.offsets, mmap_mode="r")
        out = np.zeros(tuple(r.stop - r.start for r in region), dtype=np.uint64)
        # a region may span blocks (a face layer belongs to the block before)
        grid = [range(r.start // b, (r.stop - 1) // b + 1) for r, b in zip(region, self.block_shape)]
        for index in itertools.product(*grid):
            write = tuple(slice(i * b, min((i + 1) * b, s)) for i, b, s in zip(index, self.block_shape, self.shape))
            overlap = tuple(slice(max(w.start, r.start), min(w.stop, r.stop)) for w, r in zip(write, region))
            ids = np.asarray(local[overlap]).astype(np.uint64)
            target = tuple(slice(o.start - r.start, o.stop - r.start) for o, r in zip(overlap, region))
            out[target] = np.where(ids > 0, ids + np.uint64(offsets[index]), 0)
        return out


def _pairs_with_voxel_before(volume, region: tuple[slice, ...], pair_values) -> NDArray:
    """``pair_values`` (a voxel map to (3, ...) values of each voxel and the one before it) of a region.

    The voxels before the region are read too, so its first layer is exact: the
    values equal those of the whole volume there.
    """
    grown = tuple(slice(max(r.start - 1, 0), r.stop) for r in region)
    values = pair_values(volume[grown])
    return values[(slice(None), *(slice(r.start - g.start, None) for r, g in zip(region, grown)))]


def _watershed_block(block: Block, *, source: _Source, threshold, flood_threshold, min_size) -> int:
    """Fragments of one block on its own (ids 1..n); returns n."""
    from neuropil.watershed import fragments, fragments_from_boundaries

    values = source.values[(slice(0, 3), *block.write)] if source.values.ndim == 4 else source.values[block.write]
    make = fragments_from_boundaries if values.ndim == 3 else fragments
    flood = {} if flood_threshold is None else {"flood_threshold": flood_threshold}
    ids, n = make(values, threshold=threshold, min_size=min_size, **flood)
    _open_array(source.local)[block.write] = ids
    return int(n)


def _edges_block(block: Block, *, source: _Source, tables: str, method: str, n_bins: int) -> int:
    """Sum the statistics of one block's contacts (and, for ``learned``, its fragments) to a table file.

    Channel ``c`` at voxel ``p`` relates ``p`` and ``p - e_c``; each contact belongs to
    the block holding ``p`` (its own voxels and across its lower faces), so every
    contact of the volume is counted once. The statistics are the ones the in-memory
    method sums (see :func:`_edge_table`); sums over blocks are sums over the volume.
    """
    region = block.read([(1, 0)] * 3, source.shape)
    ids = source.fragment_ids(region)
    affinities = source.affinities(block.write)
    images = source.image_pairs(block.write) if source.image is not None else None
    lower = tuple(w.start - r.start for w, r in zip(block.write, region))
    here = ids[tuple(slice(low, None) for low in lower)]
    first, second, values, across = [], [], [], []
    for axis in range(3):
        # voxels on the volume's first layer along the axis have no neighbour before them
        keep = (slice(None),) * axis + (slice(1 - lower[axis], None),)
        before = ids[tuple(slice(0, ids.shape[a] - 1) if a == axis else slice(lower[a], None) for a in range(3))]
        a = here[keep]
        touching = (a != before) & (a > 0) & (before > 0)
        first.append(np.minimum(a, before)[touching])
        second.append(np.maximum(a, before)[touching])
        values.append(affinities[axis][keep][touching])
        if images is not None:
            across.append(images[axis][keep][touching])
    pairs, edge = _pairs(np.concatenate(first), np.concatenate(second))
    table = {"u": pairs[:, 0], "v": pairs[:, 1]}
    table["edge_stats"] = _edge_table(edge, pairs.shape[0], np.concatenate(values),
                                      np.concatenate(across) if images is not None else None, method, n_bins)
    table["ids"], node = graph.node_indices(here)
    if method == "learned":
        from neuropil.agglomeration import learned

        image = None
        if source.image is not None:
            image = learned.image_values(source.image[block.write], here.shape)
        table["node_stats"] = learned.node_statistics(
            node, source.voxel_boundaries(block.write), table["ids"].size, image=image,
            origin=tuple(w.start for w in block.write),
        )
    path = Path(tables) / f"{block.name}.npz"
    temporary = path.with_name(path.name + ".partial.npz")
    np.savez(temporary, **table)
    os.replace(temporary, path)
    return int(table["u"].size)


def _pairs(u: NDArray[np.uint64], v: NDArray[np.uint64]) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """Distinct ``(u, v)`` rows, sorted, and the row of each pair."""
    ids, index = np.unique(np.concatenate([u, v]), return_inverse=True)
    n = max(ids.size, 1)
    keys, edge = graph._distinct(index[: u.size] * n + index[u.size :], n * n)
    return np.stack([ids[keys // n], ids[keys % n]], axis=1).reshape(-1, 2), edge


def _edge_table(edge, n_edges, values, across, method: str, n_bins: int) -> NDArray[np.float64]:
    """(n_edges, k) the additive edge statistics the method's scores read, from per-contact values
    (those of the in-memory methods: :func:`neuropil.agglomeration.core.edge_statistics`,
    :func:`neuropil.agglomeration.learned.edge_statistics`)."""
    from neuropil.agglomeration import core, learned

    if method == "learned":
        return learned.edge_statistics(edge, values, n_edges, n_bins, across)
    return core.edge_statistics(method, edge, values, n_edges)


def _relabel_block(block: Block, *, source: _Source, mapping: str, partials: list[str]) -> None:
    """Write one block of each threshold's segmentation: every fragment id becomes its segment's."""
    # memory-mapped: a block reads only the pages of the ids it holds
    ids = np.load(Path(mapping) / "ids.npy", mmap_mode="r")
    table = np.load(Path(mapping) / "segments.npy", mmap_mode="r")
    present, node = graph.node_indices(source.fragment_ids(block.write))
    rows = np.asarray(table[:, np.searchsorted(ids, present)])
    for row, partial in enumerate(partials):
        _open_array(partial)[block.write] = graph._paint(node.ravel(), rows[row]).reshape(node.shape)


def segment_blockwise(
    input: str,
    outputs: Sequence[str],
    *,
    thresholds: Sequence[float] = (0.5,),
    fragments: str | None = None,
    method: str = "mean",
    quantile: int = 50,
    model=None,
    image: str | None = None,
    block_shape: Sequence[int] = DEFAULT_BLOCK_SHAPE,
    fragment_threshold: float = 0.5,
    flood_threshold: float | None = None,
    min_size: int = 20,
    scheduler: str | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> list[str]:
    """Segment a volume block by block into zarr arrays, one per threshold; resumable.

    Passes, each one task per block: watershed fragments (unless ``fragments`` is
    given), contact statistics, then, after one agglomeration of the whole region
    adjacency graph, the segment ids. With given fragments the segmentation equals
    :func:`neuropil.agglomeration.agglomerate` of the whole volume; computed fragments
    are cut at block faces, and the agglomeration merges across them like across any
    other contact.

    Parameters
    ----------
    input : address of (c, z, y, x) affinities (1 = same object; the first three
        channels are used) or of a (z, y, x) boundary map (1 = boundary)
    outputs : zarr addresses ``dir.zarr/key``, one per threshold
    thresholds : merge thresholds (see :func:`neuropil.agglomeration.agglomerate`)
    fragments : address of fragment ids; default: a watershed of each block
    method : {"mean", "quantile", "learned"}
    quantile : percentile of the quantile method
    model : neuropil.agglomeration.learned.MergeClassifier
        The learned method's classifier; its node statistics (sizes, coordinate
        moments, image sums) are summed over blocks like the edges'.
    image : address of the raw image, for a classifier trained with one
    block_shape : (z, y, x) voxels per block
    fragment_threshold, flood_threshold, min_size : watershed options
        (:func:`neuropil.watershed.fragments`' ``threshold``, ``flood_threshold``, ``min_size``);
        the flood threshold defaults to the watershed's own for the input (0.5 for
        affinities, 0 for a boundary map: :func:`neuropil.watershed.fragments_from_boundaries`)
    scheduler, num_workers : see :func:`run_blocks`; default processes (the numba
        kernels hold the GIL), one per core

    Returns
    -------
    list of str
        The written addresses.
    """
    import zarr

    from neuropil.agglomeration.core import check_model
    from neuropil.data.io import open_volume

    if method not in BLOCKWISE_METHODS:
        raise NeuropilError(
            f"blockwise segmentation supports {', '.join(BLOCKWISE_METHODS)}, not {method!r} "
            "(mutex runs in memory: neuropil segment without --block)"
        )
    if method == "learned":
        check_model(model, image is not None)
    elif model is not None or image is not None:
        raise NeuropilError(f"a model and an image are for the learned method, not {method!r}")
    thresholds = [float(t) for t in thresholds]
    if not thresholds or len(thresholds) != len(outputs):
        raise NeuropilError(f"need one output per threshold, got {len(outputs)} outputs for {len(thresholds)} thresholds")
    if any(not t >= 0 for t in thresholds):
        raise NeuropilError(f"thresholds must be >= 0, not {thresholds}")
    if not 0 <= quantile <= 100:
        raise NeuropilError(f"quantile must be a percentile in 0..100, not {quantile}")
    targets = [_zarr_output(out) for out in outputs]
    values = open_volume(input)
    if values.ndim not in (3, 4) or (values.ndim == 4 and values.shape[0] < 3):
        raise NeuropilError(f"{input}: expected (c >= 3, z, y, x) affinities or a (z, y, x) boundary map, got {values.shape}")
    shape = tuple(values.shape[-3:])
    given = None
    if fragments is not None:
        given = open_volume(fragments)
        if tuple(given.shape) != shape:
            raise NeuropilError(f"{fragments}: fragments shape {given.shape} does not match the input's {shape}")
    raw = None
    if image is not None:
        raw = open_volume(image)
        if tuple(raw.shape) != shape:
            raise NeuropilError(f"{image}: image shape {raw.shape} does not match the input's {shape}")
    if len(block_shape) != 3 or any(int(b) < 1 for b in block_shape):
        raise NeuropilError(f"block shape needs 3 positive values (z y x), got {tuple(block_shape)}")
    block_shape = tuple(int(b) for b in block_shape)
    all_blocks = blocks(shape, block_shape)
    primary = targets[0]
    settings = _settings(
        job="segment", input=str(values.address), fragments=None if given is None else str(given.address),
        method=method, quantile=quantile, thresholds=thresholds, outputs=[str(t.final) for t in targets],
        model=None if model is None else _digest(model.forest), image=None if raw is None else str(raw.address),
        block_shape=block_shape, watershed=[fragment_threshold, flood_threshold, min_size],
    )
    kept = [_prepare(target, settings, shape, block_shape, np.uint64) for target in targets]
    work = _work_folder(primary)
    if not all(kept):
        shutil.rmtree(work / "relabel", ignore_errors=True)  # every output is written again
    local = None
    if given is None:
        local = str(work / "fragments.zarr")
        if not Path(local).is_dir():
            zarr.open_array(local, mode="w", shape=shape, chunks=block_shape, dtype=np.uint64, fill_value=0,
                            config={"write_empty_chunks": True})
    source = _Source(values, given, local, block_shape, image=raw)
    for volume in (values, given, raw):
        if volume is not None:
            volume.close()
    chosen = scheduler or _active_client() or "processes"
    with worker_pool(chosen, num_workers) as pool:
        watershed = dict(threshold=fragment_threshold, flood_threshold=flood_threshold, min_size=min_size)
        _segment_passes(
            source, all_blocks, work, targets, method=method, thresholds=thresholds, quantile=quantile, model=model,
            watershed=watershed if given is None else None,
            run=functools.partial(run_blocks, scheduler=chosen, num_workers=num_workers, pool=pool, progress=progress),
        )
    for target, threshold in zip(targets, thresholds):
        _finish(target, values.voxel_size[-3:] if values.voxel_size else None,
                {"neuropil": {"method": method, "threshold": threshold}})
    shutil.rmtree(work)
    for target in targets[1:]:
        shutil.rmtree(_work_folder(target), ignore_errors=True)
    return [str(t.final) for t in targets]


def _segment_passes(source: _Source, all_blocks, work: Path, targets, *, method, thresholds, quantile, model,
                    watershed: dict | None, run) -> None:
    """The passes of :func:`segment_blockwise`, each through ``run`` (:func:`run_blocks`).

    ``watershed``: the options of :func:`_watershed_block`, or None when fragments are given.
    """
    if watershed is not None:
        counts = run(functools.partial(_watershed_block, source=source, **watershed), all_blocks,
                     work / "watershed", description="fragments")
        starts = np.concatenate([[0], np.cumsum([counts[b.index] for b in all_blocks])[:-1]])
        grid = tuple(max(b.index[axis] for b in all_blocks) + 1 for axis in range(3))
        offsets = work / "offsets.npy"
        np.save(work / "offsets.partial.npy", starts.astype(np.int64).reshape(grid))  # blocks are in C order
        os.replace(work / "offsets.partial.npy", offsets)
        source = source._replace(offsets=str(offsets))
    tables = work / "edges"
    tables.mkdir(exist_ok=True)
    n_bins = model.n_bins if model is not None else 0
    run(functools.partial(_edges_block, source=source, tables=str(tables), method=method, n_bins=n_bins),
        all_blocks, work / "edges-done", description="region graph")
    ids, segments = _agglomerate_tables(
        [tables / f"{b.name}.npz" for b in all_blocks], method, thresholds, quantile=quantile, model=model
    )
    mapping = work / "mapping"
    mapping.mkdir(exist_ok=True)
    for name, array in (("ids", ids), ("segments", segments)):
        np.save(mapping / f"{name}.partial.npy", array)
        os.replace(mapping / f"{name}.partial.npy", mapping / f"{name}.npy")
    run(functools.partial(_relabel_block, source=source, mapping=str(mapping),
                          partials=[str(t.partial) for t in targets]),
        all_blocks, work / "relabel", description="segments")


def _agglomerate_tables(paths: Sequence[Path], method: str, thresholds: Sequence[float], *, quantile: int, model):
    """Sum the blocks' tables into one region adjacency graph and agglomerate it.

    Returns the sorted fragment ids (n,) and each threshold's segment id per fragment (t, n).
    """
    from neuropil.agglomeration import learned, merge
    from neuropil.agglomeration.core import MODES

    parts = [dict(np.load(path)) for path in paths]
    ids, node_stats = _sum_by(
        [p["ids"] for p in parts], [p.get("node_stats", np.zeros((p["ids"].size, 0))) for p in parts]
    )
    n = max(ids.size, 1)
    keys = [np.searchsorted(ids, p["u"]).astype(np.int64) * n + np.searchsorted(ids, p["v"]) for p in parts]
    edge_keys, edge_stats = _sum_by(keys, [p["edge_stats"] for p in parts])
    u, v = edge_keys // n, edge_keys % n
    mode = MODES[method]
    forest, n_bins = merge.Forest.empty(), 0
    if method == "learned":
        surface = np.bincount(u, weights=edge_stats[:, 0], minlength=ids.size)
        surface += np.bincount(v, weights=edge_stats[:, 0], minlength=ids.size)
        node_stats = learned.with_surface(node_stats, surface)
        forest, n_bins = model.forest, model.n_bins
    logger.info("agglomerating %d fragments, %d edges", ids.size, edge_keys.size)
    kept, removed, score, _, _ = merge.merge_until(
        ids.size, u, v, edge_stats, node_stats, mode, int(quantile), n_bins, forest.packed(),
        float(max(thresholds)), np.zeros(0, dtype=np.int64),
    )
    history = merge.MergeHistory(kept, removed, score)
    segments = np.stack([ids[history.roots(ids.size, history.n_merges_below(t))] for t in thresholds])
    return ids, segments


def _sum_by(keys: Sequence[NDArray], rows: Sequence[NDArray]) -> tuple[NDArray, NDArray[np.float64]]:
    """Distinct keys (sorted) and the sum of the rows of each, over all the parts."""
    keys = np.concatenate(list(keys) + [np.zeros(0, dtype=np.asarray(keys[0]).dtype if keys else np.int64)])
    width = rows[0].shape[1] if rows else 0
    rows = np.concatenate(list(rows) + [np.zeros((0, width))]).astype(np.float64)
    order = np.argsort(keys, kind="stable")
    keys, rows = keys[order], rows[order]
    if keys.size == 0:
        return keys, rows
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    return keys[starts], np.add.reduceat(rows, starts, axis=0) if width else np.zeros((starts.size, 0))


def _digest(forest) -> str:
    """A short fingerprint of a classifier's trees (a changed model restarts a job)."""
    import hashlib

    digest = hashlib.sha256()
    for array in forest:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]
