"""Multi-page TIFF stacks (tifffile) and folders of TIFF or PNG slices (imageio).

Voxel size of a stack: ImageJ's ``unit`` and ``spacing`` (z) with the X/Y resolution tags
(pixels per unit), or, for dtypes ImageJ cannot hold (label ids are uint64), a
``voxel_size_nm`` entry in tifffile's JSON description. An uncalibrated image (no
``unit``, or ``pixel``) has none.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, cast

import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError
from neuropil.io.addresses import VolumeAddress, slice_files
from neuropil.io.backend import Backend, region_shape
from neuropil.io.metadata import Found, resolve
from neuropil.io.units import PIXEL_UNITS, canonical_unit, unit_to_nm

if TYPE_CHECKING:
    import tifffile


class TiffBackend(Backend):
    """A multi-page TIFF; z slices are read page by page."""

    def __init__(self, where: VolumeAddress):
        import tifffile

        self.path = where.path
        self.file = tifffile.TiffFile(where.path)
        try:
            series = self.file.series[0]
            self.shape = tuple(series.shape)
            self.dtype = np.dtype(series.dtype)
            self.paged = len(self.shape) == 3 and len(series.pages) == self.shape[0]
            self.chunks = (1,) + self.shape[1:] if self.paged else None
            sizes = [found for found in (self._imagej_voxel_size(), self._described_voxel_size()) if found]
            self.voxel_size, self.voxel_size_source, _, _ = resolve(sizes, [], where=self.path)
        except BaseException:
            self.file.close()
            raise

    def _described_voxel_size(self) -> Found | None:
        """``voxel_size_nm`` of tifffile's JSON description (see :func:`write_tiff`)."""
        described = (self.file.shaped_metadata or [{}])[0]
        values = described.get("voxel_size_nm") if isinstance(described, dict) else None
        if values is None:
            return None
        try:
            voxel_size = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            raise NeuropilError(f"{self.path}: voxel_size_nm {values!r} is not a list of numbers") from None
        if len(voxel_size) != len(self.shape):
            raise NeuropilError(
                f"{self.path}: voxel_size_nm {voxel_size} has {len(voxel_size)} entries, not {len(self.shape)}"
            )
        return Found(voxel_size, 'the TIFF description entry "voxel_size_nm"', values)

    def _imagej_voxel_size(self) -> Found | None:
        metadata = self.file.imagej_metadata
        if not metadata or len(self.shape) != 3 or "unit" not in metadata:
            return None
        # The first page is always a full page, never a frame.
        page = cast("tifffile.TiffPage", self.file.pages[0])
        try:
            x_numerator, x_denominator = page.tags["XResolution"].value
            y_numerator, y_denominator = page.tags["YResolution"].value
        except KeyError:
            return None
        unit = str(metadata["unit"])
        if canonical_unit(unit) in PIXEL_UNITS or not x_numerator or not y_numerator:
            return None
        factor = unit_to_nm(unit, source=f"{self.path} (ImageJ unit)")
        spacing = float(metadata.get("spacing", 1.0))
        voxel_size = (spacing * factor, y_denominator / y_numerator * factor, x_denominator / x_numerator * factor)
        stored = {"spacing": metadata.get("spacing"), "unit": unit, "YResolution": y_numerator / y_denominator}
        stored["XResolution"] = x_numerator / x_denominator
        return Found(voxel_size, 'the ImageJ calibration ("spacing", "unit", X/Y resolution tags)', stored)

    def read(self, region):
        if not self.paged:
            return self.file.asarray()[region]
        pages = list(range(region[0].start, region[0].stop, region[0].step))
        if not pages:
            return np.zeros(region_shape(region), dtype=self.dtype)
        data = self.file.asarray(key=pages)
        if len(pages) == 1:
            data = data[np.newaxis]
        return data[(slice(None),) + region[1:]]

    def close(self):
        self.file.close()


class SlicesBackend(Backend):
    """A folder of 2-D slices, read one file per z."""

    def __init__(self, where: VolumeAddress):
        import imageio.v3 as iio

        self.files = slice_files(where.path)
        properties = iio.improps(self.files[0])
        if len(properties.shape) != 2:
            raise NeuropilError(f"{self.files[0]}: slice has shape {properties.shape}; expected a grayscale 2-D image")
        self.shape = (len(self.files),) + tuple(properties.shape)
        self.dtype = np.dtype(properties.dtype)
        self.chunks = (1,) + self.shape[1:]

    def read(self, region):
        import imageio.v3 as iio

        planes = []
        for z in range(region[0].start, region[0].stop, region[0].step):
            plane = np.asarray(iio.imread(self.files[z]))
            if plane.shape != self.shape[1:]:
                raise NeuropilError(f"{self.files[z]}: slice has shape {plane.shape}, the first slice {self.shape[1:]}")
            planes.append(plane[region[1:]].astype(self.dtype, copy=False))
        if not planes:
            return np.zeros(region_shape(region), dtype=self.dtype)
        return np.stack(planes)


IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
"""The dtypes an ImageJ hyperstack holds."""


def write_tiff(where: VolumeAddress, array: NDArray, *, voxel_size: tuple[float, ...] | None = None) -> None:
    """Write ``array`` as a multi-page TIFF to a temporary name, then rename it.

    A ``voxel_size`` (nm, z-first) of a 3-D array is stored as ImageJ calibration
    (``unit`` nm, ``spacing``, X/Y resolution: Fiji reads it) where ImageJ can hold the
    dtype, else as ``voxel_size_nm`` in tifffile's JSON description; both read back.
    """
    import tifffile

    options: dict = {"photometric": "minisblack"}
    if voxel_size is not None:
        voxel_size = tuple(float(v) for v in voxel_size)
        if array.ndim == 3 and len(voxel_size) == 3 and array.dtype in IMAGEJ_DTYPES:
            z, y, x = voxel_size
            options = {"imagej": True, "resolution": (1 / x, 1 / y), "metadata": {"unit": "nm", "spacing": z}}
        else:
            options["metadata"] = {"voxel_size_nm": list(voxel_size)}
    temporary = where.path.with_name(where.path.name + ".partial.tif")
    try:
        tifffile.imwrite(temporary, array, **options)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, where.path)
