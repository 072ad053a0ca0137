"""Columns of the learned agglomeration's statistics and edge features, named in one place.

The statistics are additive, so the merge loop keeps them exact by summing rows when
regions merge; the features of an edge are computed from its statistics and its two
regions' statistics whenever the edge is scored.

Node statistics, one row per region (:func:`neuropil.segment.learned.statistics`):

- :data:`SIZE` (voxels), :data:`BOUNDARY_SUM` and :data:`BOUNDARY_SQUARES` (sum and sum of
  squares of the voxel boundary value ``1 - affinity``), :data:`COORDINATES` (sums of the
  voxel coordinates z, y, x), :data:`SQUARES` (sums of zz, yy, xx) and :data:`PRODUCTS`
  (sums of zy, zx, yx: the axes :data:`PRODUCT_AXES`); these :data:`VOXEL_COLUMNS` are
  sums over voxels, in volume coordinates;
- :data:`SURFACE`: the contact area with all other regions (a merge removes twice the
  contact between the two regions); :data:`NODE_COLUMNS` columns without an image;
- with an image channel: :data:`IMAGE_SUM`, :data:`IMAGE_SQUARES`, then
  :data:`IMAGE_BINS` columns from :data:`IMAGE_HISTOGRAM`: the histogram of the image
  value (over [0, 1]) of the voxels whose boundary value is below 0.5 (the cytoplasm);
  :data:`NODE_COLUMNS_WITH_IMAGE` columns in all.

Edge statistics, one row per edge (sums over the voxel contacts of two regions):

- :data:`CONTACTS` (the contact area), :data:`CONTACT_SUM` and :data:`CONTACT_SQUARES` of
  the boundary value across each contact, then ``n_bins`` columns from
  :data:`CONTACT_HISTOGRAM`: its histogram over [0, 1];
- with an image channel, at :attr:`Layout.contact_image_sum` and
  :attr:`Layout.contact_image_squares`: the sum and sum of squares of the image value
  across each contact (the mean of the two voxels').

Edge features, in groups, in this order (:func:`feature_names`; each group's start is in
:class:`Layout`); "smaller" and "larger" are the two regions by size:

- :data:`CONTACT_FEATURES`: log contact area, mean and standard deviation of the boundary
  value across the contact;
- the boundary value's :data:`QUANTILES` (bin centres of the histogram) and its
  histogram, as shares of the contact;
- :data:`REGION_FEATURES` of the smaller, then of the larger region: log size, mean and
  standard deviation of the boundary value inside, elongation (the log share of the
  largest eigenvalue of the voxel coordinates' covariance);
- :data:`RELATION_FEATURES`: the log contact relative to the smaller region's surface
  scale (``size ** (2/3)``), the log size ratio, the boundary contrast (the contact's
  mean minus the larger of the two interiors' means: a noisy interior makes any contact
  look strong), and the share of each region's surface the contact is (near 1 for a
  region enclosed by the other; gala's contact features);
- :data:`PAIR_FEATURES`: how the two shapes fit together (see :func:`pair_features`);
- with an image, :data:`IMAGE_FEATURES`: the mean and spread of the image value across
  the contact and inside each region, the difference of the regions' means, the
  contact's contrast against the closer of the two interiors (a membrane is darker than
  the cytoplasm on both sides), and the total-variation distance and the difference of
  means of the two regions' interior histograms.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError

# node statistics
SIZE = 0
BOUNDARY_SUM = 1
BOUNDARY_SQUARES = 2
COORDINATES = 3
"""First of the sums of z, y, x."""
SQUARES = COORDINATES + 3
"""First of the sums of zz, yy, xx."""
PRODUCTS = SQUARES + 3
"""First of the sums of the mixed products, of the axes :data:`PRODUCT_AXES` in turn."""
PRODUCT_AXES = ((0, 1), (0, 2), (1, 2))
VOXEL_COLUMNS = PRODUCTS + len(PRODUCT_AXES)
"""The node statistics summed voxel by voxel: those before :data:`SURFACE`."""
SURFACE = VOXEL_COLUMNS
NODE_COLUMNS = SURFACE + 1
"""Width of the node statistics without an image channel."""
IMAGE_SUM = NODE_COLUMNS
IMAGE_SQUARES = IMAGE_SUM + 1
IMAGE_HISTOGRAM = IMAGE_SQUARES + 1
"""First column of the histogram of the image inside a region, away from boundaries."""
IMAGE_BINS = 8
INTERIOR = 0.5
"""Voxels with a boundary value below this count as a region's interior in the image histogram."""
NODE_COLUMNS_WITH_IMAGE = IMAGE_HISTOGRAM + IMAGE_BINS

