"""Greedy region merging on a region adjacency graph, compiled with numba.

One loop serves every scoring rule: the edge with the lowest score is merged, the
statistics of the merged regions and of their shared edges are summed, the changed
edges are scored again, and each merge is recorded with its score. Scores live in a
binary heap with lazy deletion (an entry is dropped when popped if its edge changed
since it was pushed).

The merge history makes every threshold cost one run: the segmentation at threshold
``t`` is the one reached when the loop first meets a lowest score ``>= t``, i.e. the
history up to the first merge whose running maximum score reaches ``t``.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray

MEAN = 0
"""Score ``1 - mean affinity`` from edge statistics ``(sum, count)``."""
QUANTILE = 1
"""Score ``1 - quantile`` of the affinity histogram in the edge statistics (waterz's rule)."""
LEARNED = 2
"""Score ``1 - P(same object)`` from a decision forest over edge and node features."""
BOUNDARY_MEAN = 3
"""Score = mean boundary value, from the learned method's edge statistics (its first policy)."""


class MergeHistory(NamedTuple):
    """Merges in the order they happened: ``removed`` joined ``kept`` at ``score``."""

    kept: NDArray[np.int64]
    removed: NDArray[np.int64]
    score: NDArray[np.float64]

    def n_merges_below(self, threshold: float) -> int:
        """How many merges happen when merging while the lowest score is ``< threshold``."""
        if self.score.size == 0:
            return 0
        reached = np.maximum.accumulate(self.score)
        return int(np.searchsorted(reached, threshold, side="left"))

    def roots(self, n_nodes: int, n_merges: int) -> NDArray[np.int64]:
        """(n_nodes,) the node each node belongs to after the first ``n_merges`` merges."""
        return _roots(n_nodes, self.kept[:n_merges], self.removed[:n_merges])


class Forest(NamedTuple):
    """Decision trees as flat arrays (scikit-learn's layout); leaves have ``feature < 0``."""

    feature: NDArray[np.int64]
    threshold: NDArray[np.float64]
    left: NDArray[np.int64]
    right: NDArray[np.int64]
    probability: NDArray[np.float64]
    """P(class 1) at each node (used at leaves)."""
    roots: NDArray[np.int64]
    """Index of each tree's root node."""

    @classmethod
    def empty(cls) -> "Forest":
        integers = np.zeros(0, dtype=np.int64)
        reals = np.zeros(0, dtype=np.float64)
        return cls(integers, reals, integers, integers, reals, integers)

    def packed(self) -> tuple[NDArray[np.int32], NDArray[np.float64], NDArray[np.int32]]:
        """The layout :func:`forest_probability` walks: ``(n, 3)`` int32 rows of feature
        (-1 at leaves), left and right child; one float64 per node, the threshold of an
        internal node or the probability of a leaf; the tree roots (int32).

        One row per node keeps a node's fields in one cache line (about 1.4x faster than
        five separate arrays in the merge loop).
        """
        nodes = np.stack([self.feature, self.left, self.right], axis=1).astype(np.int32)
        value = np.where(self.feature >= 0, self.threshold, self.probability).astype(np.float64)
        return nodes, value, self.roots.astype(np.int32)


@numba.njit(cache=True)
def _roots(n_nodes, kept, removed):
    parent = np.arange(n_nodes)
    for k in range(kept.size):
        parent[removed[k]] = kept[k]
    for node in range(n_nodes):
        root = node
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:
            following = parent[node]
            parent[node] = root
            node = following
    return parent


@numba.njit(cache=True)
def forest_probability(nodes, value, roots, features):
    """Mean over trees of P(class 1) for one feature vector (a :meth:`Forest.packed` forest)."""
    total = 0.0
    for tree in range(roots.size):
        node = roots[tree]
        while nodes[node, 0] >= 0:
            # scikit-learn compares float32 features with float64 thresholds
            if np.float64(np.float32(features[nodes[node, 0]])) <= value[node]:
                node = nodes[node, 1]
            else:
                node = nodes[node, 2]
        total += value[node]
    return total / max(roots.size, 1)


NODE_STATS = 13
"""Columns of the node statistics of the boundary channel (see :func:`edge_features`)."""
SURFACE = 12
"""Column of the node statistics holding the region's contact area with all other regions."""
IMAGE_HISTOGRAM = 8
"""Bins of the histogram of the image inside each region, where the boundary value is below 0.5."""
IMAGE_FEATURES = 10
"""Features the optional image channel adds (see :func:`edge_features`)."""
PAIR_FEATURES = 5
"""Features of the two regions' shapes taken together (see :func:`_pair_features`)."""


@numba.njit(cache=True)
def n_edge_features(n_bins, image):
    """How many features :func:`edge_features` returns."""
    return 19 + PAIR_FEATURES + n_bins + (IMAGE_FEATURES if image else 0)


@numba.njit(cache=True)
def edge_features(edge_stat, node_u, node_v, n_bins):
    """Features of one edge from its statistics and its two regions' statistics.

    Edge statistics: ``count, sum, sum of squares`` of the boundary value
    (``1 - affinity``) over the contacts, then an ``n_bins`` histogram of it, then
    (with an image channel) the sum and sum of squares of the image value over the
    contacts. Node statistics: ``size, boundary sum, boundary sum of squares, sums of
    z, y, x, sums of zz, yy, xx, zy, zx, yx``, the contact area with all other regions
    (the surface), then (with an image channel) the image sum and sum of squares and
    an :data:`IMAGE_HISTOGRAM`-bin histogram of the image where the boundary value is
    below 0.5. See :func:`neuropil.segment.learned.feature_names`.
    """
    image = node_u.size > NODE_STATS
    count = max(edge_stat[0], 1.0)
    mean = edge_stat[1] / count
    variance = max(edge_stat[2] / count - mean * mean, 0.0)
    features = np.empty(n_edge_features(n_bins, image), dtype=np.float64)
    features[0] = np.log(count)
    features[1] = mean
    features[2] = np.sqrt(variance)
    # quantiles of the boundary value from the histogram (bin centres)
    k = 3
    for quantile in (0.1, 0.5, 0.9):
        pivot = quantile * count
        running = 0.0
        chosen = n_bins - 1
        for bin_ in range(n_bins):
            running += edge_stat[3 + bin_]
            if running >= pivot:
                chosen = bin_
                break
        features[k] = (chosen + 0.5) / n_bins
        k += 1
    for bin_ in range(n_bins):
        features[k] = edge_stat[3 + bin_] / count
        k += 1
    # the two regions, smaller first
    if node_u[0] > node_v[0]:
        node_u, node_v = node_v, node_u
    small = _node_features(node_u)
    large = _node_features(node_v)
    for i in range(small.size):
        features[k] = small[i]
        features[k + small.size] = large[i]
        k += 1
    k += small.size
    # contact relative to the smaller region's surface scale, and size ratio
    features[k] = np.log(count) - (2.0 / 3.0) * np.log(max(node_u[0], 1.0))
    features[k + 1] = np.log(max(node_u[0], 1.0)) - np.log(max(node_v[0], 1.0))
    # how much stronger the boundary is across the contact than inside either region
    # (a region with a noisy interior makes a weak contact look strong)
    features[k + 2] = mean - max(small[1], large[1])
    # the share of each region's surface (its contacts with all other regions) the
    # contact is: near 1 for a region enclosed by the other (gala's contact features)
    features[k + 3] = edge_stat[0] / max(node_u[SURFACE], 1.0)
    features[k + 4] = edge_stat[0] / max(node_v[SURFACE], 1.0)
    k += 5
    features[k : k + PAIR_FEATURES] = _pair_features(node_u, node_v)
    k += PAIR_FEATURES
    if image:
        # image value across the contact and inside each region (smaller first), how
        # much the regions' interiors differ, and how much darker or brighter the
        # contact is than the closer of the two interiors (a membrane is darker)
        edge_mean = edge_stat[3 + n_bins] / count
        features[k] = edge_mean
        features[k + 1] = np.sqrt(max(edge_stat[4 + n_bins] / count - edge_mean * edge_mean, 0.0))
        k += 2
        for stat in (node_u, node_v):
            size = max(stat[0], 1.0)
            region_mean = stat[NODE_STATS] / size
            features[k] = region_mean
            features[k + 1] = np.sqrt(max(stat[NODE_STATS + 1] / size - region_mean * region_mean, 0.0))
            k += 2
        small_mean, large_mean = features[k - 4], features[k - 2]
        features[k] = abs(small_mean - large_mean)
        closer = small_mean if abs(edge_mean - small_mean) < abs(edge_mean - large_mean) else large_mean
        features[k + 1] = edge_mean - closer
        k += 2
        # the image inside the two regions away from boundaries (their cytoplasm):
        # how far apart the two distributions are (total variation) and their means
        start = NODE_STATS + 2
        total_u = max(node_u[start : start + IMAGE_HISTOGRAM].sum(), 1.0)
        total_v = max(node_v[start : start + IMAGE_HISTOGRAM].sum(), 1.0)
        distance = 0.0
        mean_u = 0.0
        mean_v = 0.0
        for bin_ in range(IMAGE_HISTOGRAM):
            share_u = node_u[start + bin_] / total_u
            share_v = node_v[start + bin_] / total_v
            distance += abs(share_u - share_v)
            centre = (bin_ + 0.5) / IMAGE_HISTOGRAM
            mean_u += share_u * centre
            mean_v += share_v * centre
        features[k] = 0.5 * distance
        features[k + 1] = abs(mean_u - mean_v)
    return features


@numba.njit(cache=True)
def all_edge_features(u, v, edge_stats, node_stats, n_bins):
    """(n_edges, n_features) :func:`edge_features` of every edge of a graph."""
    n_features = n_edge_features(n_bins, node_stats.shape[1] > NODE_STATS)
    features = np.empty((u.size, n_features), dtype=np.float64)
    for e in range(u.size):
        features[e] = edge_features(edge_stats[e], node_stats[u[e]], node_stats[v[e]], n_bins)
    return features


@numba.njit(cache=True)
def _moments(stat):
    """Centre and coordinate covariance of a region from its node statistics."""
    size = max(stat[0], 1.0)
    centre = stat[3:6] / size
    covariance = np.empty((3, 3), dtype=np.float64)
    for i in range(3):
        covariance[i, i] = stat[6 + i] / size - centre[i] * centre[i]
    pairs = ((0, 1), (0, 2), (1, 2))
    for j in range(3):
        a, b = pairs[j]
        covariance[a, b] = stat[9 + j] / size - centre[a] * centre[b]
        covariance[b, a] = covariance[a, b]
    return centre, covariance


@numba.njit(cache=True)
def _elongation(eigenvalues):
    """Log share of the largest eigenvalue of a coordinate covariance."""
    return np.log(max(eigenvalues[2], 1e-3)) - np.log(max(eigenvalues.sum(), 1e-3))


@numba.njit(cache=True)
def _node_features(stat):
    size = max(stat[0], 1.0)
    mean = stat[1] / size
    features = np.empty(4, dtype=np.float64)
    features[0] = np.log(size)
    features[1] = mean
    features[2] = np.sqrt(max(stat[2] / size - mean * mean, 0.0))
    # shape: the largest eigenvalue of the coordinate covariance, relative to the others
    features[3] = _elongation(np.linalg.eigvalsh(_moments(stat)[1]))
    return features


@numba.njit(cache=True)
def _pair_features(small, large):
    """How the two regions' shapes fit together (``small`` is the smaller region).

    The elongation of the merged region and its change from the more elongated of
    the two, how parallel the two regions' main axes are, and how closely the line
    between their centres follows each main axis (two pieces of one neurite continue
    each other; two neurites side by side are offset across their axes). All come
    from the additive coordinate moments, so they stay exact as regions merge.
    """
    features = np.empty(PAIR_FEATURES, dtype=np.float64)
    centre_s, covariance_s = _moments(small)
    centre_l, covariance_l = _moments(large)
    values_s, vectors_s = np.linalg.eigh(covariance_s)
    values_l, vectors_l = np.linalg.eigh(covariance_l)
    union = np.linalg.eigvalsh(_moments(small[:12] + large[:12])[1])
    features[0] = _elongation(union)
    features[1] = features[0] - max(_elongation(values_s), _elongation(values_l))
    axis_s = vectors_s[:, 2]
    axis_l = vectors_l[:, 2]
    features[2] = abs(np.dot(axis_s, axis_l))
    offset = centre_l - centre_s
    offset /= max(np.sqrt(np.dot(offset, offset)), 1e-6)
    features[3] = abs(np.dot(offset, axis_s))
    features[4] = abs(np.dot(offset, axis_l))
    return features


@numba.njit(cache=True)
def _score(mode, edge, edge_stats, node_stats, u, v, quantile, n_bins, forest):
    stat = edge_stats[edge]
    if mode == MEAN:
        return 1.0 - stat[0] / stat[1]
    if mode == BOUNDARY_MEAN:
        return stat[1] / max(stat[0], 1.0)
    if mode == QUANTILE:
        total = 0
        for bin_ in range(stat.size):
            total += int(stat[bin_])
        pivot = quantile * total // 100 + 1
        running = 0
        chosen = stat.size - 1
        for bin_ in range(stat.size):
            running += int(stat[bin_])
            if running >= pivot:
                chosen = bin_
                break
        # waterz's float32 bin centre
        return 1.0 - np.float64(np.float32((chosen + 0.5) / stat.size))
    features = edge_features(stat, node_stats[u[edge]], node_stats[v[edge]], n_bins)
    return 1.0 - forest_probability(forest[0], forest[1], forest[2], features)


@numba.njit(cache=True)
def _push(heap_score, heap_edge, heap_version, size, score, edge, version):
    if size == heap_score.size:
        heap_score = np.concatenate((heap_score, np.empty_like(heap_score)))
        heap_edge = np.concatenate((heap_edge, np.empty_like(heap_edge)))
        heap_version = np.concatenate((heap_version, np.empty_like(heap_version)))
    position = size
    while position > 0:
        parent = (position - 1) // 2
        if heap_score[parent] < score or (heap_score[parent] == score and heap_edge[parent] <= edge):
            break
        heap_score[position] = heap_score[parent]
        heap_edge[position] = heap_edge[parent]
        heap_version[position] = heap_version[parent]
        position = parent
    heap_score[position] = score
    heap_edge[position] = edge
    heap_version[position] = version
    return heap_score, heap_edge, heap_version, size + 1


@numba.njit(cache=True)
def _pop(heap_score, heap_edge, heap_version, size):
    size -= 1
    score, edge, version = heap_score[size], heap_edge[size], heap_version[size]
    position = 0
    while True:
        child = 2 * position + 1
        if child >= size:
            break
        if child + 1 < size and (
            heap_score[child + 1] < heap_score[child]
            or (heap_score[child + 1] == heap_score[child] and heap_edge[child + 1] < heap_edge[child])
        ):
            child += 1
        if heap_score[child] > score or (heap_score[child] == score and heap_edge[child] >= edge):
            break
        heap_score[position] = heap_score[child]
        heap_edge[position] = heap_edge[child]
        heap_version[position] = heap_version[child]
        position = child
    heap_score[position] = score
    heap_edge[position] = edge
    heap_version[position] = version
    return size


@numba.njit(cache=True)
def merge_until(n_nodes, u, v, edge_stats, node_stats, mode, quantile, n_bins, forest, stop, node_label):
    """Merge the lowest-scoring edge while its score is below ``stop``.

    Parameters: node indices ``u < v`` per edge (int64), additive ``edge_stats``
    (n_edges, k) and ``node_stats`` (n_nodes, m) float64 (both copied), the scoring
    ``mode`` and its parameters (``forest``: a :meth:`Forest.packed` forest). Returns
    the merge history (kept, removed, score) and learning examples (features, labels).

    Learning (``node_label`` not empty, the ground-truth object of each node, 0 =
    unknown): each edge reached gives an example (features; label: same object),
    and only merges of the same object are carried out.
    """
    learning = node_label.size > 0
    n_features = n_edge_features(n_bins, node_stats.shape[1] > NODE_STATS)
    examples = np.empty((max(u.size, 1) if learning else 0, n_features), dtype=np.float64)
    example_labels = np.empty(examples.shape[0], dtype=np.bool_)
    n_examples = 0
    u = u.copy()
    v = v.copy()
    edge_stats = edge_stats.copy()
    node_stats = node_stats.copy()
    n_edges = u.size
    learned = mode == LEARNED
    # incidence lists: slot 2e is edge e seen from u[e], slot 2e+1 from v[e]
    following = np.full(2 * n_edges, -1, dtype=np.int64)
    head = np.full(n_nodes, -1, dtype=np.int64)
    tail = np.full(n_nodes, -1, dtype=np.int64)
    length = np.zeros(n_nodes, dtype=np.int64)
    lookup = numba.typed.Dict.empty(key_type=numba.types.int64, value_type=numba.types.int64)
    for e in range(n_edges):
        for side in range(2):
            node = u[e] if side == 0 else v[e]
            slot = 2 * e + side
            if tail[node] < 0:
                head[node] = slot
            else:
                following[tail[node]] = slot
            tail[node] = slot
            length[node] += 1
        lookup[u[e] * n_nodes + v[e]] = e
    alive = np.ones(n_edges, dtype=np.bool_)
    version = np.zeros(n_edges, dtype=np.int64)
    capacity = max(2 * n_edges, 16)
    heap_score = np.empty(capacity, dtype=np.float64)
    heap_edge = np.empty(capacity, dtype=np.int64)
    heap_version = np.empty(capacity, dtype=np.int64)
    size = 0
    for e in range(n_edges):
        heap_score, heap_edge, heap_version, size = _push(
            heap_score,
            heap_edge,
            heap_version,
            size,
            _score(mode, e, edge_stats, node_stats, u, v, quantile, n_bins, forest),
            e,
            0,
        )
    kept = np.empty(n_nodes, dtype=np.int64)
    removed = np.empty(n_nodes, dtype=np.int64)
    scores = np.empty(n_nodes, dtype=np.float64)
    changed = np.empty(n_edges, dtype=np.int64)
    n_merges = 0
    while size > 0:
        score, edge, edge_version = heap_score[0], heap_edge[0], heap_version[0]
        if not alive[edge] or edge_version != version[edge]:
            size = _pop(heap_score, heap_edge, heap_version, size)
            continue
        if score >= stop:
            break
        size = _pop(heap_score, heap_edge, heap_version, size)
        a, b = u[edge], v[edge]
        if learning:
            if node_label[a] == 0 or node_label[b] == 0:
                continue
            if n_examples == examples.shape[0]:
                examples = np.concatenate((examples, np.empty_like(examples)))
                example_labels = np.concatenate((example_labels, np.empty_like(example_labels)))
            examples[n_examples] = edge_features(edge_stats[edge], node_stats[a], node_stats[b], n_bins)
            example_labels[n_examples] = node_label[a] == node_label[b]
            n_examples += 1
            if node_label[a] != node_label[b]:
                continue  # a false merge is learned from, not made
        if length[a] < length[b]:
            a, b = b, a  # walk the shorter incidence list
        alive[edge] = False
        del lookup[min(a, b) * n_nodes + max(a, b)]
        kept[n_merges] = a
        removed[n_merges] = b
        scores[n_merges] = score
        n_merges += 1
        for j in range(node_stats.shape[1]):
            node_stats[a, j] += node_stats[b, j]
        if node_stats.shape[1] > SURFACE:
            # the contact between a and b is now inside the merged region
            node_stats[a, SURFACE] -= 2.0 * edge_stats[edge, 0]
        n_changed = 0
        slot = head[b]
        while slot >= 0:
            e = slot // 2
            if alive[e]:
                other = v[e] if u[e] == b else u[e]
                del lookup[min(b, other) * n_nodes + max(b, other)]
                key = min(a, other) * n_nodes + max(a, other)
                if key in lookup:
                    # a shared neighbour: sum the two edges into a's
                    target = lookup[key]
                    for j in range(edge_stats.shape[1]):
                        edge_stats[target, j] += edge_stats[e, j]
                    alive[e] = False
                    changed[n_changed] = target
                    n_changed += 1
                else:
                    if u[e] == b:
                        u[e] = a
                    else:
                        v[e] = a
                    if u[e] > v[e]:
                        u[e], v[e] = v[e], u[e]
                    lookup[key] = e
                    if learned:
                        changed[n_changed] = e
                        n_changed += 1
            slot = following[slot]
        # b's incidence list joins a's (dead slots are skipped when walked)
        if head[b] >= 0:
            if tail[a] < 0:
                head[a] = head[b]
            else:
                following[tail[a]] = head[b]
            tail[a] = tail[b]
            length[a] += length[b]
        head[b] = -1
        tail[b] = -1
        if learned:
            # the merged region's features changed: every incident edge is scored
            # again; the walk also drops dead slots from a's list
            n_changed = 0
            previous = -1
            slot = head[a]
            while slot >= 0:
                e = slot // 2
                if alive[e]:
                    changed[n_changed] = e
                    n_changed += 1
                    if previous < 0:
                        head[a] = slot
                    else:
                        following[previous] = slot
                    previous = slot
                slot = following[slot]
            if previous < 0:
                head[a] = -1
            else:
                following[previous] = -1
            tail[a] = previous
            length[a] = n_changed
        for k in range(n_changed):
            e = changed[k]
            if not alive[e]:
                continue
            version[e] += 1
            heap_score, heap_edge, heap_version, size = _push(
                heap_score,
                heap_edge,
                heap_version,
                size,
                _score(mode, e, edge_stats, node_stats, u, v, quantile, n_bins, forest),
                e,
                version[e],
            )
    return kept[:n_merges], removed[:n_merges], scores[:n_merges], examples[:n_examples], example_labels[:n_examples]
