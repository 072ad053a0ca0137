"""Volume addresses and readers/writers.

An address names one array:

- ``file.h5:key`` (also ``.hdf5``, ``.hdf``): an HDF5 dataset;
- ``dir.zarr/key`` or ``dir.zarr`` (also ``.n5``): a zarr/N5 array;
- ``stack.tif`` (``.tiff``): a multi-page TIFF;
- ``folder/``: a folder of TIFF or PNG slices, one per z, in natural order.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
CONTAINER_SUFFIXES = (".zarr", ".n5")
TIFF_SUFFIXES = (".tif", ".tiff")
SLICE_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass(frozen=True)
class VolumeAddress:
    """A parsed address: a file or folder ``path`` plus an optional ``key`` inside it."""

    path: Path
    key: str | None
    kind: str
    """One of ``hdf5``, ``zarr``, ``tiff``, ``slices``."""

    def __str__(self) -> str:
        if self.key is None:
            return str(self.path)
        separator = ":" if self.kind == "hdf5" else "/"
        return f"{self.path}{separator}{self.key}"


def parse_address(address: str | os.PathLike) -> VolumeAddress:
    """Split an address into path, key and kind (see the module docstring)."""
    text = os.fspath(address)
    lowered = text.lower()
    for suffix in HDF5_SUFFIXES:
        position = lowered.find(suffix + ":")
        if position >= 0:
            end = position + len(suffix)
            return VolumeAddress(Path(text[:end]), text[end + 1 :].strip("/") or None, "hdf5")
        if lowered.endswith(suffix):
            return VolumeAddress(Path(text), None, "hdf5")
    for suffix in CONTAINER_SUFFIXES:
        match = re.search(re.escape(suffix) + r"(/|$)", lowered)
        if match:
            end = match.start() + len(suffix)
            return VolumeAddress(Path(text[:end]), text[end:].strip("/") or None, "zarr")
    if lowered.endswith(TIFF_SUFFIXES):
        return VolumeAddress(Path(text), None, "tiff")
    path = Path(text)
    if path.is_dir():
        return VolumeAddress(path, None, "slices")
    raise NeuropilError(
        f"cannot tell the format of '{text}': expected file.h5:key, dir.zarr/key, stack.tif or a folder of slices"
    )


def natural_key(name: str) -> list:
    """Sort key that orders ``im2.png`` before ``im10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def slice_files(folder: Path) -> list[Path]:
    """The TIFF/PNG slices of a folder in natural order."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SLICE_SUFFIXES]
    if not files:
        raise NeuropilError(f"{folder}: folder holds no .tif or .png slices")
    return sorted(files, key=lambda p: natural_key(p.name))


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise NeuropilError(f"{path}: no such file or folder")


def read_volume(address: str | os.PathLike | VolumeAddress) -> NDArray:
    """Read the whole array at ``address`` into memory.

    Raises
    ------
    NeuropilError
        When the file, the key or the slices are missing or unreadable.
    """
    where = address if isinstance(address, VolumeAddress) else parse_address(address)
    _require_exists(where.path)
    try:
        if where.kind == "hdf5":
            return _read_hdf5(where)
        if where.kind == "zarr":
            return _read_zarr(where)
        if where.kind == "tiff":
            import tifffile

            return np.asarray(tifffile.imread(where.path))
        return _read_slices(where.path)
    except NeuropilError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise NeuropilError(f"{where}: cannot read: {str(error).splitlines()[0]}") from error


def _read_hdf5(where: VolumeAddress) -> NDArray:
    import h5py

    with h5py.File(where.path, "r") as file:
        key = where.key
        if key is None:
            datasets = [name for name, item in file.items() if isinstance(item, h5py.Dataset)]
            if len(datasets) != 1:
                raise NeuropilError(f"{where.path}: name a dataset as file.h5:key; it holds {sorted(file.keys())}")
            key = datasets[0]
        if key not in file or not isinstance(file[key], h5py.Dataset):
            raise NeuropilError(f"{where.path}: no dataset '{key}'; it holds {sorted(file.keys())}")
        return file[key][...]


def _read_zarr(where: VolumeAddress) -> NDArray:
    import zarr

    try:
        node = zarr.open(str(where.path), mode="r")
    except (FileNotFoundError, ValueError) as error:
        raise NeuropilError(f"{where.path}: not a zarr container ({error})") from error
    if where.key is not None:
        try:
            node = node[where.key]
        except KeyError:
            raise NeuropilError(f"{where.path}: no array '{where.key}'") from None
    if not hasattr(node, "shape") or not hasattr(node, "dtype"):
        raise NeuropilError(f"{where}: is a group, not an array; name the array as dir.zarr/key")
    return np.asarray(node[...])


def _read_slices(folder: Path) -> NDArray:
    import imageio.v3 as iio

    slices = [np.asarray(iio.imread(path)) for path in slice_files(folder)]
    shapes = {s.shape for s in slices}
    if len(shapes) != 1:
        raise NeuropilError(f"{folder}: slices differ in shape: {sorted(shapes)}")
    return np.stack(slices)


def write_volume(
    address: str | os.PathLike,
    array: NDArray,
    *,
    voxel_size: tuple[float, ...] | None = None,
    chunks: tuple[int, ...] | None = None,
) -> VolumeAddress:
    """Write ``array`` to ``address`` atomically: to a temporary name first, then renamed.

    HDF5 files keep their other datasets; the dataset is replaced in a copy of the file.
    ``voxel_size`` (nm, z-first) is stored as the ``resolution`` attribute (HDF5, zarr).
    """
    where = parse_address(address) if not Path(os.fspath(address)).is_dir() else VolumeAddress(
        Path(address), None, "slices"
    )
    where.path.parent.mkdir(parents=True, exist_ok=True)
    if where.kind == "hdf5":
        _write_hdf5(where, array, voxel_size=voxel_size, chunks=chunks)
    elif where.kind == "zarr":
        _write_zarr(where, array, voxel_size=voxel_size, chunks=chunks)
    elif where.kind == "tiff":
        import tifffile

        temporary = where.path.with_name(where.path.name + ".partial.tif")
        tifffile.imwrite(temporary, array, photometric="minisblack")
        os.replace(temporary, where.path)
    else:
        raise NeuropilError(f"{where.path}: writing a folder of slices is not supported; use .h5, .zarr or .tif")
    return where


def _write_hdf5(where: VolumeAddress, array: NDArray, *, voxel_size, chunks) -> None:
    import h5py

    key = where.key or "data"
    temporary = where.path.with_name(where.path.name + ".partial")
    if where.path.exists():
        shutil.copyfile(where.path, temporary)
    with h5py.File(temporary, "a") as file:
        if key in file:
            del file[key]
        dataset = file.create_dataset(
            key, data=array, chunks=chunks if chunks else (True if array.size > 1 else None), compression="gzip"
        )
        if voxel_size is not None:
            dataset.attrs["resolution"] = np.asarray(voxel_size, dtype=np.float64)
    os.replace(temporary, where.path)


def _write_zarr(where: VolumeAddress, array: NDArray, *, voxel_size, chunks) -> None:
    import zarr

    key = where.key or "data"
    root = zarr.open_group(str(where.path), mode="a")
    temporary_key = f"{key}.partial"
    if temporary_key in root:
        del root[temporary_key]
    target = root.create_array(
        temporary_key, shape=array.shape, dtype=array.dtype, chunks=chunks or "auto", overwrite=True
    )
    target[...] = array
    if voxel_size is not None:
        target.attrs["resolution"] = [float(v) for v in voxel_size]
    if key in root:
        del root[key]
    # zarr stores have no rename; move the finished array's folder into place.
    store_root = where.path
    os.replace(store_root / temporary_key, store_root / key)
