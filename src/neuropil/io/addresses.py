"""Addresses of arrays: ``file.h5:key``, ``dir.zarr/key``, ``dir.n5/key``, ``stack.tif``, ``folder/``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

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
    """One of ``hdf5``, ``zarr`` (zarr and N5 containers), ``tiff``, ``slices``."""

    def __str__(self) -> str:
        if self.key is None:
            return str(self.path)
        separator = ":" if self.kind == "hdf5" else "/"
        return f"{self.path}{separator}{self.key}"

    @property
    def is_n5(self) -> bool:
        """Whether the container is N5 (by suffix, or by an N5 root ``attributes.json``)."""
        if self.kind != "zarr":
            return False
        if self.path.suffix.lower() == ".n5":
            return True
        attributes = self.path / "attributes.json"
        return attributes.is_file() and not (self.path / ".zgroup").exists() and not (self.path / "zarr.json").exists()


def parse_address(address: str | os.PathLike | VolumeAddress) -> VolumeAddress:
    """Split an address into path, key and kind (see :mod:`neuropil.io`)."""
    if isinstance(address, VolumeAddress):
        return address
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
        f"cannot tell the format of '{text}': expected file.h5:key, dir.zarr/key, dir.n5/key, stack.tif "
        "or a folder of slices"
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
