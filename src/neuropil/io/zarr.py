"""zarr v2 and v3 arrays, and OME-Zarr multiscale images (NGFF 0.4 and 0.5).

Voxel size and offset, z-first, converted to nanometres (:mod:`neuropil.io.metadata`):

- an OME-Zarr level (NGFF 0.4 ``multiscales`` on the image group, 0.5 under its ``ome``):
  the level's ``scale`` and ``translation`` (then the multiscale's own, as NGFF composes
  them) in the units of the ``axes`` of type ``space`` (nanometres where an axis names
  none); an array named inside a multiscale image (``image.ome.zarr/1``) takes its own
  level's; without a ``translation`` the origin is 0;
- the array attributes ``resolution`` (as CREMI, gunpowder and neuropil's own writers) or
  ``voxel_size`` (as funlib.persistence), and ``offset``: nanometres unless a ``units``
  attribute lists one unit per axis (funlib's empty unit is nanometres too).

An array may carry several of these; they must agree (an error names both where they do
not). An OME-Zarr level may have a leading channel axis (``c``, type ``channel``:
affinities), and its image group's attributes other than the OME metadata are read with it.

:func:`write_ome_zarr` writes multiscale images (:func:`ome_levels`): images downsampled
by block mean, segmentations by the most frequent id of each block and marked with
``image-label`` metadata. A segmentation written on its own has no image to sit under in
a ``labels`` group, so it is a multiscale group of its own, which ome-zarr's reader (and
napari through it) takes as labels by that metadata and any OME-Zarr reader as a volume.

zarr reads a chunk that is not stored as the array's fill value: that is how writers leave
out chunks of fill values on purpose, and also what a lost chunk looks like. neuropil stores
every chunk, fill values too. Blockwise outputs carry
:data:`~neuropil.io.backend.COMPLETE_ATTRIBUTE` and are read without a look at their chunks;
for other arrays :meth:`ZarrBackend.missing_chunks` lists the stored chunks of a region (in a
local store one file check per chunk of the region, whatever the size of the array).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError
from neuropil.files import remove_path, swap_in
from neuropil.io.addresses import VolumeAddress
from neuropil.io.backend import COMPLETE_ATTRIBUTE, READ_ERRORS, Backend, first_line, region_chunks
from neuropil.io.metadata import Found, VoxelMetadata, attribute, resolve
from neuropil.io.units import axis_units, unit_to_nm


def settle_abandoned_tasks(timeout: float = 60.0) -> None:
    """Wait until the chunk tasks that zarr left running after a failed read or write have ended.

    When one chunk fails, zarr raises at once and leaves the other chunks' tasks on its
    event loop. Left alone, those still pending when the process exits are reported one
    by one (asyncio's "Task was destroyed but it is pending!" and "Event loop is closed"),
    after the error that matters; and an abandoned write can still create chunk files after
    the caller has removed its temporary array.
    """
    from zarr.core.sync import sync

    async def settle() -> None:
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        if others:
            await asyncio.wait(others, timeout=timeout)
        for task in others:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: asyncio does not report it again

    sync(settle())


def _stored(array, indices: list[tuple[int, ...]]) -> list[bool]:
    """Whether each chunk (grid index) of a zarr array is stored: a file check each in a local store."""
    from zarr.storage import LocalStore

    store, prefix = array.store_path.store, array.store_path.path
    keys = [array.metadata.encode_chunk_key(index) for index in indices]
    keys = [f"{prefix}/{key}" if prefix else key for key in keys]
    if isinstance(store, LocalStore):
        root = str(store.root)
        return [os.path.isfile(os.path.join(root, key)) for key in keys]
    from zarr.core.sync import sync

    async def exists() -> list[bool]:
        return list(await asyncio.gather(*(store.exists(key) for key in keys)))

    return sync(exists())


def _zarr_attributes(node) -> dict:
    try:
        return dict(node.attrs)
    except (AttributeError, TypeError):
        return {}


_OME_METADATA = ("multiscales", "ome", "omero", "image-label", "labels")
"""Group attributes that describe an OME-Zarr image; its other attributes are neuropil's (or its writer's)."""


def _ome_multiscales(attributes: dict) -> list | None:
    if "multiscales" in attributes:
        return attributes["multiscales"]
    ome = attributes.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]
    return None


class OmeTransform(NamedTuple):
    """What an OME-Zarr multiscale says of one of its levels."""

    voxel_size: tuple[float, ...]
    """nm, of the space axes."""
    offset: tuple[float, ...] | None
    """nm, of the space axes; None where no ``translation`` is given (the origin is then 0)."""
    spatial: list[int]
    """The indices of the space axes."""
    scale: object
    """The level's ``scale`` as stored (quoted in errors)."""
    translation: object
    """The level's ``translation`` as stored, or None."""
    unitless: bool
    """Whether a space axis names no unit (read as nm)."""


