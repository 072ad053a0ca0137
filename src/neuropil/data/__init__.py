"""Data: volume addresses and readers, synthetic domains, resampling and sampling."""

from neuropil.data.io import VolumeAddress, parse_address, read_volume, write_volume

__all__ = ["VolumeAddress", "parse_address", "read_volume", "write_volume"]