# edge statistics
CONTACTS = 0
CONTACT_SUM = 1
CONTACT_SQUARES = 2
CONTACT_HISTOGRAM = 3
"""First of the ``n_bins`` columns of the boundary-value histogram across the contact."""

# edge features
CONTACT_FEATURES = ("log_contact", "boundary_mean", "boundary_std")
QUANTILES = (0.1, 0.5, 0.9)
REGION_FEATURES = ("log_size", "inside_mean", "inside_std", "elongation")
RELATION_FEATURES = (
    "contact_per_surface",
    "log_size_ratio",
    "boundary_contrast",
    "smaller_surface_fraction",
    "larger_surface_fraction",
)
PAIR_FEATURES = (
    "merged_elongation",
    "merged_elongation_change",
    "axes_alignment",
    "offset_along_smaller_axis",
    "offset_along_larger_axis",
)
IMAGE_FEATURES = (
    "image_contact_mean",
    "image_contact_std",
    "smaller_image_mean",
    "smaller_image_std",
    "larger_image_mean",
    "larger_image_std",
    "image_mean_difference",
    "image_contrast",
    "interior_image_distance",
    "interior_image_mean_difference",
)


class Layout(NamedTuple):
    """The columns that depend on the histogram bins and the image channel (:func:`layout`).

    Feature fields are the first column of a group of features; absent parts are -1.
    """

    n_bins: int
    image: bool
    contact_image_sum: int
    contact_image_squares: int
    edge_columns: int
    """Width of the edge statistics."""
    node_columns: int
    """Width of the node statistics."""
    quantiles: int
    histogram: int
    smaller: int
    larger: int
    relation: int
    pair: int
    image_features: int
    n_features: int


def _feature_groups(n_bins: int, image: bool) -> list[tuple[str, tuple[str, ...]]]:
    """The feature groups in order: the :class:`Layout` field of each and its feature names."""
    groups = [
        ("contact", CONTACT_FEATURES),
        ("quantiles", tuple(f"boundary_q{round(100 * quantile)}" for quantile in QUANTILES)),
        ("histogram", tuple(f"boundary_hist_{i}_of_{n_bins}" for i in range(n_bins))),
        ("smaller", tuple(f"smaller_{name}" for name in REGION_FEATURES)),
        ("larger", tuple(f"larger_{name}" for name in REGION_FEATURES)),
        ("relation", RELATION_FEATURES),
        ("pair", PAIR_FEATURES),
    ]
    return groups + ([("image_features", IMAGE_FEATURES)] if image else [])


def feature_names(n_bins: int, image: bool = False) -> list[str]:
    """Names of the edge features, in the order :func:`all_edge_features` computes them."""
    return [name for _, names in _feature_groups(n_bins, image) for name in names]


def layout(n_bins: int, image: bool) -> Layout:
    """The :class:`Layout` of statistics with ``n_bins`` histogram bins, with or without the image channel."""
    starts = {}
    n_features = 0
    for group, names in _feature_groups(n_bins, image):
        starts[group] = n_features
        n_features += len(names)
    after_histogram = CONTACT_HISTOGRAM + n_bins
    return Layout(
        n_bins=n_bins,
        image=image,
        contact_image_sum=after_histogram if image else -1,
        contact_image_squares=after_histogram + 1 if image else -1,
        edge_columns=after_histogram + (2 if image else 0),
        node_columns=NODE_COLUMNS_WITH_IMAGE if image else NODE_COLUMNS,
        quantiles=starts["quantiles"],
        histogram=starts["histogram"],
        smaller=starts["smaller"],
        larger=starts["larger"],
        relation=starts["relation"],
        pair=starts["pair"],
        image_features=starts.get("image_features", -1),
        n_features=n_features,
    )


def layout_of(edge_stats: NDArray, node_stats: NDArray, n_bins: int) -> Layout:
    """The :class:`Layout` of given statistics (the image channel is read from the node statistics' width).

    Raises a :class:`~neuropil.errors.NeuropilError` unless both widths fit ``n_bins``.
    """
    if n_bins < 1:
        raise NeuropilError(f"the boundary histogram needs at least one bin, not {n_bins}")
    width = node_stats.shape[1] if node_stats.ndim == 2 else -1
    if width not in (NODE_COLUMNS, NODE_COLUMNS_WITH_IMAGE):
        raise NeuropilError(
            f"node statistics have {width} columns; the learned features read {NODE_COLUMNS} "
            f"({NODE_COLUMNS_WITH_IMAGE} with an image)"
        )
    found = layout(n_bins, width == NODE_COLUMNS_WITH_IMAGE)
    edge_width = edge_stats.shape[1] if edge_stats.ndim == 2 else -1
    if edge_width != found.edge_columns:
        raise NeuropilError(
            f"edge statistics have {edge_width} columns, not the {found.edge_columns} of {n_bins} bins"
            f"{' with' if found.image else ' without'} an image"
        )
    return found