def _ome_transform(multiscale: dict, dataset: dict, *, source: object) -> OmeTransform:
    """Voxel size and offset (nm) of one OME-Zarr level, and the indices of its space axes."""
    axes = multiscale.get("axes") or [{"name": name, "type": "space"} for name in "zyx"]
    axes = [
        {"name": axis, "type": "space" if axis in "zyx" else "other"} if isinstance(axis, str) else axis
        for axis in axes
    ]
    spatial = [i for i, axis in enumerate(axes) if axis.get("type", "space") == "space"]
    scale = np.ones(len(axes))
    translation = np.zeros(len(axes))
    translated = False
    stored_scale, stored_translation = None, None
    for level, transforms in (
        (True, dataset.get("coordinateTransformations", [])),
        (False, multiscale.get("coordinateTransformations", [])),
    ):
        # The level's transform applies first, then the multiscale's (OME-NGFF 0.4).
        for transform in transforms:
            if transform.get("type") == "scale":
                level_scale = np.asarray(transform["scale"], dtype=np.float64)
                translation = translation * level_scale
                scale = scale * level_scale
                stored_scale = transform["scale"] if level and stored_scale is None else stored_scale
            elif transform.get("type") == "translation":
                translation = translation + np.asarray(transform["translation"], dtype=np.float64)
                translated = True
                stored_translation = transform["translation"] if level else stored_translation
    units = [axes[i].get("unit") for i in spatial]
    factors = np.array(
        [unit_to_nm(unit or "nm", source=f"{source} (axis '{axes[i].get('name')}')") for i, unit in zip(spatial, units)]
    )
    return OmeTransform(
        tuple(float(v) for v in scale[spatial] * factors),
        tuple(float(v) for v in translation[spatial] * factors) if translated else None,
        spatial,
        stored_scale,
        stored_translation,
        not all(units),
    )


def _ome_version(attributes: dict, multiscale: dict) -> str | None:
    """The OME-NGFF version of a multiscale: its own (0.4), else its group's ``ome`` (0.5)."""
    version = multiscale.get("version")
    ome = attributes.get("ome")
    if version is None and isinstance(ome, dict):
        version = ome.get("version")
    return None if version is None else str(version)


def _leading_channel(multiscale: dict, spatial: list[int], ndim: int) -> bool:
    """Whether an OME-Zarr level is (c, z, y, x): one channel axis, then three space axes."""
    axes = multiscale.get("axes") or []
    first = axes[0] if axes else None
    return ndim == 4 and spatial == [1, 2, 3] and isinstance(first, dict) and first.get("type") == "channel"


def _multiscale_image(root, key: str) -> tuple[Any, list, str] | None:
    """The nearest group above the array at ``key`` whose OME-Zarr multiscales list it, and the array's path in it.

    ``image.ome.zarr/0`` has its image at the container, ``c.zarr/cells/seg/s0`` at
    ``cells/seg``; a dataset path of several parts (``scale0/image``) is matched whole.
    """
    parts = key.strip("/").split("/")
    for cut in range(len(parts) - 1, -1, -1):
        group_key, relative = "/".join(parts[:cut]), "/".join(parts[cut:])
        try:
            group = root[group_key] if group_key else root
        except KeyError:
            continue
        multiscales = _ome_multiscales(_zarr_attributes(group))
        if not isinstance(multiscales, list):
            continue
        paths = [d.get("path") for m in multiscales if isinstance(m, dict) for d in m.get("datasets", [])]
        if relative in paths:
            return group, multiscales, relative
    return None


