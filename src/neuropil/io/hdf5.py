"""HDF5 datasets (h5py): CREMI, gala and NeuroProof files.

Voxel size: the dataset attribute ``resolution`` (z-first, as CREMI and gunpowder) or
``voxel_size`` (z-first, as funlib and daisy), both nanometres unless a ``units`` attribute
lists one unit per axis, or ``element_size_um`` (micrometres, z-first, as ilastik and Fiji);
two that disagree are an error naming both. ``offset`` (the position of voxel 0, as CREMI
and funlib) is read like ``resolution``.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError
from neuropil.io.addresses import VolumeAddress
from neuropil.io.backend import Backend
from neuropil.io.metadata import VoxelMetadata, attribute, resolve
from neuropil.io.units import axis_units


class Hdf5Backend(Backend):
    def __init__(self, where: VolumeAddress):
        import h5py

        self.file = h5py.File(where.path, "r")
        key = where.key
        if key is None:
            datasets = [name for name, item in self.file.items() if isinstance(item, h5py.Dataset)]
            if len(datasets) != 1:
                keys = sorted(self.file.keys())
                self.file.close()
                raise NeuropilError(f"{where.path}: name a dataset as file.h5:key; it holds {keys}")
            key = datasets[0]
        if key not in self.file or not isinstance(self.file[key], h5py.Dataset):
            keys = sorted(self.file.keys())
            self.file.close()
            raise NeuropilError(f"{where.path}: no dataset '{key}'; it holds {keys}")
        self.dataset = self.file[key]
        self.shape = tuple(self.dataset.shape)
        self.dtype = self.dataset.dtype
        self.chunks = self.dataset.chunks
        attrs = self.dataset.attrs
        self.attributes = _attributes(attrs)
        try:
            found = voxel_metadata(attrs, ndim=len(self.shape), where=where)
        except NeuropilError:
            self.file.close()
            raise
        self.voxel_size, self.voxel_size_source, self.offset, self.offset_source = found

    def read(self, region):
        return self.dataset[region]

    def close(self):
        self.file.close()


def voxel_metadata(attrs, *, ndim: int, where: object) -> VoxelMetadata:
    """Voxel size and offset of an HDF5 dataset from its attributes (see the module docstring).

    Where several voxel size attributes agree, the source named is the first of
    ``resolution``, ``voxel_size``, ``element_size_um``.

    Raises
    ------
    NeuropilError
        Two voxel size attributes that disagree, an unknown unit.
    """
    units = axis_units(attrs.get("units"))

    def read(name: str, unit) -> list:
        found = attribute(attrs, name, unit, ndim=ndim, source=f'the HDF5 attribute "{name}"', where=where)
        return [] if found is None else [found]

    sizes = [*read("resolution", units), *read("voxel_size", units), *read("element_size_um", "um")]
    return resolve(sizes, read("offset", units), where=where)


def _attributes(attrs) -> dict:
    """A dataset's attributes as JSON-like values; ones h5py cannot read (exotic types) are left out."""
    values = {}
    for name in attrs:
        try:
            values[name] = _attribute_value(attrs[name])
        except (OSError, TypeError, ValueError):
            continue
    return values


def _attribute_value(value):
    """An HDF5 attribute as a JSON-like value: arrays as lists, and mappings written as JSON text decoded."""
    import h5py

    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def is_neuroproof_groundtruth(where: VolumeAddress) -> bool:
    """Whether ``where`` is a NeuroProof ``groundtruth.h5`` (``stack`` and ``transforms``) named without a key."""
    if where.kind != "hdf5" or where.key is not None:
        return False
    import h5py

    try:
        with h5py.File(where.path, "r") as file:
            return "stack" in file and "transforms" in file
    except OSError:
        return False


def write_hdf5(where: VolumeAddress, array: NDArray, *, voxel_size, chunks, compression, attributes=None) -> None:
    """Write ``array`` as dataset ``where.key`` (default ``data``) into a copy of the file, then rename it.

    ``attributes`` (name -> JSON-like value) are stored on the dataset; mappings as JSON
    text, which :class:`Hdf5Backend` decodes.
    """
    import h5py

    key = where.key or "data"
    temporary = where.path.with_name(where.path.name + ".partial")
    # A temporary left by a crashed write must not be appended to.
    temporary.unlink(missing_ok=True)
    try:
        if where.path.exists():
            shutil.copyfile(where.path, temporary)
        with h5py.File(temporary, "a") as file:
            if key in file:
                del file[key]
            chunked = chunks if chunks else (True if array.size > 1 else None)
            dataset = file.create_dataset(key, data=array, chunks=chunked, compression=compression if chunked else None)
            if voxel_size is not None:
                dataset.attrs["resolution"] = np.asarray(voxel_size, dtype=np.float64)
            for name, value in (attributes or {}).items():
                dataset.attrs[name] = json.dumps(value) if isinstance(value, dict) else value
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, where.path)
