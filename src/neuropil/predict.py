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

from neuropil.checkpoint import load_model, merge_threshold
from neuropil.data.catalog import raw_in_catalog
from neuropil.data.resample import resample
from neuropil.data.volumes import normalize_raw
from neuropil.errors import NeuropilError
from neuropil.io import Volume, open_volume, write_volume
from neuropil.model import UNet3D
from neuropil.progress import progress as progress_bar

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


BYTES_PER_CHANNEL_VOXEL = 16
"""Peak memory of an inference pass per input voxel, per channel of each level scaled by the
level's voxel count (:func:`pass_bytes`), plus :data:`BYTES_PER_VOXEL`. Fitted to the peak
resident memory one pass adds on this kind of CPU, for U-Nets of base 8, 16 and 32 channels
(``benchmarks/predict.py`` prints the estimate beside the measurement)."""
BYTES_PER_VOXEL = 100
"""The part of a pass's memory per input voxel that does not grow with the channels (input,
output, the allocator's slack)."""

CPU_MEMORY_SHARE = 0.25
"""The default budget of a CPU pass: this share of the available memory, at most :data:`CPU_MEMORY_CAP`."""
CPU_MEMORY_CAP = 8 * 2**30
GPU_MEMORY_SHARE = 0.5
"""The default budget of a GPU pass: this share of the device's free memory."""


def pass_bytes(model: UNet3D, window: Sequence[int], batch: int = 1) -> int:
    """Estimated peak memory (bytes) of one inference pass over ``batch`` windows of shape ``window``.

    A pass holds a few float32 activations of each level at once (the skip connection,
    a convolution's input and output), so its memory is proportional to the voxels times
    the sum over levels of the level's channels divided by its pooling.
    """
    factors = model.config.factors
    channels = [model.config.base_channels * model.config.channel_factor**level for level in range(model.config.depth)]
    per_voxel, scale = 0.0, 1
    for level, width in enumerate(channels):
        per_voxel += width / scale
        if level < len(factors):
            scale *= int(np.prod(factors[level]))
    per_voxel = per_voxel * BYTES_PER_CHANNEL_VOXEL + BYTES_PER_VOXEL
    return int(per_voxel * int(np.prod(window)) * batch)


def memory_budget(device: str | torch.device = "cpu") -> int:
    """Bytes a prediction pass may use on ``device`` by default.

    CPU: :data:`CPU_MEMORY_SHARE` of the memory available now (``MemAvailable`` of
    ``/proc/meminfo``; 4 GiB where it cannot be read), at most :data:`CPU_MEMORY_CAP`.
    CUDA: :data:`GPU_MEMORY_SHARE` of the device's free memory.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_MEMORY_SHARE)
    available = 16 * 2**30
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return int(min(available * CPU_MEMORY_SHARE, CPU_MEMORY_CAP))


class TilePlan(NamedTuple):
    """How a volume is cut into tiles (:func:`plan_tiles`)."""

    tile: tuple[int, int, int]
    """(z, y, x) voxels kept per tile (the last tile along an axis may keep fewer)."""
    halo: tuple[int, int, int]
    """(z, y, x) voxels of context read on each side of a tile, where the volume has them."""
    border: tuple[int, int, int]
    """(z, y, x) voxels mirrored outside the volume."""
    covered: tuple[int, int, int]
    """(z, y, x) the volume's shape rounded up to the model's pooling (the tiles cover this)."""
    windows: tuple[int, int, int]
    """(z, y, x) the largest window a pass reads."""
    computed: int
    """Voxels all passes read together: the volume's voxels plus every tile's context."""

    @property
    def tiles(self) -> int:
        return int(np.prod([-(-c // t) for c, t in zip(self.covered, self.tile)]))

    @property
    def efficiency(self) -> float:
        """The volume's voxels over the voxels computed: 1 for one pass over the volume."""
        return float(np.prod(self.covered)) / self.computed


def _axis_windows(covered: int, tile: int, halo: int, border: int) -> tuple[int, int]:
    """Along one axis: the total length of the tiles' windows and the longest window."""
    starts = np.arange(0, covered, tile)
    lengths = np.minimum(starts + tile + halo, covered + border) - np.maximum(starts - halo, -border)
    return int(lengths.sum()), int(lengths.max())