ZARR_VOXEL_SIZE_ATTRIBUTES = ("resolution", "voxel_size")
"""The zarr array attributes read as a voxel size (nm, z-first), in this order."""


class ZarrBackend(Backend):
    def __init__(self, where: VolumeAddress):
        import zarr

        self.where = where
        # zarr.open gives an array or a group; which one is checked below.
        root: Any
        try:
            root = zarr.open(str(where.path), mode="r")
        except (FileNotFoundError, ValueError, KeyError) as error:
            raise NeuropilError(f"{where.path}: not a zarr container ({first_line(error)})") from error
        node: Any = root
        if where.key is not None:
            try:
                node = root[where.key]
            except KeyError:
                raise NeuropilError(f"{where.path}: no array '{where.key}'") from None
        image: Any = None  # the OME-Zarr image group the array is a level of
        multiscales: list | None = None
        level_path = None
        if not hasattr(node, "dtype"):
            multiscales = _ome_multiscales(_zarr_attributes(node))
            if multiscales:
                level_path = multiscales[0]["datasets"][0]["path"]
                image, node = node, node[level_path]
        elif where.key is not None:
            found = _multiscale_image(root, where.key)
            if found is not None:
                image, multiscales, level_path = found
        if not hasattr(node, "shape") or not hasattr(node, "dtype"):
            raise NeuropilError(f"{where}: is a group, not an array; name the array as dir.zarr/key")
        self.array = node
        self.shape = tuple(node.shape)
        self.dtype = np.dtype(node.dtype)
        self.chunks = tuple(node.chunks)
        own = _zarr_attributes(node)
        self.attributes = own
        if image is not None:
            # an OME-Zarr level: its image's other attributes (neuropil's) hold for every level
            shared = {k: v for k, v in _zarr_attributes(image).items() if k not in _OME_METADATA}
            self.attributes = {**shared, **own}
        complete = self.attributes.get(COMPLETE_ATTRIBUTE)
        self.complete, self.unfinished = complete is True, complete is False
        # the stored objects: whole shards of a sharded array, else the chunks
        self.storage_chunks = tuple(getattr(node, "shards", None) or node.chunks)
        stated = self._voxel_metadata(own, image, multiscales or [], level_path)
        self.voxel_size, self.voxel_size_source, self.offset, self.offset_source = stated

    def _voxel_metadata(self, own: dict, image, multiscales: list, level_path: str | None) -> VoxelMetadata:
        """The OME-Zarr level's scale and translation, then the array's own attributes; all must agree."""
        where, ndim = self.where, len(self.shape)
        sizes: list[Found] = []
        offsets: list[Found] = []
        implied_origin = None
        levels = [(m, d) for m in multiscales for d in m.get("datasets", []) if d.get("path") == level_path]
        if levels:
            multiscale, dataset = levels[0]
            level = _ome_transform(multiscale, dataset, source=where)
            if len(level.spatial) != ndim and not _leading_channel(multiscale, level.spatial, ndim):
                raise NeuropilError(
                    f"{where}: OME-Zarr level has axes {[a for a in multiscale.get('axes', [])]}; "
                    "only (z, y, x) and (c, z, y, x) levels are supported"
                )
            version = _ome_version(_zarr_attributes(image), multiscale)
            named = f"the OME-Zarr{'' if version is None else ' ' + version} multiscales"
            unitless = "; axes without a unit read as nm" if level.unitless else ""
            sizes.append(Found(level.voxel_size, f'{named} (dataset "{level_path}" scale{unitless})', level.scale))
            if level.offset is not None:
                source = f'{named} (dataset "{level_path}" translation{unitless})'
                offsets.append(Found(level.offset, source, level.translation))
            else:  # NGFF: no translation puts voxel 0 at the origin; an array attribute may still say otherwise
                implied_origin = (tuple(0.0 for _ in level.voxel_size), f"{named} (no translation: 0)")
        units = axis_units(own.get("units"))
        for name in (*ZARR_VOXEL_SIZE_ATTRIBUTES, "offset"):
            found = attribute(own, name, units, ndim=ndim, source=f'the zarr attribute "{name}"', where=where)
            if found is not None:
                (offsets if name == "offset" else sizes).append(found)
        resolved = resolve(sizes, offsets, where=where)
        if resolved.offset is None and implied_origin is not None:
            resolved = resolved._replace(offset=implied_origin[0], offset_source=implied_origin[1])
        return resolved

    def read(self, region):
        try:
            return np.asarray(self.array[region])
        except READ_ERRORS as error:
            settle_abandoned_tasks()
            # zarr's message names no chunk: find the first one that fails on its own
            for index in region_chunks(region, self.storage_chunks):
                chunk = tuple(slice(i * n, (i + 1) * n) for i, n in zip(index, self.storage_chunks))
                try:
                    self.array[chunk]
                except READ_ERRORS as failed:
                    raise NeuropilError(f"{self.where}: cannot read chunk {index} ({first_line(failed)})") from error
            raise

    def missing_chunks(self, region):
        if self.complete:
            return []
        indices = list(region_chunks(region, self.storage_chunks))
        return [index for index, stored in zip(indices, _stored(self.array, indices)) if not stored]


