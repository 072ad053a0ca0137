"""Data: volume addresses and readers, synthetic domains, resampling and sampling."""

from neuropil.data.io import VolumeAddress, parse_address, read_volume, write_volume
from neuropil.data.resample import resample, resampled_shape

__all__ = ["VolumeAddress", "parse_address", "read_volume", "resample", "resampled_shape", "write_volume"]
