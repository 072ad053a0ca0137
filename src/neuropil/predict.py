"""Whole-volume affinity prediction in overlapping tiles.

Each tile is read with ``halo`` voxels of context on every side and only its centre is
kept. The volume is first padded (mirrored) by the halo and up to whole tiles, and tile
starts sit on the model's pooling grid, so with ``halo >= model.context`` every kept
voxel sees exactly the input it would see in one pass over the whole volume: no seams.
"""

from __future__ import annotations

import itertools
import logging
from typing import Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm.auto import tqdm

from neuropil.data.sampling import normalize_raw
from neuropil.errors import NeuropilError
from neuropil.model import UNet3D

logger = logging.getLogger(__name__)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_grid(shape: Sequence[int], tile_shape: Sequence[int]) -> list[tuple[int, int, int]]:
    """Start corners of the output tiles that cover ``shape``."""
    return list(itertools.product(*(range(0, s, t) for s, t in zip(shape, tile_shape))))


def predict_affinities(
    raw: NDArray,
    model: UNet3D,
    *,
    tile_shape: Sequence[int] | None = (32, 128, 128),
    halo: Sequence[int] | None = None,
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
    tile_shape : (z, y, x) voxels kept per tile, rounded up to the model's divisor;
        ``None`` predicts the whole volume in one pass.
    halo : (z, y, x) context voxels per side; default ``model.context`` (exact).
        A smaller halo is faster but tiles may then differ near their borders.
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
    image = normalize_raw(raw)
    if not np.isfinite(image).all():
        raise NeuropilError("raw volume contains NaN or infinite values")
    divisor = model.divisor
    halo = tuple(model.context if halo is None else (int(h) for h in halo))
    halo = tuple(_round_up(h, d) for h, d in zip(halo, divisor))
    if tile_shape is None:
        tile = tuple(_round_up(s, d) for s, d in zip(raw.shape, divisor))
    else:
        tile = tuple(_round_up(min(int(t), _round_up(s, d)), d) for t, s, d in zip(tile_shape, raw.shape, divisor))
    covered = tuple(_round_up(s, t) for s, t in zip(raw.shape, tile))
    padding = [(h, h + c - s) for h, c, s in zip(halo, covered, raw.shape)]
    padded = np.pad(image, padding, mode="reflect" if min(raw.shape) > 1 else "edge")
    starts = tile_grid(covered, tile)
    out = np.zeros((model.config.out_channels, *covered), dtype=np.float32)
    device = torch.device(device)
    model = model.to(device).eval()
    bar = tqdm(total=len(starts), desc="predicting", unit="tile", disable=not progress or len(starts) < 2)
    with torch.inference_mode():
        for first in range(0, len(starts), batch_size):
            batch_starts = starts[first : first + batch_size]
            inputs = np.stack(
                [padded[tuple(slice(s, s + t + 2 * h) for s, t, h in zip(start, tile, halo))] for start in batch_starts]
            )
            tensor = torch.from_numpy(inputs[:, None]).to(device)
            if tensor.shape[0] > 1:
                tensor = tensor.contiguous(memory_format=torch.channels_last_3d)
            prediction = torch.sigmoid(model(tensor)).float().cpu().numpy()
            for start, block in zip(batch_starts, prediction):
                kept = block[(slice(None), *(slice(h, h + t) for h, t in zip(halo, tile)))]
                out[(slice(None), *(slice(s, s + t) for s, t in zip(start, tile)))] = kept
            bar.update(len(batch_starts))
    bar.close()
    return np.ascontiguousarray(out[(slice(None), *(slice(0, s) for s in raw.shape))])