def write_zarr(where: VolumeAddress, array: NDArray, *, voxel_size, chunks, zarr_format=None, attributes=None) -> None:
    """Write ``array`` as ``where.key`` (default ``data``) under a temporary name, then move it into place.

    ``attributes`` (name -> JSON-like value) are stored on the array.
    """
    import zarr

    key = where.key or "data"
    root = zarr.open_group(str(where.path), mode="a", zarr_format=zarr_format)
    temporary_key = f"{key}.partial"
    temporary = where.path / temporary_key
    remove_path(temporary)
    try:
        target = root.create_array(
            temporary_key,
            shape=array.shape,
            dtype=array.dtype,
            chunks=chunks or "auto",
            overwrite=True,
            config={"write_empty_chunks": True},  # every chunk stored: a lost one can be told from fill values
        )
        target[...] = array
        if voxel_size is not None:
            target.attrs["resolution"] = [float(v) for v in voxel_size]
        for name, value in (attributes or {}).items():
            target.attrs[name] = value
    except BaseException:
        settle_abandoned_tasks()
        remove_path(temporary)
        raise
    # zarr stores have no rename; move the finished array's folder into place.
    swap_in(temporary, where.path / key)


OME_ZARR_SUFFIX = ".ome.zarr"
"""An output address whose container ends so (``name.ome.zarr``, ``name.ome.zarr/key``) is written as OME-Zarr."""

SMALLEST_LEVEL = 32
"""Automatic OME-Zarr levels stop once no axis that the next level would halve is longer than this (voxels)."""

DEFAULT_OME_CHUNK = 64
"""Voxels per spatial axis of an OME-Zarr chunk when none is given (a channel axis is one chunk whole)."""

OME_KINDS = ("image", "labels")


def is_ome_zarr(where: VolumeAddress) -> bool:
    """Whether an address names OME-Zarr output: a zarr container named ``*.ome.zarr``, with or without a key."""
    return where.kind == "zarr" and where.path.name.lower().endswith(OME_ZARR_SUFFIX)


class OmeLevel(NamedTuple):
    """One level of an OME-Zarr multiscale image."""

    shape: tuple[int, ...]
    """(z, y, x) voxels."""
    voxel_size: tuple[float, ...]
    """(z, y, x) nm."""
    halved: tuple[bool, ...]
    """Which of (z, y, x) were halved from the level before (none for level 0)."""


