"""Segmentation: affinities (or a boundary map) -> watershed fragments -> agglomerated segments.

Stages, in pipeline order: :mod:`~neuropil.segment.affinities` (checked inputs),
:mod:`~neuropil.segment.watershed` (fragments), :mod:`~neuropil.segment.graph` (the
region adjacency graph), :mod:`~neuropil.segment.merge` (the merge loop),
:mod:`~neuropil.segment.agglomerate` (mean, quantile, learned and mutex agglomeration,
one interface), :mod:`~neuropil.segment.learned` (the merge classifier) and
:mod:`~neuropil.segment.pipeline`, the one composition every caller uses::

    from neuropil.segment import segment
    result = segment(affinities, voxel_size=(25, 13, 13), thresholds=(0.3, 0.5))
    result.fragments, result.segmentations[0]
"""

from neuropil.segment.agglomerate import METHODS, Agglomeration, agglomerate, agglomeration
from neuropil.segment.pipeline import Segmentation, fragments, segment

__all__ = ["METHODS", "Agglomeration", "Segmentation", "agglomerate", "agglomeration", "fragments", "segment"]
