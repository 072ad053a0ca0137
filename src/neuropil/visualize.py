"""Pictures of predictions, in the style of the method's figures.

Affinities are shown black (0, boundary) to pale blue-white (1, same object); voxels
whose ground-truth affinity is 1 are tinted red. Where the prediction is white but not
red the network missed a boundary; where it is red but dark it invented one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError
from neuropil.files import save_figure_atomic

AFFINITY_COLOURS = ("#000000", "#27415e", "#8fb3d9", "#eef6ff")
"""Black through dark and light blue to pale blue-white."""


def affinity_colormap():
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("neuropil_affinity", AFFINITY_COLOURS)


def in_plane_channels(offsets, n_channels: int) -> list[int]:
    """The channels of the in-plane nearest neighbours, ``(0, -1, 0)`` and ``(0, 0, -1)``.

    Pictures show these only: long-range channels (e.g. ``(0, -9, 0)``) are 0 on a band
    as wide as their offset around every boundary, which would blur the picture.
    """
    offsets = [tuple(int(v) for v in offset) for offset in offsets]
    if len(offsets) != n_channels:
        raise NeuropilError(f"{len(offsets)} offsets for {n_channels} affinity channels")
    channels = [c for c, offset in enumerate(offsets) if offset[0] == 0 and sum(abs(v) for v in offset) == 1]
    if not channels:
        raise NeuropilError(f"no in-plane nearest-neighbour offset (0, -1, 0) or (0, 0, -1) among {offsets}")
    return channels


def in_plane_affinity(affinities: NDArray, offsets) -> NDArray[np.float32]:
    """Mean of the in-plane nearest-neighbour channels (:func:`in_plane_channels`), ``(z, y, x)``."""
    channels = in_plane_channels(offsets, len(affinities))
    return affinities[channels].mean(axis=0)


def in_plane_target(target_affinities: NDArray, target_mask: NDArray, offsets) -> tuple[NDArray, NDArray]:
    """``(z, y, x)`` ground-truth affinity 1 only where both in-plane nearest-neighbour channels are 1,
    and where both are known."""
    channels = in_plane_channels(offsets, len(target_affinities))
    return target_affinities[channels].min(axis=0), target_mask[channels].min(axis=0)


def overlay_rgb(affinity: NDArray, target: NDArray, known: NDArray | None = None, *, alpha: float = 0.45) -> NDArray:
    """RGB image (y, x, 3): ``affinity`` in the affinity colours, red where ``target`` is 1."""
    rgb = affinity_colormap()(np.clip(affinity, 0.0, 1.0))[..., :3]
    red = np.asarray(target) > 0.5
    if known is not None:
        red &= np.asarray(known) > 0.5
    rgb[red] = (1 - alpha) * rgb[red] + alpha * np.array([1.0, 0.0, 0.0])
    return rgb


def segmentation_rgb(segmentation: NDArray, *, seed: int = 0) -> NDArray:
    """Random colour per id, black for 0."""
    ids, inverse = np.unique(segmentation, return_inverse=True)
    colours = np.random.default_rng(seed).uniform(0.15, 1.0, size=(len(ids), 3))
    colours[ids == 0] = 0.0
    return colours[inverse.reshape(segmentation.shape)]


def figure_slice(
    path: str | os.PathLike,
    *,
    raw: NDArray,
    affinities: NDArray,
    target_affinities: NDArray,
    target_mask: NDArray,
    offsets,
    segmentation: NDArray | None = None,
    z: int | None = None,
    title: str = "",
) -> Path:
    """Save a PNG of one section: raw, predicted affinities, the same with ground truth in red, segmentation.

    The figure is a :class:`matplotlib.figure.Figure` drawn without pyplot, so it needs no
    display and leaves the caller's backend and pyplot figures alone.

    Parameters
    ----------
    path : path of the image (format from its suffix), written atomically
    raw : (z, y, x) ndarray of uint8, or float in [0, 1]
    affinities : (c, z, y, x) ndarray of float32 in [0, 1]
        Predicted; the in-plane nearest-neighbour channels are averaged (long-range
        channels, if any, are not shown).
    target_affinities, target_mask : (c, z, y, x) ndarray of float32
        Ground-truth affinities and where they are known (:func:`neuropil.targets.affinities_from_labels`).
    offsets : sequence of (z, y, x) int offsets, one per channel
    segmentation : (z, y, x) ndarray of int, optional
        Shown as a fourth panel, a random colour per id.
    z : int, optional
        Section shown; the middle one by default.
    title : str

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.figure import Figure

    z = raw.shape[0] // 2 if z is None else z
    if not 0 <= z < raw.shape[0]:
        raise NeuropilError(f"section z={z} is outside the volume's {raw.shape[0]} sections")
    predicted = in_plane_affinity(affinities, offsets)[z]
    target, known = (array[z] for array in in_plane_target(target_affinities, target_mask, offsets))
    panels = [
        ("raw", raw[z], "gray"),
        ("predicted affinity", predicted, affinity_colormap()),
        ("ground-truth affinity 1 in red", overlay_rgb(predicted, target, known), None),
    ]
    if segmentation is not None:
        panels.append(("segmentation", segmentation_rgb(segmentation[z]), None))
    fig = Figure(figsize=(3.2 * len(panels), 3.5), dpi=110)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for axis, (name, image, cmap) in zip(axes, panels):
        axis.imshow(
            image,
            cmap=cmap,
            vmin=0 if cmap else None,
            vmax=(255 if name == "raw" and image.max() > 1 else 1) if cmap else None,
            interpolation="nearest",
        )
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure_atomic(fig, path)
