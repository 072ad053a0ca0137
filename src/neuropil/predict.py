"""Whole-volume affinity prediction in overlapping tiles.

Each tile is read with ``halo`` voxels of context on every side that lies inside the
volume, and only its centre is kept. The volume is mirrored by ``border`` voxels on each
side (and up to whole tiles); tile windows are clipped to that padded volume, and every
window edge sits on the model's pooling grid. With ``halo >= model.context`` every kept
voxel therefore sees exactly the input it would see in one pass over the whole volume
(tiles touching the volume's edge see the same edge): no seams.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm.auto import tqdm

from neuropil.checkpoint import load_model, merge_threshold
from neuropil.data.catalog import raw_in_catalog
from neuropil.data.resample import resample
from neuropil.data.volumes import normalize_raw
from neuropil.errors import NeuropilError
from neuropil.io import Volume, open_volume, write_volume
from neuropil.model import UNet3D

logger = logging.getLogger(__name__)

ATTRIBUTE = "neuropil"
"""The attribute of written affinities that describes them (:func:`prediction_attributes`)."""


def prediction_attributes(model: UNet3D, threshold: float | None) -> dict:
    """What is stored on predicted affinities: ``{"neuropil": {"offsets": [...], "merge_threshold": t}}``.

    ``offsets`` are the model's (one per channel, (z, y, x) voxels); ``merge_threshold``,
    present only when the checkpoint carries one, is the calibrated threshold of
    mean-affinity agglomeration that ``neuropil segment`` uses when given none.
    """
    described: dict = {"offsets": [[int(v) for v in offset] for offset in model.config.offsets]}
    if threshold is not None:
        described["merge_threshold"] = float(threshold)
    return {ATTRIBUTE: described}


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_grid(shape: Sequence[int], tile_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Start corners of the output tiles that cover ``shape`` (one entry per axis)."""
    if len(shape) != len(tile_shape):
        raise NeuropilError(f"tile shape {tuple(tile_shape)} has {len(tile_shape)} axes, the volume {len(shape)}")
    return list(itertools.product(*(range(0, s, t) for s, t in zip(shape, tile_shape))))


def _three_integers(values: Sequence[float], name: str, *, minimum: int) -> tuple[int, int, int]:
    """``values`` as three integers ``(z, y, x)`` of at least ``minimum``; anything else raises."""
    numbers = tuple(int(v) for v in values)
    if len(numbers) != 3 or min(numbers) < minimum:
        raise NeuropilError(f"{name} needs 3 integers >= {minimum} (z, y, x), got {tuple(values)}")
    return numbers


