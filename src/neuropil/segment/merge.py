"""Greedy region merging on a region adjacency graph, compiled with numba.

One loop serves every scoring rule: the edge with the lowest score is merged, the
statistics of the merged regions and of their shared edges are summed, the changed
edges are scored again, and each merge is recorded with its score. Scores live in a
binary heap with lazy deletion (an entry is dropped when popped if its edge changed
since it was pushed).

The merge history makes every threshold cost one run: the segmentation at threshold
``t`` is the one reached when the loop first meets a lowest score ``>= t``, i.e. the
history up to the first merge whose running maximum score reaches ``t``.

:func:`merge` runs the loop; :func:`learning_examples` runs it against ground truth to
collect the examples a merge classifier learns from. :class:`Scoring` says how edges
are scored:

- ``"mean"``: ``1 - mean affinity``, from edge statistics (:data:`AFFINITY_SUM`,
  :data:`AFFINITY_COUNT`);
- ``"quantile"``: ``1 -`` a quantile of the affinity histogram that the edge statistics
  are (waterz's rule);
- ``"boundary_mean"``: the mean boundary value, from the learned statistics
  (:mod:`neuropil.segment.features`; the first policy of the learned method's training);
- ``"learned"``: ``1 - P(same object)`` from a decision forest over the edge features
  (:mod:`neuropil.segment.features`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numba
import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError
from neuropil.segment import features

MEAN = 0
QUANTILE = 1
LEARNED = 2
BOUNDARY_MEAN = 3
MODES = {"mean": MEAN, "quantile": QUANTILE, "learned": LEARNED, "boundary_mean": BOUNDARY_MEAN}
"""The merge loop's code of each scoring mode."""
AFFINITY_SUM = 0
"""Column of the mean score's edge statistics holding the sum of the affinities over the contact."""
AFFINITY_COUNT = 1
"""Column of the mean score's edge statistics holding the contact count."""


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
    def empty(cls) -> Forest:
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
        # columns PACKED_FEATURE, PACKED_LEFT, PACKED_RIGHT
        nodes = np.stack([self.feature, self.left, self.right], axis=1).astype(np.int32)
        value = np.where(self.feature >= 0, self.threshold, self.probability).astype(np.float64)
        return nodes, value, self.roots.astype(np.int32)


PACKED_FEATURE = 0
"""Column of a packed forest's node rows holding the feature a node splits on (-1 at leaves)."""
PACKED_LEFT = 1
PACKED_RIGHT = 2


class RegionGraph(Protocol):
    """What the merge loop needs of a region adjacency graph (:class:`neuropil.segment.graph.Contacts` has it)."""

    @property
    def n_nodes(self) -> int: ...

    @property
    def u(self) -> NDArray[np.int64]:
        """(n_edges,) smaller node index of each edge."""
        ...

    @property
    def v(self) -> NDArray[np.int64]:
        """(n_edges,) larger node index of each edge."""
        ...


class Graph(NamedTuple):
    """A region adjacency graph given by its edges."""

    n_nodes: int
    u: NDArray[np.int64]
    """(n_edges,) smaller node index of each edge."""
    v: NDArray[np.int64]
    """(n_edges,) larger node index of each edge."""