def all_edge_features(
    u: NDArray[np.int64], v: NDArray[np.int64], edge_stats: NDArray, node_stats: NDArray, *, n_bins: int
) -> NDArray[np.float64]:
    """Features of every edge of a region adjacency graph.

    Parameters
    ----------
    u, v : (n_edges,) ndarray of int64
        The two node indices of each edge.
    edge_stats : (n_edges, Layout.edge_columns) ndarray of float64
    node_stats : (n_nodes, Layout.node_columns) ndarray of float64
    n_bins : int
        Bins of the boundary-value histogram in the edge statistics.

    Returns
    -------
    (n_edges, Layout.n_features) ndarray of float64
        Columns named by :func:`feature_names`.
    """
    edge_stats = np.asarray(edge_stats, dtype=np.float64)
    node_stats = np.asarray(node_stats, dtype=np.float64)
    found = layout_of(edge_stats, node_stats, n_bins)
    u, v = np.asarray(u, dtype=np.int64), np.asarray(v, dtype=np.int64)
    if u.shape != v.shape or u.shape != edge_stats.shape[:1]:
        raise NeuropilError(f"{u.size} and {v.size} edge ends for {edge_stats.shape[0]} rows of edge statistics")
    return _all_edge_features(u, v, edge_stats, node_stats, found)


@numba.njit(cache=True)
def _all_edge_features(u, v, edge_stats, node_stats, layout):
    features = np.empty((u.size, layout.n_features), dtype=np.float64)
    for e in range(u.size):
        features[e] = edge_features(edge_stats[e], node_stats[u[e]], node_stats[v[e]], layout)
    return features


@numba.njit(cache=True)
def _put(features, start, values):
    for i in range(len(values)):
        features[start + i] = values[i]


@numba.njit(cache=True)
def edge_features(edge_stat, node_u, node_v, layout):
    """(Layout.n_features,) float64 features of one edge from its statistics and its two regions'.

    Compiled with numba, for the merge loop; ``layout`` is the statistics' :class:`Layout`.
    """
    # a feature a group leaves unwritten would show as NaN
    features = np.full(layout.n_features, np.nan, dtype=np.float64)
    count = max(edge_stat[CONTACTS], 1.0)
    mean = edge_stat[CONTACT_SUM] / count
    variance = max(edge_stat[CONTACT_SQUARES] / count - mean * mean, 0.0)
    _put(features, 0, (np.log(count), mean, np.sqrt(variance)))
    n_bins = layout.n_bins
    # quantiles of the boundary value from the histogram (bin centres)
    for i, quantile in enumerate(QUANTILES):
        pivot = quantile * count
        running = 0.0
        chosen = n_bins - 1
        for bin_ in range(n_bins):
            running += edge_stat[CONTACT_HISTOGRAM + bin_]
            if running >= pivot:
                chosen = bin_
                break
        features[layout.quantiles + i] = (chosen + 0.5) / n_bins
    for bin_ in range(n_bins):
        features[layout.histogram + bin_] = edge_stat[CONTACT_HISTOGRAM + bin_] / count
    if node_u[SIZE] > node_v[SIZE]:
        node_u, node_v = node_v, node_u
    _put(features, layout.smaller, _region_features(node_u))
    _put(features, layout.larger, _region_features(node_v))
    small_size = max(node_u[SIZE], 1.0)
    relation = (
        np.log(count) - (2.0 / 3.0) * np.log(small_size),
        np.log(small_size) - np.log(max(node_v[SIZE], 1.0)),
        # how much stronger the boundary is across the contact than inside either region
        # (a region with a noisy interior makes a weak contact look strong)
        mean - max(_inside_mean(node_u), _inside_mean(node_v)),
        # the share of each region's surface the contact is: near 1 for a region
        # enclosed by the other (gala's contact features)
        edge_stat[CONTACTS] / max(node_u[SURFACE], 1.0),
        edge_stat[CONTACTS] / max(node_v[SURFACE], 1.0),
    )
    _put(features, layout.relation, relation)
    _put(features, layout.pair, pair_features(node_u, node_v))
    if layout.image:
        _put(features, layout.image_features, _image_features(edge_stat, node_u, node_v, layout, count))
    return features


@numba.njit(cache=True)
def _inside_mean(stat):
    return stat[BOUNDARY_SUM] / max(stat[SIZE], 1.0)