def halved_axes(shape: Sequence[int], voxel_size: Sequence[float]) -> tuple[bool, ...]:
    """The axes that the next OME-Zarr level halves: of more than one voxel, with voxels under twice the finest.

    The finest voxel size is that of the axes of more than one voxel. Anisotropic data
    keeps its coarse axis (z of ``(40, 4, 4)`` nm) until the others have caught up
    within a factor of 2: ``(40, 4, 4) -> (40, 8, 8) -> (40, 16, 16) -> (40, 32, 32) -> (80, 64, 64)``.
    """
    sizes = [float(v) for v, n in zip(voxel_size, shape) if n > 1]
    if not sizes:
        return tuple(False for _ in shape)
    finest = min(sizes)
    return tuple(bool(n > 1 and float(v) < 2 * finest) for v, n in zip(voxel_size, shape))


def ome_levels(shape: Sequence[int], voxel_size: Sequence[float], levels: int | None = None) -> list[OmeLevel]:
    """The levels of an OME-Zarr image of ``shape`` (z, y, x) at ``voxel_size`` nm.

    Each level halves the axes :func:`halved_axes` names (an odd length rounds up) and
    doubles their voxel size. ``levels`` levels, fewer where no axis is left to halve;
    None: until no axis that would be halved is longer than :data:`SMALLEST_LEVEL` voxels.
    """
    shape = tuple(int(n) for n in shape)
    size = tuple(float(v) for v in voxel_size)
    plan = [OmeLevel(shape, size, (False,) * len(shape))]
    while levels is None or len(plan) < levels:
        halve = halved_axes(shape, size)
        if not any(halve):
            break
        if levels is None and max(n for n, h in zip(shape, halve) if h) <= SMALLEST_LEVEL:
            break
        shape = tuple(-(-n // 2) if h else n for n, h in zip(shape, halve))
        size = tuple(v * 2 if h else v for v, h in zip(size, halve))
        plan.append(OmeLevel(shape, size, halve))
    return plan


def _every_other(array: NDArray, axis: int, start: int) -> NDArray:
    index = [slice(None)] * array.ndim
    index[axis] = slice(start, None, 2)
    return array[tuple(index)]


def halve_mean(array: NDArray, halve: Sequence[bool]) -> NDArray:
    """Halve the axes ``halve`` names by the mean of each pair of voxels (an odd last voxel stays as it is).

    Floats keep their dtype; integers are rounded and clipped to their range.
    """
    work = np.asarray(array).astype(np.result_type(array.dtype, np.float32), copy=False)
    for axis, halved in enumerate(halve):
        if not halved:
            continue
        first, second = _every_other(work, axis, 0), _every_other(work, axis, 1)
        paired = [slice(None)] * work.ndim
        paired[axis] = slice(0, second.shape[axis])
        result = np.array(first, copy=True)
        result[tuple(paired)] = (first[tuple(paired)] + second) * 0.5
        work = result
    if np.issubdtype(array.dtype, np.integer):
        limits = np.iinfo(array.dtype)
        return np.clip(np.rint(work), limits.min, limits.max).astype(array.dtype)
    return work.astype(array.dtype, copy=False)


_MODE_SLAB = 1 << 20
"""Output voxels of :func:`halve_mode` computed at once (bounds its memory to about 130 bytes a voxel)."""


def halve_mode(array: NDArray, halve: Sequence[bool]) -> NDArray:
    """Halve the axes ``halve`` names by the most frequent id of each block (2 voxels along each such axis).

    Every output id occurs in its block, so none is invented; a tie goes to the block's
    first voxel in C order among the tied ids. An odd last voxel forms a block by itself.
    """
    array = np.asarray(array)
    factors = [2 if h else 1 for h in halve]
    padding = [(0, n % f) for n, f in zip(array.shape, factors)]
    padded = np.pad(array, padding, mode="edge") if any(p for _, p in padding) else array
    out_shape = [n // f for n, f in zip(padded.shape, factors)]
    result = np.empty(out_shape, dtype=array.dtype)
    if result.size == 0:
        return result
    ndim, block = array.ndim, int(np.prod(factors))
    interleaved = [v for pair in zip(out_shape, factors) for v in pair]
    order = [2 * i for i in range(ndim)] + [2 * i + 1 for i in range(ndim)]
    step = max(1, _MODE_SLAB // max(1, int(np.prod(out_shape[1:]))))
    for start in range(0, out_shape[0], step):
        stop = min(start + step, out_shape[0])
        slab = padded[start * factors[0] : stop * factors[0]]
        windows = slab.reshape([stop - start, *interleaved[1:]]).transpose(order)
        windows = windows.reshape([stop - start, *out_shape[1:], block])
        counts = (windows[..., :, None] == windows[..., None, :]).sum(axis=-1)
        result[start:stop] = np.take_along_axis(windows, counts.argmax(axis=-1)[..., None], axis=-1)[..., 0]
    return result


def _level_chunks(chunks: Sequence[int] | None, shape: tuple[int, ...]) -> tuple[int, ...]:
    if chunks is None:
        spatial = tuple(min(DEFAULT_OME_CHUNK, n) for n in shape[-3:])
        return (*shape[:-3], *spatial)
    return tuple(max(1, min(int(c), n)) for c, n in zip(chunks, shape))


def _is_ome_image(folder: Path) -> bool:
    import zarr

    try:
        return _ome_multiscales(_zarr_attributes(zarr.open_group(str(folder), mode="r"))) is not None
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError):
        return False


def _container_format(folder: Path) -> int | None:
    import zarr

    try:
        return int(zarr.open_group(str(folder), mode="r").metadata.zarr_format)
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError):
        return None


def write_ome_zarr(
    path: str | os.PathLike,
    array: NDArray,
    *,
    voxel_size: Sequence[float],
    levels: int | None = 1,
    kind: str = "image",
    chunks: Sequence[int] | None = None,
    zarr_format: Literal[2, 3] = 2,
    attributes: dict | None = None,
    key: str | None = None,
) -> Path:
    """Write a ``(z, y, x)`` or ``(c, z, y, x)`` OME-Zarr multiscale image (NGFF 0.4 for zarr v2, 0.5 for v3).

    Level 0 is ``array``; each further one halves the axes :func:`halved_axes` names
    (see :func:`ome_levels`), by :func:`halve_mean` for ``kind="image"`` and by
    :func:`halve_mode` for ``kind="labels"`` (integer ids: no id is invented). A channel
    axis ``c`` (type ``channel``) is never downsampled.

    Parameters
    ----------
    path : the container's folder (``name.ome.zarr``)
    voxel_size : (z, y, x) nm of level 0; each level's ``scale`` is its own, the axes'
        unit ``nanometer``
    levels : int or None
        How many levels (fewer where no axis is left to halve); None: down to
        :data:`SMALLEST_LEVEL` voxels.
    kind : {"image", "labels"}
        ``labels`` also marks the image as a label image (NGFF ``image-label``), so that
        viewers show it as segments.
    chunks : chunk shape of level 0 (clipped to each level's shape); default 64 voxels
        per spatial axis and the channel axis whole
    zarr_format : 2 (OME-Zarr 0.4, which viewers read most widely) or 3 (OME-Zarr 0.5)
    attributes : name -> JSON-like value, stored on the image's group beside its
        OME metadata (read back as :attr:`neuropil.io.Volume.attributes` of each level)
    key : a group of the container to write the image to (the container's other
        arrays and groups stay); None: the container is the image, replaced whole

    Returns
    -------
    Path
        The image's folder.

    Raises
    ------
    NeuropilError
        A wrong number of axes or voxel sizes, float labels, an unknown ``kind``, a
        key-less write over a container that holds other data, or a key inside a
        container that is itself one image.
    """
    path = Path(path)
    array = np.asarray(array)
    where = f"{path}/{key}" if key else str(path)
    if array.ndim not in (3, 4) or voxel_size is None or len(voxel_size) != 3:
        raise NeuropilError(
            f"{where}: OME-Zarr writing takes a (z, y, x) or (c, z, y, x) array and a 3-entry voxel size (nm), "
            f"got shape {array.shape} and voxel size {None if voxel_size is None else tuple(voxel_size)}"
        )
    if kind not in OME_KINDS:
        raise NeuropilError(f"{where}: OME-Zarr kind '{kind}' is not one of {', '.join(OME_KINDS)}")
    if kind == "labels" and not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise NeuropilError(f"{where}: OME-Zarr labels must be integers, got {array.dtype}")
    if chunks is not None and len(chunks) != array.ndim:
        raise NeuropilError(f"{where}: chunks {tuple(chunks)} have {len(chunks)} entries for {array.ndim} axes")
    if zarr_format not in (2, 3):
        raise NeuropilError(f"{where}: zarr format {zarr_format} is not 2 or 3")
    if levels is not None and levels < 1:
        raise NeuropilError(f"{where}: {levels} OME-Zarr levels; give at least 1 (or None: down to a small size)")
    options = {"levels": levels, "kind": kind, "chunks": chunks, "attributes": attributes or {}}
    if key is None:
        if path.is_dir() and any(path.iterdir()) and not _is_ome_image(path):
            raise NeuropilError(
                f"{path}: holds other data, not one OME-Zarr image; write to a key of it ({path}/NAME) or a new path"
            )
        name = path.name[: -len(OME_ZARR_SUFFIX)] if path.name.lower().endswith(OME_ZARR_SUFFIX) else path.stem
        temporary, final = path.with_name(path.name + ".partial"), path
    else:
        import zarr

        key = key.strip("/")
        if _is_ome_image(path):
            raise NeuropilError(f"{path}: is one OME-Zarr image, not a container of images; write {key} elsewhere")
        existing = _container_format(path)  # an image's groups are of its container's format
        if existing is not None:
            zarr_format = 3 if existing == 3 else 2
        root = zarr.open_group(str(path), mode="a", zarr_format=zarr_format)
        if "/" in key:
            root.require_group(key.rsplit("/", 1)[0])
        name = key.rsplit("/", 1)[-1]
        temporary, final = path / f"{key}.partial", path / key
    remove_path(temporary)
    try:
        _write_ome_group(temporary, array, voxel_size, name=name, zarr_format=zarr_format, **options)
    except BaseException:
        settle_abandoned_tasks()
        remove_path(temporary)
        raise
    swap_in(temporary, final)
    return final


def _write_ome_group(
    folder: Path, array: NDArray, voxel_size, *, name, levels, kind, chunks, zarr_format, attributes
) -> None:
    import zarr

    root = zarr.open_group(str(folder), mode="w", zarr_format=zarr_format)
    channels = array.shape[:-3]
    # OME-Zarr 0.4 stores the chunks of its v2 arrays in nested folders ("/" dimension separator)
    encoding: dict[str, Any] | None = {"name": "v2", "separator": "/"} if zarr_format == 2 else None
    halve = halve_mode if kind == "labels" else halve_mean
    datasets, level_array = [], array
    for index, level in enumerate(ome_levels(array.shape[-3:], voxel_size, levels)):
        if index > 0:
            level_array = halve(level_array, (False,) * len(channels) + level.halved)
        node = root.create_array(
            str(index),
            shape=level_array.shape,
            dtype=level_array.dtype,
            chunks=_level_chunks(chunks, level_array.shape),
            config={"write_empty_chunks": True},  # every chunk stored: a lost one can be told from fill values
            chunk_key_encoding=encoding,
        )
        node[...] = level_array
        scale = [1.0] * len(channels) + [float(v) for v in level.voxel_size]
        datasets.append({"path": str(index), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    axes: list[dict[str, str]] = [{"name": "c", "type": "channel"} for _ in channels]
    axes += [{"name": axis, "type": "space", "unit": "nanometer"} for axis in "zyx"]
    multiscale: dict[str, Any] = {
        "name": name,
        "axes": axes,
        "datasets": datasets,
        "type": "mode" if kind == "labels" else "mean",
    }
    described: dict[str, Any] = {"multiscales": [multiscale]}
    if zarr_format == 3:
        if kind == "labels":
            described["image-label"] = {}
        stored = {**attributes, "ome": {"version": "0.5", **described}}
    else:
        multiscale["version"] = "0.4"
        if kind == "labels":
            described["image-label"] = {"version": "0.4"}
        stored = {**attributes, **described}
    root.attrs.update(stored)
