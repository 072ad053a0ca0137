"""Rescaling volumes to a target voxel size.

Voxels are aligned by their outer faces: voxel ``i`` of an axis with voxel size
``v`` spans ``[i * v, (i + 1) * v)`` nm, so a voxel's centre lies at
``(i + 0.5) * v``. The output of an axis of ``n`` voxels at ``v`` nm has
``round(n * v / t)`` voxels at the target size ``t`` (halves round up), which
gives the shapes of the method's table, e.g. SNEMI3D ``(100, 1024, 1024)`` at
``(29, 6, 6)`` nm -> ``(116, 473, 473)`` at ``(25, 13, 13)`` nm.

Three kinds of array are rescaled three ways:

``image``
    Gaussian prefilter along every axis that is downsampled (anti-aliasing,
    ``sigma = (factor - 1) / 2`` source voxels, as in :func:`skimage.transform.rescale`),
    then linear (``order=1``) or cubic (``order=3``) interpolation at the output
    voxel centres.
``labels``
    Nearest neighbour: each output voxel takes the id of the source voxel under its
    centre. Every output id occurs in the input; no id is invented.
``mask``
    Conservative: an output voxel is in the mask only if every source voxel that
    its extent overlaps is in the mask. Output extent beyond the end of the source
    (the last voxel when the size rounds up) is ignored, so a full mask stays full.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError

logger = logging.getLogger(__name__)

KINDS = ("image", "labels", "mask")

# Guards floor/ceil of physical positions against round-off (positions are in nm).
_EPSILON = 1e-9


Sizes = Sequence[float] | NDArray[np.floating]
"""Nanometres per voxel, one per axis: a sequence or a 1-D array."""


def _as_sizes(values: Sizes, ndim: int, name: str) -> NDArray[np.float64]:
    sizes = np.asarray(values, dtype=np.float64).reshape(-1)
    if sizes.size == 1 and ndim != 1:
        sizes = np.repeat(sizes, ndim)
    if sizes.size != ndim:
        raise NeuropilError(f"{name} {tuple(values)} has {sizes.size} entries for a {ndim}-D array")
    if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise NeuropilError(f"{name} {tuple(values)} must be positive nanometres")
    return sizes


def resampled_shape(shape: Sequence[int], voxel_size: Sizes, target_voxel_size: Sizes) -> tuple[int, ...]:
    """Shape of an array of ``shape`` at ``voxel_size`` rescaled to ``target_voxel_size``.

    Parameters
    ----------
    shape : tuple of int
        Source shape, ``(z, y, x)`` (any number of axes).
    voxel_size, target_voxel_size : tuple of float
        Nanometres per voxel, same axis order as ``shape``.

    Returns
    -------
    tuple of int
        ``round(shape * voxel_size / target_voxel_size)`` per axis (halves round
        up), at least 1 for a non-empty axis.

    Examples
    --------
    >>> resampled_shape((100, 1024, 1024), (29, 6, 6), (25, 13, 13))
    (116, 473, 473)
    """
    shape = tuple(int(n) for n in shape)
    source = _as_sizes(voxel_size, len(shape), "voxel_size")
    target = _as_sizes(target_voxel_size, len(shape), "target_voxel_size")
    extent = np.asarray(shape, dtype=np.float64) * source / target
    counts = np.floor(extent + 0.5 + _EPSILON).astype(np.int64)
    counts = np.where(np.asarray(shape) > 0, np.maximum(counts, 1), 0)
    return tuple(int(n) for n in counts)


def _centres(count: int, source_size: float, target_size: float) -> NDArray[np.float64]:
    """Output voxel centres in source voxel coordinates (source centre ``j`` is at ``j``)."""
    return (np.arange(count, dtype=np.float64) + 0.5) * (target_size / source_size) - 0.5


def _resample_labels_axis(array: NDArray, axis: int, count: int, source_size: float, target_size: float) -> NDArray:
    length = array.shape[axis]
    centres = (np.arange(count) + 0.5) * (target_size / source_size)
    indices = np.clip(np.floor(centres + _EPSILON).astype(np.intp), 0, length - 1)
    return np.take(array, indices, axis=axis)


def _resample_mask_axis(array: NDArray, axis: int, count: int, source_size: float, target_size: float) -> NDArray:
    length = array.shape[axis]
    scale = target_size / source_size
    starts = np.floor(np.arange(count) * scale + _EPSILON).astype(np.intp)
    stops = np.ceil((np.arange(count) + 1) * scale - _EPSILON).astype(np.intp)
    starts = np.clip(starts, 0, length - 1)
    stops = np.clip(stops, starts + 1, length)
    # Count source voxels outside the mask in [start, stop) with a cumulative sum.
    outside = np.cumsum(~array, axis=axis, dtype=np.int64)
    pad = [(0, 0)] * array.ndim
    pad[axis] = (1, 0)
    outside = np.pad(outside, pad)
    return (np.take(outside, stops, axis=axis) - np.take(outside, starts, axis=axis)) == 0


def _resample_linear_axis(array: NDArray, axis: int, positions: NDArray[np.float64]) -> NDArray:
    """Linear interpolation along ``axis`` at ``positions`` (source voxel coordinates, within the array)."""
    length = array.shape[axis]
    count = positions.size
    lower = np.floor(positions).astype(np.intp)
    upper = np.minimum(lower + 1, length - 1)
    weight_shape = [1] * array.ndim
    weight_shape[axis] = count
    weight = (positions - lower).astype(array.dtype).reshape(weight_shape)
    below = np.take(array, lower, axis=axis)
    above = np.take(array, upper, axis=axis)
    return below + weight * (above - below)


def resample(
    array: NDArray,
    *,
    voxel_size: Sequence[float],
    target_voxel_size: Sequence[float],
    kind: str = "image",
    order: int = 1,
) -> NDArray:
    """Rescale ``array`` from ``voxel_size`` to ``target_voxel_size``.

    Parameters
    ----------
    array : (z, y, x) ndarray
        Any number of axes; ``image`` of any real dtype, ``labels`` of integer dtype,
        ``mask`` of bool (or 0/non-zero integers).
    voxel_size : tuple of float
        Nanometres per voxel of ``array``, same axis order (z first).
    target_voxel_size : tuple of float
        Nanometres per voxel wanted.
    kind : {"image", "labels", "mask"}
        How to rescale (see the module docstring).
    order : {1, 3}
        Interpolation of images: 1 linear, 3 cubic spline. Ignored for labels and masks.

    Returns
    -------
    ndarray of shape :func:`resampled_shape` ``(array.shape, voxel_size, target_voxel_size)``
        ``image``: the input dtype (integers rounded and clipped to their range);
        ``labels``: the input dtype, ids a subset of the input's; ``mask``: bool.
        A new array; ``array`` is not modified.

    Raises
    ------
    NeuropilError
        For an unknown ``kind`` or ``order``, float labels, or voxel sizes that do not
        match the array's axes.
    """
    if kind not in KINDS:
        raise NeuropilError(f"resample kind '{kind}' is not one of {', '.join(KINDS)}")
    if order not in (1, 3):
        raise NeuropilError(f"resample order {order} is not 1 (linear) or 3 (cubic)")
    array = np.asarray(array)
    source = _as_sizes(voxel_size, array.ndim, "voxel_size")
    target = _as_sizes(target_voxel_size, array.ndim, "target_voxel_size")
    shape = resampled_shape(array.shape, source, target)
    if kind == "labels" and not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise NeuropilError(f"labels must be integers, got {array.dtype}")
    if array.size == 0:
        return np.zeros(shape, dtype=bool if kind == "mask" else array.dtype)
    logger.debug("resample %s %s at %s nm -> %s at %s nm", kind, array.shape, tuple(source), shape, tuple(target))

    if kind == "labels":
        result = array
        for axis in range(array.ndim):
            if shape[axis] != array.shape[axis] or source[axis] != target[axis]:
                result = _resample_labels_axis(result, axis, shape[axis], source[axis], target[axis])
        return result.copy() if result is array else result

    if kind == "mask":
        result = array.astype(bool, copy=True)
        for axis in range(array.ndim):
            if shape[axis] != array.shape[axis] or source[axis] != target[axis]:
                result = _resample_mask_axis(result, axis, shape[axis], source[axis], target[axis])
        return result

    return _resample_image(array, source, target, shape, order)


def _resample_image(
    array: NDArray, source: NDArray[np.float64], target: NDArray[np.float64], shape: tuple[int, ...], order: int
) -> NDArray:
    from scipy import ndimage

    work_dtype = np.float64 if array.dtype == np.float64 else np.float32
    result = array.astype(work_dtype, copy=True)
    sigma = _antialiasing_sigma(source, target)
    if np.any(sigma > 0):
        result = ndimage.gaussian_filter(result, sigma=sigma, mode="nearest")
    factors = target / source
    if order == 1:
        for axis in range(array.ndim):
            if shape[axis] != array.shape[axis] or source[axis] != target[axis]:
                positions = np.clip(_centres(shape[axis], source[axis], target[axis]), 0, array.shape[axis] - 1)
                result = _resample_linear_axis(result, axis, positions)
    else:
        # Output centre i sits at source coordinate (i + 0.5) * factor - 0.5.
        result = ndimage.affine_transform(
            result, factors, offset=0.5 * factors - 0.5, output_shape=shape, order=3, mode="nearest"
        )
    return _to_dtype(result, array.dtype)


def _to_dtype(result: NDArray, dtype) -> NDArray:
    """Interpolated values in the input's dtype (integers rounded and clipped to their range)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        result = np.clip(np.rint(result), info.min, info.max)
    elif np.issubdtype(dtype, np.bool_):
        result = result >= 0.5
    return result.astype(dtype, copy=False)


