"""Blockwise segmentation: watershed fragments per block, one agglomeration of the summed region graph, segment ids per block."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from neuropil.blockwise.blocks import (
    DEFAULT_BLOCK_SHAPE,
    Block,
    active_client,
    blocks,
    run_blocks,
    stopping_on_signals,
    worker_pool,
)
from neuropil.blockwise.store import (
    discard_if_nothing_done,
    finish_output,
    job_settings,
    prepare_output,
    replacing,
    work_folder,
    write_region,
    zarr_output,
)
from neuropil.errors import NeuropilError
from neuropil.io import open_volume
from neuropil.segment import features, graph, learned, merge, pipeline
from neuropil.segment.affinities import affinities_from_boundaries, as_affinities
from neuropil.segment.agglomerate import edge_statistics
from neuropil.segment.learned import check_model, image_values, voxel_boundaries

logger = logging.getLogger(__name__)


BLOCKWISE_METHODS = ("mean", "quantile", "learned")
"""Agglomeration methods whose statistics the blocks sum (see :func:`segment_blockwise`)."""


class _Source(NamedTuple):
    """Where a segmentation job reads: the affinities or boundaries, and the fragments."""

    values: Any
    """:class:`neuropil.io.Volume` of (c, z, y, x) affinities or a (z, y, x) boundary map."""
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

        if self.values.ndim == 4:
            return as_affinities(self.values[(slice(0, 3), *region)])
        return _pairs_with_voxel_before(self.values, region, as_affinities)

    def image_pairs(self, region: tuple[slice, ...]) -> NDArray[np.float32]:
        """(3, z, y, x) image pair values ``1 - mean`` of a region's voxel pairs, exact at its lower faces."""

        return _pairs_with_voxel_before(
            self.image,
            region,
            lambda image: affinities_from_boundaries(image_values(image, image.shape), combine="mean"),
        )

    def voxel_boundaries(self, region: tuple[slice, ...]) -> NDArray[np.float32]:
        """Boundary value of each voxel of a region: the boundary map, or 1 - the mean affinity to its neighbours.

        The mean reaches one voxel beyond the region on each side, so it equals the
        whole volume's (:func:`neuropil.segment.learned.voxel_boundaries`).
        """

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

        if self.local is None or self.offsets is None:
            raise RuntimeError("fragment ids read before the watershed pass wrote them")
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


def _watershed_block(block: Block, *, source: _Source, voxel_size, threshold, flood_threshold, min_size) -> int:
    """Fragments of one block on its own (ids 1..n), by the in-memory pipeline's watershed; returns n."""
    values = source.values[(slice(0, 3), *block.write)] if source.values.ndim == 4 else source.values[block.write]
    ids, n = pipeline.fragments(
        values, voxel_size=voxel_size, threshold=threshold, flood_threshold=flood_threshold, min_size=min_size
    )
    assert source.local is not None, "the watershed pass writes the job's own fragments array"
    write_region(source.local, block.write, ids)
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
    lower = tuple(w.start - r.start for w, r in zip(block.write, region))
    own = (slice(None), *(slice(low, None) for low in lower))
    # values at p relate p and the voxel before it: the block's own voxels hold every contact it counts
    affinities = np.zeros((3, *ids.shape), dtype=np.float32)
    affinities[own] = source.affinities(block.write)
    contacts = graph.contacts(affinities, ids, start=lower)
    across = None
    if source.image is not None:
        image_pairs = np.zeros((3, *ids.shape), dtype=np.float32)
        image_pairs[own] = source.image_pairs(block.write)
        across = graph.contact_values(contacts, image_pairs)
    table: dict[str, NDArray] = {"u": contacts.ids[contacts.u], "v": contacts.ids[contacts.v]}
    table["edge_stats"] = _edge_table(contacts.edge, contacts.n_edges, contacts.value, across, method, n_bins)
    here = ids[own[1:]]
    table["ids"], node = graph.node_indices(here)
    if method == "learned":
        image = None
        if source.image is not None:
            image = learned.image_values(source.image[block.write], here.shape)
        table["node_stats"] = learned.node_statistics(
            node,
            source.voxel_boundaries(block.write),
            table["ids"].size,
            image=image,
            origin=tuple(w.start for w in block.write),
        )
    with replacing(Path(tables) / f"{block.name}.npz") as temporary:
        np.savez(temporary, **table)  # type: ignore[arg-type]  # numpy's stub types the first keyword as allow_pickle
    return int(table["u"].size)


