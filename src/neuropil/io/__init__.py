"""Volume addresses and readers/writers for HDF5, zarr (OME-Zarr), N5, TIFF stacks and image slices."""

from neuropil.io.volumes import (
    Volume,
    VolumeAddress,
    open_volume,
    parse_address,
    read_volume,
    write_ome_zarr,
    write_volume,
)

__all__ = ["Volume", "VolumeAddress", "open_volume", "parse_address", "read_volume", "write_ome_zarr", "write_volume"]
