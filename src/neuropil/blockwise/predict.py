"""Blockwise prediction: the affinities of a volume larger than memory, block by block, equal to a whole-volume pass."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
from collections.abc import Sequence

import numpy as np

from neuropil.blockwise.blocks import DEFAULT_BLOCK_SHAPE, Block, blocks, run_blocks, stopping_on_signals
from neuropil.blockwise.store import (
    discard_if_nothing_done,
    finish_output,
    job_settings,
    prepare_output,
    work_folder,
    write_region,
    zarr_output,
)
from neuropil.data.resample import resample_region, resampled_shape
from neuropil.errors import NeuropilError
from neuropil.io.volume import allowing_missing_chunks

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=2)
def _model(checkpoint: str, modified: float, device: str):
    """The checkpoint's model, loaded once per worker process (``modified`` invalidates the cache)."""
    from neuropil.checkpoint import load_model

    return load_model(checkpoint, device=device)


def _predict_block(
    block: Block, *, checkpoint: str, modified: float, raw, voxel_size, target_shape, halo, partial: str, device: str
) -> None:
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
    write_region(partial, (slice(None), *block.write), affinities[(slice(None), *inner)])


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
    allow_missing_chunks: bool | None = None,
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
    checkpoint : path of a ``checkpoint.pt`` from :class:`neuropil.train.Trainer`, or a shipped model's name
    raw : address of the raw volume (any readable format) or catalog name
    out : zarr address ``dir.zarr/key`` of the (c, z, y, x) float32 affinities, with the
        attributes of :func:`neuropil.predict.prediction_attributes` (the calibrated merge
        threshold when the checkpoint carries one)
    block_shape : (z, y, x) voxels per block, rounded up to the model's pooling grid
    voxel_size : (z, y, x) nm of ``raw`` when its file stores none
    device : torch device of every task
    scheduler, num_workers : see :func:`run_blocks`; one thread by default (PyTorch
        already uses every core in a block, and a GPU runs one block at a time)
    allow_missing_chunks : read chunks of ``raw`` that are not stored as the fill value
        rather than raising (see :func:`neuropil.io.open_volume`)

    A failed, stopped (SIGTERM, Ctrl-C: :func:`neuropil.blockwise.blocks.stopping_on_signals`)
    or killed job resumes when called again with the same settings.

    Returns
    -------
    neuropil.predict.PredictionWritten

    Raises
    ------
    NeuropilError
        A raw volume that is not 3-D or whose voxel size is unknown, an output that
        is not zarr, a bad block shape.
    """
    from neuropil.checkpoint import merge_threshold, resolve_checkpoint
    from neuropil.predict import PredictionWritten, open_raw, plan_tiles, prediction_attributes, round_up

    output = zarr_output(out)
    checkpoint = str(resolve_checkpoint(checkpoint).resolve())
    modified = _modified(checkpoint)
    model = _model(checkpoint, modified, device)
    model_voxel_size = model.config.voxel_size
    allowing = (
        contextlib.nullcontext() if allow_missing_chunks is None else allowing_missing_chunks(allow_missing_chunks)
    )
    with allowing:  # the raw volume is opened by open_raw, which takes no such option
        source = open_raw(raw, voxel_size=voxel_size, model_voxel_size=model_voxel_size)
    volume, input_voxel_size = source.volume, source.voxel_size
    target_shape = volume.shape
    if source.rescale:
        logger.info(
            "rescaling %s from %s nm to the model's %s nm block by block", raw, input_voxel_size, model_voxel_size
        )
        target_shape = resampled_shape(volume.shape, input_voxel_size, model_voxel_size)
    if len(block_shape) != 3 or any(int(b) < 1 for b in block_shape):
        raise NeuropilError(f"block shape needs 3 positive values (z y x), got {tuple(block_shape)}")
    divisor = model.divisor
    block_shape = tuple(round_up(int(b), d) for b, d in zip(block_shape, divisor))
    halo = tuple(round_up(c, d) for c, d in zip(model.context, divisor))
    plan = plan_tiles(target_shape, model, tile_shape=block_shape)
    logger.info(
        "predicting %d blocks of %s: %.0f %% of the computed voxels are the volume's, the rest the context "
        "each block reads; larger blocks waste less",
        plan.tiles,
        "x".join(map(str, block_shape)),
        100 * plan.efficiency,
    )
    shape = (model.config.out_channels, *target_shape)
    settings = job_settings(
        job="predict",
        checkpoint=checkpoint,
        modified=modified,
        raw=str(volume.address),
        voxel_size=input_voxel_size,
        shape=shape,
        block_shape=block_shape,
        halo=halo,
    )
    task = functools.partial(
        _predict_block,
        checkpoint=checkpoint,
        modified=modified,
        raw=volume,
        voxel_size=input_voxel_size,
        target_shape=target_shape,
        halo=halo,
        partial=str(output.partial),
        device=device,
    )
    volume.close()
    with stopping_on_signals(work_folder(output)):
        try:
            prepare_output(output, settings, shape, (shape[0], *block_shape), np.float32)
            run_blocks(
                task,
                blocks(target_shape, block_shape),
                work_folder(output) / "blocks",
                description="predicting",
                scheduler=scheduler,
                num_workers=num_workers,
                progress=progress,
            )
        except BaseException:
            discard_if_nothing_done([output])
            raise
        finish_output(output, model_voxel_size, prediction_attributes(model, merge_threshold(checkpoint)))
        shutil.rmtree(work_folder(output))
    return PredictionWritten(str(output.container / output.key), shape, model_voxel_size, input_voxel_size)


def _modified(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        raise NeuropilError(f"{path}: no such checkpoint") from None
