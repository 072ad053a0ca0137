"""Agglomeration: fragments (supervoxels) -> segments, by one interface for every method.

Methods, by name:

- ``"mean"``: merge the pair of regions with the highest mean affinity across their
  contact while ``1 - mean < threshold`` (waterz's ``OneMinus<MeanAffinity>``);
- ``"quantile"``: the same with a quantile of a 256-bin affinity histogram
  (waterz's ``OneMinus<HistogramQuantileAffinity<..., 256, false>>``);
- ``"learned"``: gala-style merging in order of a random forest's merge probability,
  optionally with the raw image as a second channel of features
  (see :mod:`neuropil.segment.learned`);
- ``"mutex"``: the mutex watershed (mwatershed) on the fragments' graph, with
  mean affinity minus the threshold as signed edge weight.

The greedy methods record their merge order, so any number of thresholds costs one
run. Input is either nearest-neighbour affinities ``(c, z, y, x)`` (1 = same object)
or a boundary map ``(z, y, x)`` (1 = boundary, like gala's p1), which is turned into
affinities ``1 - mean`` of each voxel pair's boundary values
(:func:`neuropil.segment.affinities.affinities_from_boundaries` with ``combine="mean"``).

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

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError
from neuropil.segment import graph, learned, merge
from neuropil.segment.affinities import as_affinities, check_boundaries
from neuropil.segment.learned import check_model
from neuropil.segment.mutex import mutex_watershed

logger = logging.getLogger(__name__)

METHODS = ("mean", "quantile", "learned", "mutex")
HISTOGRAM_BINS = 256
"""Bins of the affinity histogram of the quantile method (as waterz's)."""


@dataclass(frozen=True)
class Agglomeration:
    """The result of one agglomeration run: segmentations at any threshold, cheaply."""

    contacts: graph.Contacts
    history: merge.MergeHistory

    def segmentation(self, threshold: float) -> NDArray[np.uint64]:
        """(z, y, x) uint64 segmentation when merging while the score is ``< threshold``.

        Each segment keeps the id of one of its fragments; 0 stays 0.
        """
        n_merges = self.history.n_merges_below(threshold)
        roots = self.history.roots(self.contacts.n_nodes, n_merges)
        return self.contacts.paint(self.contacts.ids[roots])


def agglomeration(
    affinities: NDArray,
    fragments: NDArray,
    *,
    method: str = "mean",
    stop: float = np.inf,
    quantile: int = 50,
    model=None,
    image: NDArray | None = None,
) -> Agglomeration:
    """Run a greedy agglomeration once, up to score ``stop``, keeping its merge history.

    Parameters
    ----------
    affinities : (c, z, y, x) ndarray of float, or (z, y, x) ndarray of float
        Nearest-neighbour affinities (1 = same object), or a boundary map (1 = boundary).
    fragments : (z, y, x) ndarray of int
        Fragment ids; 0 = no fragment (never merged, stays 0).
    method : {"mean", "quantile", "learned"}
        Scoring rule; ``"mutex"`` has no merge order, use :func:`agglomerate`.
    stop : float
        Merging stops at the first lowest score ``>= stop``.
    quantile : int
        Percentile (0-100) of the quantile method.
    model : neuropil.segment.learned.MergeClassifier
        The trained classifier of the learned method.
    image : (z, y, x) ndarray, optional
        Raw image, for a learned classifier trained with the image channel (and
        only then).

    Returns
    -------
    Agglomeration
    """
    if method not in ("mean", "quantile", "learned"):
        raise NeuropilError(f"method {method!r} has no merge history; choose one of mean, quantile, learned")
    if image is not None and method != "learned":
        raise NeuropilError(f"an image is only used by the learned method, not {method!r}")
    node_stats: NDArray[np.float64] | None = None
    if method in ("mean", "quantile") and np.ndim(affinities) == 3:
        # a boundary map: the contacts' affinities are computed where they are found,
        # without the affinities of every voxel pair (the same values, to the last bit)
        boundaries = np.asarray(affinities)
        check_boundaries(boundaries)
        fragments = graph.check_fragments(fragments, boundaries.shape)
        contacts = graph.contacts_of_boundaries(boundaries, fragments)
    else:
        values = as_affinities(affinities)
        fragments = graph.check_fragments(fragments, values.shape[1:])
        contacts = graph.contacts(values, fragments)
    if method in ("mean", "quantile"):
        if not 0 <= quantile <= 100:
            raise NeuropilError(f"quantile must be a percentile in 0..100, not {quantile}")
        edge_stats = edge_statistics(method, contacts.edge, contacts.value, contacts.n_edges)
        scoring = merge.Scoring(method, quantile=int(quantile))
    else:
        check_model(model, image is not None)
        voxel_boundary = learned.voxel_boundaries(affinities, values)
        edge_stats, node_stats = learned.statistics(contacts, voxel_boundary, model.n_bins, image)
        scoring = model.scoring()
    history = merge.merge(contacts, edge_stats, scoring=scoring, node_stats=node_stats, stop=float(stop))
    logger.debug("%s agglomeration: %d merges of %d fragments", method, history.kept.size, contacts.n_nodes)
    return Agglomeration(contacts, history)


def edge_statistics(
    method: str, edge: NDArray[np.int64], value: NDArray[np.float32], n_edges: int
) -> NDArray[np.float64]:
    """(n_edges, k) additive edge statistics of the mean or quantile score, from per-contact affinities.

    ``edge`` is each contact's edge index and ``value`` its affinity. mean: the sum of
    the affinities and the contact count; quantile: the histogram of the affinities in
    :data:`HISTOGRAM_BINS` bins, binned like waterz's ``discretize``. Sums of these over
    parts of a volume are the statistics of the whole (:mod:`neuropil.blockwise`).
    """
    if method == "mean":
        return np.stack(
            [
                np.bincount(edge, weights=value, minlength=n_edges).astype(np.float64, copy=False),
                np.bincount(edge, minlength=n_edges).astype(np.float64),
            ],
            axis=1,
        )
    counts = np.bincount(
        edge * HISTOGRAM_BINS + _histogram_levels(value, HISTOGRAM_BINS), minlength=n_edges * HISTOGRAM_BINS
    )
    return counts.reshape(n_edges, HISTOGRAM_BINS).astype(np.float64)


def _histogram_levels(values: NDArray[np.float32], bins: int) -> NDArray[np.int64]:
    """The histogram bin of each affinity, as waterz's ``discretize`` (non-positive values in bin 0)."""
    level = np.clip((values * bins).astype(np.int64), 0, bins - 1)
    level[~(values > 0)] = 0
    return level


def agglomerate(
    affinities: NDArray,
    fragments: NDArray,
    *,
    method: str = "mean",
    thresholds: Sequence[float] = (0.5,),
    quantile: int = 50,
    model=None,
    image: NDArray | None = None,
    offsets: Sequence[Sequence[int]] | None = None,
) -> list[NDArray[np.uint64]]:
    """Segmentations of the fragments at each threshold, from one run.

    Parameters
    ----------
    affinities : (c, z, y, x) ndarray of float, or (z, y, x) ndarray of float
        Affinities (1 = same object) whose channels 0-2 are the nearest neighbours
        (further channels, e.g. long-range ones, are ignored unless ``offsets`` are given
        to ``"mutex"``), or a boundary map (1 = boundary).
    fragments : (z, y, x) ndarray of int
        Fragment ids; 0 = no fragment (stays 0).
    method : {"mean", "quantile", "learned", "mutex"}
        See the package docstring.
    thresholds : sequence of float
        Greedy methods merge while the lowest score (``1 - affinity`` statistic, or
        ``1 - P(merge)``) is below a threshold. For ``"mutex"``, edges with mean
        affinity above ``1 - threshold`` attract, the others repel.
    quantile : int
        Percentile of the quantile method.
    model : neuropil.segment.learned.MergeClassifier, optional
        Needed by ``"learned"``.
    image : (z, y, x) ndarray, optional
        Raw image, for a classifier trained with the image channel.
    offsets : sequence of (z, y, x) int offsets, optional
        One per channel of ``affinities`` (nearest neighbours first, then long-range
        ones). ``"mutex"`` then adds repulsive edges from the long-range channels
        (:func:`neuropil.segment.mutex.mutex_watershed`); the other methods read
        channels 0-2 only, with or without offsets.

    Returns
    -------
    list of (z, y, x) ndarray of uint64
        One segmentation per threshold, in the order given.
    """
    if method not in METHODS:
        raise NeuropilError(f"unknown agglomeration method {method!r}; choose one of {', '.join(METHODS)}")
    thresholds = [float(t) for t in np.atleast_1d(np.asarray(thresholds, dtype=np.float64))]
    # Scores lie in [0, 1]; a threshold above 1 is allowed and merges across every contact.
    negative = [t for t in thresholds if not t >= 0.0]
    if negative:
        raise NeuropilError(f"thresholds must be >= 0 (scores are 1 - affinity or 1 - probability), not {negative}")
    if not thresholds:
        raise NeuropilError("no thresholds given")
    if method == "mutex":
        if image is not None:
            raise NeuropilError("an image is only used by the learned method, not 'mutex'")
        return [mutex_watershed(affinities, fragments, threshold=t, offsets=offsets) for t in thresholds]
    run = agglomeration(
        affinities, fragments, method=method, stop=max(thresholds), quantile=quantile, model=model, image=image
    )
    return [run.segmentation(t) for t in thresholds]