def _edge_table(edge, n_edges, values, across, method: str, n_bins: int) -> NDArray[np.float64]:
    """(n_edges, k) the additive edge statistics the method's scores read, from per-contact values
    (those of the in-memory methods: :func:`neuropil.segment.agglomerate.edge_statistics`,
    :func:`neuropil.segment.learned.edge_statistics`)."""

    if method == "learned":
        return learned.edge_statistics(edge, values, n_edges, n_bins, across)
    return edge_statistics(method, edge, values, n_edges)


def _relabel_block(block: Block, *, source: _Source, mapping: str, partials: list[str]) -> None:
    """Write one block of each threshold's segmentation: every fragment id becomes its segment's."""
    # memory-mapped: a block reads only the pages of the ids it holds
    ids = np.load(Path(mapping) / "ids.npy", mmap_mode="r")
    table = np.load(Path(mapping) / "segments.npy", mmap_mode="r")
    present, node = graph.node_indices(source.fragment_ids(block.write))
    rows = np.asarray(table[:, np.searchsorted(ids, present)])
    for row, partial in enumerate(partials):
        write_region(partial, block.write, graph.paint(node, rows[row]))


def segment_blockwise(
    input: str,
    outputs: Sequence[str],
    *,
    thresholds: Sequence[float] = (0.5,),
    voxel_size: Sequence[float] | None = None,
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
    allow_missing_chunks: bool | None = None,
) -> list[str]:
    """Segment a volume block by block into zarr arrays, one per threshold; resumable.

    Passes, each one task per block: watershed fragments (unless ``fragments`` is
    given), contact statistics, then, after one agglomeration of the whole region
    adjacency graph, the segment ids. With given fragments the segmentation equals
    :func:`neuropil.segment.agglomerate` of the whole volume; computed fragments
    are cut at block faces, and the agglomeration merges across them like across any
    other contact.

    Parameters
    ----------
    input : address of (c, z, y, x) affinities (1 = same object; the first three
        channels are used) or of a (z, y, x) boundary map (1 = boundary)
    outputs : zarr addresses ``dir.zarr/key``, one per threshold
    thresholds : merge thresholds (see :func:`neuropil.segment.agglomerate`)
    fragments : address of fragment ids; default: a watershed of each block
    method : {"mean", "quantile", "learned"}
    quantile : percentile of the quantile method
    model : neuropil.segment.learned.MergeClassifier
        The learned method's classifier; its node statistics (sizes, coordinate
        moments, image sums) are summed over blocks like the edges'.
    image : address of the raw image, for a classifier trained with one
    block_shape : (z, y, x) voxels per block
    voxel_size : (z, y, x) nm of the input, where its file stores none; written on every output
    fragment_threshold, flood_threshold, min_size : watershed options
        (:func:`neuropil.segment.pipeline.fragments`' ``threshold``, ``flood_threshold``, ``min_size``: the
        watershed of the in-memory pipeline, run on each block with the input's voxel size);
        the flood threshold defaults to the watershed's own for the input (0.5 for
        affinities, 0 for a boundary map: :func:`neuropil.segment.watershed.fragments_from_boundaries`)
    scheduler, num_workers : see :func:`run_blocks`; default processes (the numba
        kernels hold the GIL), one per core
    allow_missing_chunks : read chunks of the input, fragments or image that are not
        stored as the fill value rather than raising (see :func:`neuropil.io.open_volume`)

    A failed, stopped (SIGTERM, Ctrl-C: :func:`neuropil.blockwise.blocks.stopping_on_signals`)
    or killed job resumes when called again with the same settings.

    Returns
    -------
    list of str
        The written addresses; each output's ``neuropil`` attribute holds the method, the
        threshold and the number of segments (``segments``).
    """

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
        raise NeuropilError(
            f"need one output per threshold, got {len(outputs)} outputs for {len(thresholds)} thresholds"
        )
    pipeline.check_thresholds(thresholds)
    if not 0 <= quantile <= 100:
        raise NeuropilError(f"quantile must be a percentile in 0..100, not {quantile}")
    targets = [zarr_output(out) for out in outputs]
    values = open_volume(input, voxel_size=voxel_size, allow_missing_chunks=allow_missing_chunks)
    if values.ndim not in (3, 4) or (values.ndim == 4 and values.shape[0] < 3):
        raise NeuropilError(
            f"{input}: expected (c >= 3, z, y, x) affinities or a (z, y, x) boundary map, got {values.shape}"
        )
    if values.voxel_size is None and fragments is None:
        raise NeuropilError(f"{input}: the file stores no voxel size; give it (z, y, x in nm) for the watershed")
    spatial_voxel_size = None if values.voxel_size is None else pipeline.check_voxel_size(values.voxel_size[-3:], 3)
    shape = tuple(values.shape[-3:])
    given = None
    if fragments is not None:
        given = open_volume(fragments, allow_missing_chunks=allow_missing_chunks)
        if tuple(given.shape) != shape:
            raise NeuropilError(f"{fragments}: fragments shape {given.shape} does not match the input's {shape}")
    raw = None
    if image is not None:
        raw = open_volume(image, allow_missing_chunks=allow_missing_chunks)
        if tuple(raw.shape) != shape:
            raise NeuropilError(f"{image}: image shape {raw.shape} does not match the input's {shape}")
    if len(block_shape) != 3 or any(int(b) < 1 for b in block_shape):
        raise NeuropilError(f"block shape needs 3 positive values (z y x), got {tuple(block_shape)}")
    block_shape = tuple(int(b) for b in block_shape)
    all_blocks = blocks(shape, block_shape)
    primary = targets[0]
    settings = job_settings(
        job="segment",
        input=str(values.address),
        fragments=None if given is None else str(given.address),
        method=method,
        quantile=quantile,
        thresholds=thresholds,
        outputs=[str(t.final) for t in targets],
        model=None if model is None else _digest(model.forest),
        image=None if raw is None else str(raw.address),
        block_shape=block_shape,
        watershed=[fragment_threshold, flood_threshold, min_size],
        voxel_size=spatial_voxel_size,
    )
    work = work_folder(primary)
    for volume in (values, given, raw):
        if volume is not None:
            volume.close()
    with stopping_on_signals(work):
        try:
            kept = [prepare_output(target, settings, shape, block_shape, np.uint64) for target in targets]
            if not all(kept):
                shutil.rmtree(work / "relabel", ignore_errors=True)  # every output is written again
            local = None
            if given is None:
                local = str(work / "fragments.zarr")
                if not Path(local).is_dir():
                    _create_fragments_array(Path(local), shape, block_shape)
            source = _Source(values, given, local, block_shape, image=raw)
            chosen = scheduler or active_client() or "processes"
            with worker_pool(chosen, num_workers) as pool:
                watershed = dict(
                    voxel_size=spatial_voxel_size,
                    threshold=fragment_threshold,
                    flood_threshold=flood_threshold,
                    min_size=min_size,
                )
                counts = _segment_passes(
                    source,
                    all_blocks,
                    work,
                    targets,
                    method=method,
                    thresholds=thresholds,
                    quantile=quantile,
                    model=model,
                    watershed=watershed if given is None else None,
                    run=functools.partial(
                        run_blocks, scheduler=chosen, num_workers=num_workers, pool=pool, progress=progress
                    ),
                )
        except BaseException:
            discard_if_nothing_done(targets)
            raise
        for target, threshold, count in zip(targets, thresholds, counts):
            described = {"method": method, "threshold": threshold, "segments": count}
            finish_output(target, spatial_voxel_size, {"neuropil": described})
        shutil.rmtree(work)
        for target in targets[1:]:
            shutil.rmtree(work_folder(target), ignore_errors=True)
    return [str(t.final) for t in targets]


