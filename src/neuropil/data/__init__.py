"""Data: the dataset catalog and fetching, labels, training volumes, sampling, synthetic domains, resampling."""

from neuropil.data.resample import resample, resampled_shape

__all__ = ["resample", "resampled_shape"]