@numba.njit(cache=True)
def _moments(stat):
    """Centre and coordinate covariance of a region from its node statistics."""
    size = max(stat[SIZE], 1.0)
    centre = stat[COORDINATES : COORDINATES + 3] / size
    covariance = np.empty((3, 3), dtype=np.float64)
    for i in range(3):
        covariance[i, i] = stat[SQUARES + i] / size - centre[i] * centre[i]
    for j in range(len(PRODUCT_AXES)):
        a, b = PRODUCT_AXES[j]
        covariance[a, b] = stat[PRODUCTS + j] / size - centre[a] * centre[b]
        covariance[b, a] = covariance[a, b]
    return centre, covariance


@numba.njit(cache=True)
def _elongation(eigenvalues):
    """Log share of the largest eigenvalue of a coordinate covariance."""
    return np.log(max(eigenvalues[2], 1e-3)) - np.log(max(eigenvalues.sum(), 1e-3))


@numba.njit(cache=True)
def _region_features(stat):
    """:data:`REGION_FEATURES` of one region."""
    size = max(stat[SIZE], 1.0)
    mean = stat[BOUNDARY_SUM] / size
    return (
        np.log(size),
        mean,
        np.sqrt(max(stat[BOUNDARY_SQUARES] / size - mean * mean, 0.0)),
        # shape: the largest eigenvalue of the coordinate covariance, relative to the others
        _elongation(np.linalg.eigvalsh(_moments(stat)[1])),
    )


@numba.njit(cache=True)
def pair_features(small, large):
    """:data:`PAIR_FEATURES`: how two regions' shapes fit together (``small`` is the smaller region).

    The elongation of the merged region and its change from the more elongated of
    the two, how parallel the two regions' main axes are, and how closely the line
    between their centres follows each main axis (two pieces of one neurite continue
    each other; two neurites side by side are offset across their axes). All come
    from the additive coordinate moments, so they stay exact as regions merge.
    """
    centre_s, covariance_s = _moments(small)
    centre_l, covariance_l = _moments(large)
    values_s, vectors_s = np.linalg.eigh(covariance_s)
    values_l, vectors_l = np.linalg.eigh(covariance_l)
    union = np.linalg.eigvalsh(_moments(small[:VOXEL_COLUMNS] + large[:VOXEL_COLUMNS])[1])
    merged = _elongation(union)
    axis_s = vectors_s[:, 2]
    axis_l = vectors_l[:, 2]
    offset = centre_l - centre_s
    offset /= max(np.sqrt(np.dot(offset, offset)), 1e-6)
    return (
        merged,
        merged - max(_elongation(values_s), _elongation(values_l)),
        abs(np.dot(axis_s, axis_l)),
        abs(np.dot(offset, axis_s)),
        abs(np.dot(offset, axis_l)),
    )


@numba.njit(cache=True)
def _image_features(edge_stat, small, large, layout, count):
    """:data:`IMAGE_FEATURES` of an edge (``small`` is the smaller region; ``count`` the contact, at least 1)."""
    # image value across the contact and inside each region (smaller first), how much
    # the regions' interiors differ, and how much darker or brighter the contact is
    # than the closer of the two interiors (a membrane is darker)
    edge_mean = edge_stat[layout.contact_image_sum] / count
    edge_std = np.sqrt(max(edge_stat[layout.contact_image_squares] / count - edge_mean * edge_mean, 0.0))
    small_mean, small_std = _image_mean_std(small)
    large_mean, large_std = _image_mean_std(large)
    closer = small_mean if abs(edge_mean - small_mean) < abs(edge_mean - large_mean) else large_mean
    # the image inside the two regions away from boundaries (their cytoplasm): how far
    # apart the two distributions are (total variation) and their means
    total_s = max(small[IMAGE_HISTOGRAM : IMAGE_HISTOGRAM + IMAGE_BINS].sum(), 1.0)
    total_l = max(large[IMAGE_HISTOGRAM : IMAGE_HISTOGRAM + IMAGE_BINS].sum(), 1.0)
    distance = 0.0
    interior_s = 0.0
    interior_l = 0.0
    for bin_ in range(IMAGE_BINS):
        share_s = small[IMAGE_HISTOGRAM + bin_] / total_s
        share_l = large[IMAGE_HISTOGRAM + bin_] / total_l
        distance += abs(share_s - share_l)
        centre = (bin_ + 0.5) / IMAGE_BINS
        interior_s += share_s * centre
        interior_l += share_l * centre
    return (
        edge_mean,
        edge_std,
        small_mean,
        small_std,
        large_mean,
        large_std,
        abs(small_mean - large_mean),
        edge_mean - closer,
        0.5 * distance,
        abs(interior_s - interior_l),
    )


@numba.njit(cache=True)
def _image_mean_std(stat):
    size = max(stat[SIZE], 1.0)
    mean = stat[IMAGE_SUM] / size
    return mean, np.sqrt(max(stat[IMAGE_SQUARES] / size - mean * mean, 0.0))