def _create_fragments_array(path: Path, shape: tuple[int, ...], block_shape: tuple[int, ...]) -> None:
    """The job's array of each block's own watershed ids, created under a temporary name, then moved into place."""
    import zarr

    temporary = path.with_name(f"{path.stem}.partial{path.suffix}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        zarr.open_array(
            str(temporary),
            mode="w",
            shape=shape,
            chunks=block_shape,
            dtype=np.uint64,
            fill_value=0,
            config={"write_empty_chunks": True},
        )
        os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _segment_passes(
    source: _Source,
    all_blocks,
    work: Path,
    targets,
    *,
    method,
    thresholds,
    quantile,
    model,
    watershed: dict | None,
    run,
) -> list[int]:
    """The passes of :func:`segment_blockwise`, each through ``run`` (:func:`run_blocks`).

    ``watershed``: the options of :func:`_watershed_block`, or None when fragments are given.
    Returns the number of segments at each threshold.
    """
    if watershed is not None:
        counts = run(
            functools.partial(_watershed_block, source=source, **watershed),
            all_blocks,
            work / "watershed",
            description="fragments",
        )
        starts = np.concatenate([[0], np.cumsum([counts[b.index] for b in all_blocks])[:-1]])
        grid = tuple(max(b.index[axis] for b in all_blocks) + 1 for axis in range(3))
        offsets = work / "offsets.npy"
        with replacing(offsets) as temporary:
            np.save(temporary, starts.astype(np.int64).reshape(grid))  # blocks are in C order
        source = source._replace(offsets=str(offsets))
    tables = work / "edges"
    tables.mkdir(exist_ok=True)
    n_bins = model.n_bins if model is not None else 0
    run(
        functools.partial(_edges_block, source=source, tables=str(tables), method=method, n_bins=n_bins),
        all_blocks,
        work / "edges-done",
        description="region graph",
    )
    ids, segments = _agglomerate_tables(
        [tables / f"{b.name}.npz" for b in all_blocks], method, thresholds, quantile=quantile, model=model
    )
    mapping = work / "mapping"
    mapping.mkdir(exist_ok=True)
    for name, array in (("ids", ids), ("segments", segments)):
        with replacing(mapping / f"{name}.npy") as temporary:
            np.save(temporary, array)
    run(
        functools.partial(
            _relabel_block, source=source, mapping=str(mapping), partials=[str(t.partial) for t in targets]
        ),
        all_blocks,
        work / "relabel",
        description="segments",
    )
    return [int(np.unique(row).size) for row in segments]