def predict_affinities(
    raw: NDArray,
    model: UNet3D,
    *,
    tile_shape: Sequence[int] | None = (32, 128, 128),
    halo: Sequence[int] | None = None,
    border: Sequence[int] | None = None,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> NDArray[np.float32]:
    """Affinities of a whole volume.

    Parameters
    ----------
    raw : (z, y, x) ndarray
        Image at the model's voxel size; integer types are scaled by their range to [0, 1].
    model : UNet3D
        Moved to ``device``; run in evaluation mode, then left in the mode it had.
    tile_shape : (z, y, x) voxels kept per tile, rounded up to the model's divisor;
        ``None`` predicts the whole volume in one pass.
    halo : (z, y, x) context voxels per side; default ``model.context`` (exact).
        A smaller halo is faster but tiles may then differ near their borders.
    border : (z, y, x) voxels mirrored outside the volume; default two pooling cells.
        Only affects predictions next to the volume's edge, not the agreement of tiles.
    batch_size : tiles per forward pass.

    Returns
    -------
    affinities : (c, z, y, x) ndarray of float32 in [0, 1]
    """
    raw = np.asarray(raw)
    if raw.ndim != 3:
        raise NeuropilError(f"expected a 3-D (z, y, x) volume, got shape {raw.shape}")
    if raw.size == 0:
        raise NeuropilError("cannot predict an empty volume")
    if batch_size < 1:
        raise NeuropilError(f"batch size must be >= 1, got {batch_size}")
    image = normalize_raw(raw)
    if not np.isfinite(image).all():
        raise NeuropilError("raw volume contains NaN or infinite values")
    divisor = model.divisor
    context = model.context if halo is None else _three_integers(halo, "halo", minimum=0)
    halo = tuple(round_up(h, d) for h, d in zip(context, divisor))
    border = tuple(2 * d for d in divisor) if border is None else _three_integers(border, "border", minimum=0)
    border = tuple(min(round_up(b, d), h) for b, d, h in zip(border, divisor, halo))
    if tile_shape is None:
        tile = tuple(round_up(s, d) for s, d in zip(raw.shape, divisor))
    else:
        wanted = _three_integers(tile_shape, "tile shape", minimum=1)
        tile = tuple(round_up(min(t, round_up(s, d)), d) for t, s, d in zip(wanted, raw.shape, divisor))
    covered = tuple(round_up(s, t) for s, t in zip(raw.shape, tile))
    padding = [(b, b + c - s) for b, c, s in zip(border, covered, raw.shape)]
    padded = np.pad(image, padding, mode="reflect" if min(raw.shape) > 1 else "edge")
    starts = tile_grid(covered, tile)
    out = np.zeros((model.config.out_channels, *covered), dtype=np.float32)
    device = torch.device(device)
    # Prediction runs in evaluation mode (fixed normalization statistics: exact tiles); the
    # caller's mode is put back afterwards, so predicting during training changes nothing.
    was_training = model.training
    model = model.to(device).eval()

    def window(start):
        # In padded coordinates; clipped to the padded volume, aligned to the pooling grid.
        low = [max(s - h, -b) + b for s, h, b in zip(start, halo, border)]
        high = [min(s + t + h, c + b) + b for s, t, h, c, b in zip(start, tile, halo, covered, border)]
        return tuple(slice(lo, hi) for lo, hi in zip(low, high))

    # Tiles with equal window shapes share a forward pass.
    groups: dict[tuple[int, ...], list] = {}
    for start in starts:
        region = window(start)
        groups.setdefault(tuple(r.stop - r.start for r in region), []).append((start, region))
    bar = tqdm(total=len(starts), desc="predicting", unit="tile", disable=not progress or len(starts) < 2)
    try:
        with torch.inference_mode():
            for members in groups.values():
                for first in range(0, len(members), batch_size):
                    batch = members[first : first + batch_size]
                    inputs = np.stack([padded[region] for _, region in batch])
                    tensor = torch.from_numpy(inputs[:, None]).to(device)
                    if tensor.shape[0] > 1:
                        tensor = tensor.contiguous(memory_format=torch.channels_last_3d)
                    prediction = torch.sigmoid(model(tensor)).float().cpu().numpy()
                    for (start, region), block in zip(batch, prediction):
                        inner = tuple(
                            slice(s + b - r.start, s + b - r.start + t)
                            for s, b, r, t in zip(start, border, region, tile)
                        )
                        kept = (slice(None), *(slice(s, s + t) for s, t in zip(start, tile)))
                        out[kept] = block[(slice(None), *inner)]
                    bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    return np.ascontiguousarray(out[(slice(None), *(slice(0, s) for s in raw.shape))])


class PredictionWritten(NamedTuple):
    """What :func:`predict_file` wrote."""

    address: str
    shape: tuple[int, ...]
    """(c, z, y, x) of the affinities."""
    voxel_size: tuple[float, float, float]
    """nm, the model's; the affinities are at this voxel size."""
    input_voxel_size: tuple[float, float, float]
    """nm, the raw volume's (from its file, the catalog or the caller)."""


def predict_file(
    checkpoint: str | os.PathLike,
    raw: str,
    out: str | os.PathLike,
    *,
    voxel_size: Sequence[float] | None = None,
    tile_shape: Sequence[int] | None = (32, 128, 128),
    device: str = "cpu",
    progress: bool = True,
) -> PredictionWritten:
    """Predict affinities of the volume at ``raw`` with a trained checkpoint and write them.

    The raw volume is rescaled (anti-aliased) to the model's voxel size when its own
    differs; its voxel size comes from the file's metadata, else from the catalog (when
    ``raw`` is a catalog name, ``NAME/VOLUME`` or a catalog volume's address), else from
    ``voxel_size``. It must be known: a network applied at the wrong scale fails quietly.

    Parameters
    ----------
    checkpoint : path of a ``checkpoint.pt`` from :class:`neuropil.train.Trainer`, or the name
        of a shipped model (``neuropil models``)
    raw : volume address (``file.h5:key``, ``dir.zarr/key``, ``stack.tif``, a folder of
        slices) or catalog name
    out : output address; receives (c, z, y, x) float32 affinities at the model's voxel
        size, written atomically with the voxel size and :func:`prediction_attributes`
        (the offsets and the checkpoint's calibrated merge threshold) stored; a
        ``name.ome.zarr`` (or ``name.ome.zarr/key``) address gets a multiscale OME-Zarr
        image (channel axis ``c``, block-mean levels), its attributes on the image's group
    voxel_size : (z, y, x) nm of ``raw``, optional; must agree with the file's if it has one
    tile_shape : (z, y, x) voxels per tile (see :func:`predict_affinities`)

    Raises
    ------
    NeuropilError
        Unreadable checkpoint or volume, a voxel size that is unknown or disagrees with
        the file's, a non-3-D volume.
    """

    if tile_shape is not None:
        _three_integers(tile_shape, "tile shape", minimum=1)
    model = load_model(checkpoint, device=device)
    model_voxel_size = model.config.voxel_size
    source = open_raw(raw, voxel_size=voxel_size, model_voxel_size=model_voxel_size)
    with source.volume as volume:
        image = volume.read()
    input_voxel_size = source.voxel_size
    if source.rescale:
        logger.info("rescaling %s from %s nm to the model's %s nm", raw, input_voxel_size, model_voxel_size)
        image = resample(image, voxel_size=input_voxel_size, target_voxel_size=model_voxel_size, kind="image")
    affinities = predict_affinities(image, model, tile_shape=tile_shape, device=device, progress=progress)
    threshold = merge_threshold(checkpoint)
    written = write_volume(
        out,
        affinities.astype(np.float32, copy=False),
        voxel_size=model_voxel_size,
        attributes=prediction_attributes(model, threshold),
        labels=False,
    )
    return PredictionWritten(str(written), tuple(affinities.shape), model_voxel_size, input_voxel_size)


class RawSource(NamedTuple):
    """A raw volume opened for prediction, with its voxel size resolved."""

    volume: Volume
    """The open (z, y, x) volume; close it when done."""
    voxel_size: tuple[float, float, float]
    """Its voxel size in nm (file, catalog or given)."""
    rescale: bool
    """Whether it differs from the model's, so the volume is rescaled to the model's voxel size."""


def open_raw(raw: str, *, voxel_size: Sequence[float] | None, model_voxel_size: Sequence[float]) -> RawSource:
    """Open a raw volume for prediction: the one place its voxel size is resolved and checked.

    The voxel size comes from the file's metadata, else from the catalog (when ``raw``
    is a catalog name, ``NAME/VOLUME`` or a catalog volume's address), else from
    ``voxel_size``; given values must agree with the file's and the catalog's. It must be
    known: a network applied at the wrong scale fails quietly. Used by
    :func:`predict_file` and :func:`neuropil.blockwise.predict_blockwise`.

    Raises
    ------
    NeuropilError
        A volume that is not 3-D, a voxel size that is unknown or disagrees.
    """

    address, catalog_voxel_size = raw_in_catalog(raw) or (raw, None)
    given = None if voxel_size is None else tuple(float(v) for v in voxel_size)
    if given is not None and len(given) != 3:
        raise NeuropilError(f"--voxel-size needs 3 values (z y x nm), got {len(given)}")
    if given is not None and catalog_voxel_size is not None and not np.allclose(given, catalog_voxel_size, rtol=1e-3):
        raise NeuropilError(f"{raw}: voxel size mismatch: given {given} nm, the catalog says {catalog_voxel_size} nm")
    volume = open_volume(address, voxel_size=given or catalog_voxel_size)
    if volume.ndim != 3 or volume.voxel_size is None:
        volume.close()
        if volume.ndim != 3:
            raise NeuropilError(f"{volume.address}: expected a 3-D (z, y, x) volume, got shape {volume.shape}")
        raise NeuropilError(
            f"{address}: voxel size unknown (not in the file or the catalog); give --voxel-size Z Y X "
            f"(the model is for {tuple(model_voxel_size)} nm)"
        )
    z, y, x = (float(v) for v in volume.voxel_size)
    rescale = not np.allclose((z, y, x), model_voxel_size, rtol=1e-3)
    return RawSource(volume, (z, y, x), rescale)