def _candidate_tiles(covered: int, divisor: int) -> list[int]:
    """Tile lengths to try along an axis: even splits into 1..16 tiles, then a geometric ladder down to ``divisor``."""
    lengths = {round_up(-(-covered // n), divisor) for n in range(1, 17)}
    length = float(covered)
    while length > divisor:
        length /= 1.25
        lengths.add(round_up(max(int(length), 1), divisor))
    return sorted(value for value in lengths if divisor <= value <= covered)


def plan_tiles(
    shape: Sequence[int],
    model: UNet3D,
    *,
    tile_shape: Sequence[int] | None = None,
    halo: Sequence[int] | None = None,
    border: Sequence[int] | None = None,
    memory: int | None = None,
    device: str | torch.device = "cpu",
) -> TilePlan:
    """The tiles of a prediction of a volume of ``shape``; see :func:`predict_affinities`.

    Without ``tile_shape``, the tile whose passes compute the fewest voxels in total
    while one pass stays within ``memory`` bytes (:func:`pass_bytes`): one pass over the
    whole volume when that fits.

    Raises
    ------
    NeuropilError
        A shape or halo that is not three non-negative integers, or a budget too small for
        the smallest tile.
    """
    shape = _three_integers(shape, "volume shape", minimum=1)
    divisor = model.divisor
    context = model.context if halo is None else _three_integers(halo, "halo", minimum=0)
    halos = tuple(round_up(h, d) for h, d in zip(context, divisor))
    mirrored = (0, 0, 0) if border is None else _three_integers(border, "border", minimum=0)
    borders = tuple(min(round_up(b, d), h) for b, d, h in zip(mirrored, divisor, halos))
    covered = tuple(round_up(s, d) for s, d in zip(shape, divisor))
    if tile_shape is not None:
        wanted = _three_integers(tile_shape, "tile shape", minimum=1)
        tile = tuple(min(round_up(t, d), c) for t, d, c in zip(wanted, divisor, covered))
    else:
        budget = memory_budget(device) if memory is None else int(memory)
        per_axis = []
        for c, d, h, b in zip(covered, divisor, halos, borders):
            lengths = _candidate_tiles(c, d)
            totals, longest = zip(*(_axis_windows(c, t, h, b) for (t,) in zip(lengths)))
            per_axis.append((np.array(lengths), np.array(totals, dtype=np.float64), np.array(longest, np.float64)))
        (tz, cz, wz), (ty, cy, wy), (tx, cx, wx) = per_axis
        cost = cz[:, None, None] * cy[None, :, None] * cx[None, None, :]
        window = wz[:, None, None] * wy[None, :, None] * wx[None, None, :]
        fits = window * (pass_bytes(model, (1, 1, 1))) <= budget
        if not fits.any():
            smallest = tuple(_axis_windows(c, d, h, b)[1] for c, d, h, b in zip(covered, divisor, halos, borders))
            raise NeuropilError(
                f"a prediction pass needs at least {pass_bytes(model, smallest) / 2**20:.3g} MiB (a window of "
                f"{smallest} voxels: the model's context); the memory budget is {budget / 2**20:.3g} MiB"
            )
        # fewest voxels computed; among equal costs, the largest tile (fewer passes)
        cheapest = np.where(fits, cost, np.inf).min()
        best = fits & (cost <= cheapest * (1 + 1e-9))
        z, y, x = np.unravel_index(int(np.argmax(np.where(best, window, -1.0))), window.shape)
        tile = (int(tz[z]), int(ty[y]), int(tx[x]))
    spans = [_axis_windows(c, t, h, b) for c, t, h, b in zip(covered, tile, halos, borders)]
    computed = int(np.prod([total for total, _ in spans]))
    windows = tuple(longest for _, longest in spans)
    return TilePlan(tile, halos, borders, covered, windows, computed)  # type: ignore[arg-type]


def predict_affinities(
    raw: NDArray,
    model: UNet3D,
    *,
    tile_shape: Sequence[int] | None = None,
    halo: Sequence[int] | None = None,
    border: Sequence[int] | None = None,
    memory: int | None = None,
    batch_size: int = 1,
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
        default: chosen from ``memory`` (:func:`plan_tiles`): one pass over the whole
        volume when it fits, else the tiles that compute the fewest voxels in total.
    halo : (z, y, x) context voxels per side; default ``model.context`` (exact).
        A smaller halo is faster but tiles may then differ near their borders.
    border : (z, y, x) voxels mirrored outside the volume, rounded up to the model's
        pooling; default none: the network pads with zeros at the volume's edge as it
        did at the edges of its training patches. Only changes predictions next to the
        volume's edge, not the agreement of tiles.
    memory : bytes one pass may use; default :func:`memory_budget` of ``device``.
    batch_size : tiles of equal shape per forward pass.

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
    plan = plan_tiles(raw.shape, model, tile_shape=tile_shape, halo=halo, border=border, memory=memory, device=device)
    tile, halo, border, covered = plan.tile, plan.halo, plan.border, plan.covered
    if plan.tiles > 1:
        logger.info(
            "predicting %s voxels in %d tiles of %s (windows up to %s): %.0f %% of the computed voxels are "
            "the volume's, the rest context; a larger memory budget (--memory) allows larger tiles",
            "x".join(map(str, raw.shape)),
            plan.tiles,
            "x".join(map(str, tile)),
            "x".join(map(str, plan.windows)),
            100 * plan.efficiency,
        )
    # the part of the last pooling cell beyond the volume, and the border, are mirrored
    padding = [(b, b + c - s) for b, c, s in zip(border, covered, raw.shape)]
    if any(before or after for before, after in padding):
        image = np.pad(image, padding, mode="reflect" if min(raw.shape) > 1 else "edge")
    padded = image
    starts = tile_grid(covered, tile)
    out = np.empty((model.config.out_channels, *covered), dtype=np.float32)
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
    bar = progress_bar(total=len(starts), desc="predicting", unit="tile", disable=not progress or len(starts) < 2)
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
                        kept_shape = [min(t, c - s) for s, t, c in zip(start, tile, covered)]
                        inner = tuple(
                            slice(s + b - r.start, s + b - r.start + k)
                            for s, b, r, k in zip(start, border, region, kept_shape)
                        )
                        kept = (slice(None), *(slice(s, s + k) for s, k in zip(start, kept_shape)))
                        out[kept] = block[(slice(None), *inner)]
                    bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    if out.shape[1:] == raw.shape:
        return out
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
    tile_shape: Sequence[int] | None = None,
    memory: int | None = None,
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
    tile_shape, memory : (z, y, x) voxels per tile, and bytes per pass (see :func:`predict_affinities`)

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
    affinities = predict_affinities(
        image, model, tile_shape=tile_shape, memory=memory, device=device, progress=progress
    )
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