def _antialiasing_sigma(source: NDArray[np.float64], target: NDArray[np.float64]) -> NDArray[np.float64]:
    """Gaussian sigma (source voxels) before downsampling each axis; 0 where it is not downsampled."""
    return np.maximum(0.0, (target / source - 1.0) / 2.0)


def resample_region(
    volume,
    region: Sequence[slice],
    *,
    voxel_size: Sequence[float],
    target_voxel_size: Sequence[float],
) -> NDArray:
    """``resample(volume, kind="image")[region]``, reading only the source voxels that region needs.

    For volumes that do not fit in memory: ``volume`` is anything sliceable with a
    ``shape`` and ``dtype`` (a :class:`neuropil.io.Volume`, a numpy array), and
    ``region`` a tuple of slices (step 1) of the rescaled volume. The source is read
    with the anti-aliasing filter's reach beyond the interpolation's, so the result
    equals that of rescaling the whole volume (linear interpolation, tested).
    """
    from scipy import ndimage

    shape = tuple(int(n) for n in volume.shape)
    if len(region) != len(shape):
        raise NeuropilError(f"region has {len(region)} slices for a {len(shape)}-D volume")
    if any(part.step not in (None, 1) for part in region):
        raise NeuropilError(f"region slices must have step 1, got {tuple(region)}")
    source = _as_sizes(voxel_size, len(shape), "voxel_size")
    target = _as_sizes(target_voxel_size, len(shape), "target_voxel_size")
    out_shape = resampled_shape(shape, source, target)
    sigma = _antialiasing_sigma(source, target)
    # scipy's gaussian_filter reaches int(4 * sigma + 0.5) voxels (truncate=4)
    reach = [int(4.0 * s + 0.5) if s > 0 else 0 for s in sigma]
    positions: list[NDArray[np.float64] | None] = []
    window: list[slice] = []
    for axis, part in enumerate(region):
        start, stop, _ = part.indices(out_shape[axis])
        resampled = shape[axis] != out_shape[axis] or source[axis] != target[axis]
        if resampled:
            centres = np.clip(_centres(out_shape[axis], source[axis], target[axis]), 0, shape[axis] - 1)[start:stop]
            low = int(np.floor(centres[0])) if centres.size else 0
            high = min(int(np.floor(centres[-1])) + 2, shape[axis]) if centres.size else 0
        else:
            centres, low, high = None, start, stop
        first, last = max(low - reach[axis], 0), min(high + reach[axis], shape[axis])
        window.append(slice(first, last))
        positions.append(None if centres is None else centres - first)
    crop = np.asarray(volume[tuple(window)])
    work_dtype = np.float64 if crop.dtype == np.float64 else np.float32
    result = crop.astype(work_dtype, copy=True)
    if np.any(sigma > 0):
        result = ndimage.gaussian_filter(result, sigma=sigma, mode="nearest")
    for axis, (part, where) in enumerate(zip(region, positions)):
        if where is None:
            start, stop, _ = part.indices(out_shape[axis])
            index = [slice(None)] * result.ndim
            index[axis] = slice(start - window[axis].start, stop - window[axis].start)
            result = result[tuple(index)]
        else:
            result = _resample_linear_axis(result, axis, where)
    return _to_dtype(result, crop.dtype)


def labels_on_grid(
    labels: NDArray, *, voxel_size: Sequence[float], target_voxel_size: Sequence[float], shape: Sequence[int]
) -> NDArray:
    """Labels at ``voxel_size`` brought onto a grid of ``shape`` voxels at ``target_voxel_size`` (nearest neighbour).

    For scoring a segmentation made at a model's voxel size against ground truth at its
    own: the rescaled shape can differ from ``shape`` by a voxel per axis where the sizes
    do not divide (rounding), so the result is cut, or its last voxels repeated, to fit.
    """
    shape = tuple(int(s) for s in shape)
    rescaled = resample(labels, voxel_size=voxel_size, target_voxel_size=target_voxel_size, kind="labels")
    if rescaled.ndim != len(shape) or any(abs(r - s) > 1 for r, s in zip(rescaled.shape, shape)):
        raise NeuropilError(
            f"labels of shape {labels.shape} at {tuple(voxel_size)} nm are {rescaled.shape} at "
            f"{tuple(target_voxel_size)} nm, not about {shape}: not the same volume"
        )
    rescaled = rescaled[tuple(slice(0, s) for s in shape)]
    return np.pad(rescaled, [(0, s - r) for s, r in zip(shape, rescaled.shape)], mode="edge")
