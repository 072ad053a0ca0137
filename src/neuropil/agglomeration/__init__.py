"""Agglomeration: fragments (supervoxels) -> segments, by one interface for every method.

Methods, by name:

- ``"mean"``: merge the pair of regions with the highest mean affinity across their
  contact while ``1 - mean < threshold`` (waterz's ``OneMinus<MeanAffinity>``);
- ``"quantile"``: the same with a quantile of a 256-bin affinity histogram
  (waterz's ``OneMinus<HistogramQuantileAffinity<..., 256, false>>``);
- ``"learned"``: gala-style merging in order of a random forest's merge probability,
  optionally with the raw image as a second channel of features
  (see :mod:`neuropil.agglomeration.learned`);
- ``"mutex"``: the mutex watershed (mwatershed) on the fragments' graph, with
  mean affinity minus the threshold as signed edge weight.

The greedy methods record their merge order, so any number of thresholds costs one
run. Input is either nearest-neighbour affinities ``(c, z, y, x)`` (1 = same object)
or a boundary map ``(z, y, x)`` (1 = boundary, like gala's p1), which is turned into
affinities ``1 - mean`` of each voxel pair's boundary values
(:func:`neuropil.watershed.affinities_from_boundaries` with ``combine="mean"``).

References
----------
Nunez-Iglesias, J., Kennedy, R., Parag, T., Shi, J. & Chklovskii, D. B. (2013).
Machine learning of hierarchical clustering to segment 2D and 3D images.
PLoS ONE 8(8), e71715. doi:10.1371/journal.pone.0071715
Funke, J. et al. (2019). Large scale image segmentation with structured loss based
deep learning for connectome reconstruction. IEEE TPAMI 41(7), 1669-1680.
doi:10.1109/TPAMI.2018.2835450
Wolf, S. et al. (2018). The mutex watershed. ECCV. doi:10.1007/978-3-030-01225-0_34
"""

from neuropil.agglomeration.core import (
    METHODS,
    Agglomeration,
    agglomerate,
    agglomeration,
    segment,
)

__all__ = ["METHODS", "Agglomeration", "agglomerate", "agglomeration", "segment"]