def _agglomerate_tables(paths: Sequence[Path], method: str, thresholds: Sequence[float], *, quantile: int, model):
    """Sum the blocks' tables into one region adjacency graph and agglomerate it.

    Returns the sorted fragment ids (n,) and each threshold's segment id per fragment (t, n).
    """

    parts = [dict(np.load(path)) for path in paths]
    ids, node_stats = _sum_by(
        [p["ids"] for p in parts], [p.get("node_stats", np.zeros((p["ids"].size, 0))) for p in parts]
    )
    n = max(ids.size, 1)
    keys = [np.asarray(np.searchsorted(ids, p["u"]), dtype=np.int64) * n + np.searchsorted(ids, p["v"]) for p in parts]
    edge_keys, edge_stats = _sum_by(keys, [p["edge_stats"] for p in parts])
    u, v = edge_keys // n, edge_keys % n
    scoring = model.scoring() if method == "learned" else merge.Scoring(method, quantile=int(quantile))
    if method == "learned":
        surface = np.bincount(u, weights=edge_stats[:, features.CONTACTS], minlength=ids.size)
        surface += np.bincount(v, weights=edge_stats[:, features.CONTACTS], minlength=ids.size)
        node_stats = learned.with_surface(node_stats, surface)
    logger.info("agglomerating %d fragments, %d edges", ids.size, edge_keys.size)
    history = merge.merge(
        merge.Graph(ids.size, u, v), edge_stats, scoring=scoring, node_stats=node_stats, stop=float(max(thresholds))
    )
    segments = np.stack([ids[history.roots(ids.size, history.n_merges_below(t))] for t in thresholds])
    return ids, segments


def _sum_by(parts_keys: Sequence[NDArray], parts_rows: Sequence[NDArray]) -> tuple[NDArray, NDArray[np.float64]]:
    """Distinct keys (sorted) and the sum of the rows of each, over all the parts."""
    empty_keys = np.zeros(0, dtype=np.asarray(parts_keys[0]).dtype if len(parts_keys) else np.int64)
    keys = np.concatenate([*parts_keys, empty_keys])
    width = parts_rows[0].shape[1] if len(parts_rows) else 0
    rows = np.concatenate([*parts_rows, np.zeros((0, width))]).astype(np.float64)
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