@dataclass(frozen=True, eq=False)
class Scoring:
    """How the merge loop scores an edge (the lowest score merges first); see the module docstring."""

    mode: str
    """One of :data:`MODES`."""
    quantile: int = 50
    """Percentile (0-100) of the ``"quantile"`` mode."""
    n_bins: int = 0
    """Bins of the boundary histogram in the learned statistics (``"boundary_mean"`` and ``"learned"``)."""
    forest: Forest | None = None
    """The decision forest of the ``"learned"`` mode."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise NeuropilError(f"unknown scoring mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.mode == "quantile" and not 0 <= self.quantile <= 100:
            raise NeuropilError(f"quantile must be a percentile in 0..100, not {self.quantile}")
        if self.mode in ("boundary_mean", "learned") and self.n_bins < 1:
            raise NeuropilError(f"the {self.mode} score needs the bins of the learned statistics (n_bins >= 1)")
        if self.mode == "learned" and self.forest is None:
            raise NeuropilError("the learned score needs a decision forest")

    @property
    def reads_features(self) -> bool:
        """Whether the score reads the learned statistics (node statistics included)."""
        return self.mode in ("boundary_mean", "learned")


class Examples(NamedTuple):
    """Learning examples: the features of each edge the merge loop reached, and whether it joins one object."""

    features: NDArray[np.float64]
    """(n_examples, n_features) features (:func:`neuropil.segment.features.feature_names`)."""
    labels: NDArray[np.bool_]
    """(n_examples,) True where both regions belong to the same ground-truth object."""


def merge(
    graph: RegionGraph,
    edge_stats: NDArray,
    *,
    scoring: Scoring,
    node_stats: NDArray | None = None,
    stop: float = np.inf,
) -> MergeHistory:
    """Merge the lowest-scoring edge while its score is below ``stop``.

    Parameters
    ----------
    graph : RegionGraph
        Nodes ``0..n_nodes-1`` and edges ``u < v`` (each pair once).
    edge_stats : (n_edges, k) ndarray of float64
        Additive statistics of each edge, those ``scoring`` reads (not modified).
    scoring : Scoring
    node_stats : (n_nodes, m) ndarray of float64, optional
        Additive statistics of each node; needed by the scores that read the learned
        features (not modified).
    stop : float
        Merging stops at the first lowest score ``>= stop``.

    Returns
    -------
    MergeHistory
    """
    kept, removed, score, _, _ = _run(graph, edge_stats, scoring, node_stats, float(stop), None)
    return MergeHistory(kept, removed, score)


def learning_examples(
    graph: RegionGraph, edge_stats: NDArray, *, scoring: Scoring, node_stats: NDArray, node_label: NDArray
) -> Examples:
    """Agglomerate against ground truth in the order ``scoring`` gives, collecting learning examples.

    Each edge the loop reaches between two nodes of known objects is an example; only
    merges of one object are carried out (a false merge is learned from, not made), so
    the examples come from the states the policy meets (gala's agglomerative learning).

    Parameters
    ----------
    graph : RegionGraph
    edge_stats : (n_edges, Layout.edge_columns) ndarray of float64
        The learned edge statistics (:mod:`neuropil.segment.features`).
    scoring : Scoring
        The policy; its ``n_bins`` are those of the statistics.
    node_stats : (n_nodes, Layout.node_columns) ndarray of float64
        The learned node statistics.
    node_label : (n_nodes,) ndarray of int
        The ground-truth object of each node, 0 = unknown.

    Returns
    -------
    Examples
    """
    if not scoring.reads_features:
        raise NeuropilError(f"learning examples are features of the learned statistics, not of {scoring.mode!r} ones")
    node_label = np.asarray(node_label, dtype=np.int64)
    if node_label.shape != (graph.n_nodes,):
        raise NeuropilError(f"{node_label.size} node labels for {graph.n_nodes} nodes")
    *_, examples, labels = _run(graph, edge_stats, scoring, node_stats, np.inf, node_label)
    return Examples(examples, labels)


def _run(graph: RegionGraph, edge_stats, scoring: Scoring, node_stats, stop: float, node_label):
    """Check the input of :func:`merge` and :func:`learning_examples` and run the merge loop."""
    n_nodes = int(graph.n_nodes)
    u = np.asarray(graph.u, dtype=np.int64)
    v = np.asarray(graph.v, dtype=np.int64)
    edge_stats = np.asarray(edge_stats, dtype=np.float64)
    if u.ndim != 1 or u.shape != v.shape:
        raise NeuropilError(f"edges need one u and one v each, got shapes {u.shape} and {v.shape}")
    if edge_stats.ndim != 2 or edge_stats.shape[0] != u.size:
        raise NeuropilError(f"edge statistics of shape {edge_stats.shape} for {u.size} edges")
    if u.size and not (0 <= u.min() and v.max() < n_nodes and (u < v).all()):
        raise NeuropilError(f"edges must join nodes u < v in 0..{n_nodes - 1}")
    if node_stats is None:
        node_stats = np.zeros((n_nodes, 0), dtype=np.float64)
    node_stats = np.asarray(node_stats, dtype=np.float64)
    if node_stats.ndim != 2 or node_stats.shape[0] != n_nodes:
        raise NeuropilError(f"node statistics of shape {node_stats.shape} for {n_nodes} nodes")
    if scoring.reads_features:
        layout = features.layout_of(edge_stats, node_stats, scoring.n_bins)
    else:
        if scoring.mode == "mean" and edge_stats.shape[1] <= AFFINITY_COUNT:
            raise NeuropilError(f"the mean score reads the affinity sum and count, not {edge_stats.shape[1]} columns")
        if scoring.mode == "quantile" and edge_stats.shape[1] < 1:
            raise NeuropilError("the quantile score reads an affinity histogram: the edge statistics are empty")
        layout = features.layout(0, False)
    forest = scoring.forest if scoring.forest is not None else Forest.empty()
    learning = node_label is not None
    return _merge_until(
        n_nodes,
        u,
        v,
        edge_stats,
        node_stats,
        MODES[scoring.mode],
        int(scoring.quantile),
        layout,
        forest.packed(),
        stop,
        node_label if learning else np.zeros(0, dtype=np.int64),
        learning,
    )


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
def forest_probability(nodes, value, roots, feature_vector):
    """Mean over trees of P(class 1) for one feature vector (a :meth:`Forest.packed` forest)."""
    total = 0.0
    for tree in range(roots.size):
        node = roots[tree]
        while nodes[node, PACKED_FEATURE] >= 0:
            # scikit-learn compares float32 features with float64 thresholds
            if np.float64(np.float32(feature_vector[nodes[node, PACKED_FEATURE]])) <= value[node]:
                node = nodes[node, PACKED_LEFT]
            else:
                node = nodes[node, PACKED_RIGHT]
        total += value[node]
    return total / max(roots.size, 1)


@numba.njit(cache=True)
def _score(mode, edge, edge_stats, node_stats, u, v, quantile, layout, forest):
    stat = edge_stats[edge]
    if mode == MEAN:
        return 1.0 - stat[AFFINITY_SUM] / stat[AFFINITY_COUNT]
    if mode == BOUNDARY_MEAN:
        return stat[features.CONTACT_SUM] / max(stat[features.CONTACTS], 1.0)
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
    nodes, value, roots = forest
    vector = features.edge_features(stat, node_stats[u[edge]], node_stats[v[edge]], layout)
    return 1.0 - forest_probability(nodes, value, roots, vector)


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
def _merge_until(n_nodes, u, v, edge_stats, node_stats, mode, quantile, layout, forest, stop, node_label, learning):
    """The merge loop of :func:`merge` and (``learning``) :func:`learning_examples`.

    ``forest`` is a :meth:`Forest.packed` forest, ``layout`` the
    :class:`neuropil.segment.features.Layout` of the learned statistics. Returns the
    merge history (kept, removed, score) and the learning examples (features, labels).
    """
    examples = np.empty((max(u.size, 1) if learning else 0, layout.n_features), dtype=np.float64)
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
            _score(mode, e, edge_stats, node_stats, u, v, quantile, layout, forest),
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
            examples[n_examples] = features.edge_features(edge_stats[edge], node_stats[a], node_stats[b], layout)
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
        if node_stats.shape[1] > features.SURFACE:
            # the contact between a and b is now inside the merged region
            node_stats[a, features.SURFACE] -= 2.0 * edge_stats[edge, features.CONTACTS]
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
                _score(mode, e, edge_stats, node_stats, u, v, quantile, layout, forest),
                e,
                version[e],
            )
    return kept[:n_merges], removed[:n_merges], scores[:n_merges], examples[:n_examples], example_labels[:n_examples]
