"""zarr v2 and v3 arrays, and OME-Zarr multiscale images (NGFF 0.4 and 0.5).

Voxel size: an OME-Zarr level's ``scale`` and ``translation`` in the units of its
``multiscales`` space axes (nanometres where an axis names none); otherwise the array
attribute ``resolution`` or ``voxel_size`` and ``offset`` (z-first, as funlib; nanometres
unless a ``units`` attribute lists one unit per axis).

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
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from neuropil.data.resample import resample
from neuropil.errors import NeuropilError
from neuropil.files import remove_path, swap_in
from neuropil.io.addresses import VolumeAddress
from neuropil.io.backend import COMPLETE_ATTRIBUTE, READ_ERRORS, Backend, first_line, region_chunks, spatial_tail
from neuropil.io.units import axis_units, to_nm, unit_to_nm


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


def _ome_multiscales(attributes: dict) -> list | None:
    if "multiscales" in attributes:
        return attributes["multiscales"]
    ome = attributes.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]
    return None


def _ome_transform(
    multiscale: dict, dataset: dict, *, source: object
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None, list[int]]:
    """Voxel size and offset (nm) of one OME-Zarr level, and the indices of its space axes."""
    axes = multiscale.get("axes") or [{"name": name, "type": "space"} for name in "zyx"]
    axes = [
        {"name": axis, "type": "space" if axis in "zyx" else "other"} if isinstance(axis, str) else axis
        for axis in axes
    ]
    spatial = [i for i, axis in enumerate(axes) if axis.get("type", "space") == "space"]
    scale = np.ones(len(axes))
    translation = np.zeros(len(axes))
    for transforms in (dataset.get("coordinateTransformations", []), multiscale.get("coordinateTransformations", [])):
        # The level's transform applies first, then the multiscale's (OME-NGFF 0.4).
        for transform in transforms:
            if transform.get("type") == "scale":
                level_scale = np.asarray(transform["scale"], dtype=np.float64)
                translation = translation * level_scale
                scale = scale * level_scale
            elif transform.get("type") == "translation":
                translation = translation + np.asarray(transform["translation"], dtype=np.float64)
    factors = np.array(
        [unit_to_nm(axes[i].get("unit") or "nm", source=f"{source} (axis '{axes[i].get('name')}')") for i in spatial]
    )
    return (
        tuple(float(v) for v in scale[spatial] * factors),
        tuple(float(v) for v in translation[spatial] * factors),
        spatial,
    )


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
        parent: Any = None
        if where.key is not None:
            try:
                node = root[where.key]
            except KeyError:
                raise NeuropilError(f"{where.path}: no array '{where.key}'") from None
            parent_key = where.key.rsplit("/", 1)[0] if "/" in where.key else None
            parent = root[parent_key] if parent_key else root
        multiscales = _ome_multiscales(_zarr_attributes(node))
        level_path = None
        if not hasattr(node, "dtype") and multiscales:
            level_path = multiscales[0]["datasets"][0]["path"]
            parent, node = node, node[level_path]
        elif hasattr(node, "dtype") and parent is not None and where.key is not None:
            multiscales = _ome_multiscales(_zarr_attributes(parent))
            level_path = where.key.rsplit("/", 1)[-1]
        if not hasattr(node, "shape") or not hasattr(node, "dtype"):
            raise NeuropilError(f"{where}: is a group, not an array; name the array as dir.zarr/key")
        self.array = node
        self.shape = tuple(node.shape)
        self.dtype = np.dtype(node.dtype)
        self.chunks = tuple(node.chunks)
        self.attributes = _zarr_attributes(node)
        complete = self.attributes.get(COMPLETE_ATTRIBUTE)
        self.complete, self.unfinished = complete is True, complete is False
        # the stored objects: whole shards of a sharded array, else the chunks
        self.storage_chunks = tuple(getattr(node, "shards", None) or node.chunks)
        ndim = len(self.shape)
        if multiscales and level_path is not None:
            for multiscale in multiscales:
                for dataset in multiscale.get("datasets", []):
                    if dataset.get("path") == level_path:
                        voxel_size, offset, spatial = _ome_transform(multiscale, dataset, source=where)
                        if len(spatial) != ndim:
                            raise NeuropilError(
                                f"{where}: OME-Zarr level has axes {[a for a in multiscale.get('axes', [])]}; "
                                "only arrays with space axes only are supported"
                            )
                        self.voxel_size, self.offset = voxel_size, offset
                        return
        attributes = _zarr_attributes(node)
        units = axis_units(attributes.get("units"))
        for name in ("resolution", "voxel_size"):
            if name in attributes:
                self.voxel_size = spatial_tail(to_nm(attributes[name], units, source=f"{where} ({name})"), ndim)
                break
        if "offset" in attributes:
            self.offset = spatial_tail(to_nm(attributes["offset"], units, source=f"{where} (offset)"), ndim)

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


def write_ome_zarr(
    path: str | os.PathLike,
    array: NDArray,
    *,
    voxel_size: Sequence[float],
    levels: int = 1,
    kind: str = "image",
    chunks: tuple[int, ...] | None = None,
    zarr_format: Literal[2, 3] = 3,
) -> Path:
    """Write a ``(z, y, x)`` OME-Zarr multiscale image (NGFF 0.5 for zarr v3, 0.4 for v2).

    Level ``i`` halves y and x ``i`` times (and z while its voxels are the smallest),
    rescaled with :func:`neuropil.data.resample.resample` as ``kind``.
    """
    path = Path(path)
    if array.ndim != 3 or len(voxel_size) != 3:
        raise NeuropilError(f"{path}: OME-Zarr writing takes a (z, y, x) array and a 3-entry voxel_size")
    temporary = path.with_name(path.name + ".partial")
    remove_path(temporary)
    try:
        _write_ome_levels(
            temporary,
            array,
            voxel_size,
            name=path.stem,
            levels=levels,
            kind=kind,
            chunks=chunks,
            zarr_format=zarr_format,
        )
    except BaseException:
        settle_abandoned_tasks()
        remove_path(temporary)
        raise
    swap_in(temporary, path)
    return path


def _write_ome_levels(folder: Path, array: NDArray, voxel_size, *, name, levels, kind, chunks, zarr_format) -> None:
    import zarr

    root = zarr.open_group(str(folder), mode="w", zarr_format=zarr_format)
    datasets, level_array, level_size = [], np.asarray(array), np.asarray(voxel_size, dtype=np.float64)
    for level in range(levels):
        if level > 0:
            factor = np.where(level_size * 2 <= level_size.max() * 1.5, 2.0, 1.0)
            factor[1:] = 2.0
            target = level_size * factor
            level_array = resample(
                level_array, voxel_size=tuple(level_size), target_voxel_size=tuple(target), kind=kind
            )
            level_size = target
        node = root.create_array(
            str(level),
            shape=level_array.shape,
            dtype=level_array.dtype,
            chunks=chunks or "auto",
            config={"write_empty_chunks": True},
        )
        node[...] = level_array
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [{"type": "scale", "scale": [float(v) for v in level_size]}],
            }
        )
    multiscale: dict[str, Any] = {
        "axes": [{"name": name, "type": "space", "unit": "nanometer"} for name in "zyx"],
        "datasets": datasets,
        "name": name,
    }
    if zarr_format == 3:
        root.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}
    else:
        root.attrs["multiscales"] = [{"version": "0.4", **multiscale}]
