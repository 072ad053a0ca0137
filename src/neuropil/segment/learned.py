"""Learned (gala-style) agglomeration: a random forest decides which regions to merge.

Features of an edge come from its boundary (the contact area and the distribution of
the boundary value ``1 - affinity`` across the contact), from its two regions (size,
the boundary value inside, elongation), from how the two relate (boundary contrast,
the share of each region's surface the contact is) and from how their shapes fit
together; :mod:`neuropil.segment.features` names and describes them all, and the
columns of the statistics they come from. All are computed from additive statistics,
so the features of merged regions are updated exactly after each merge.

An image (the raw EM volume) can be given as an optional second channel, for training
and then for every use of the classifier: it adds the image value across the contact
and inside each region and how the two regions' interiors (their cytoplasm, away from
boundaries) differ, which tells cells apart where the boundary map is uncertain. It is
optional because a pipeline that predicts affinities may not keep the image at hand;
on fib-gala it avoids the largest wrong merges (see docs/benchmarks.md, agglomeration
benchmark).

Training follows gala's agglomerative learning: the fragments are agglomerated
against ground truth, in the order the current policy gives (mean boundary value in
the first epoch, the classifier trained so far after that); every edge the policy
reaches is an example (label: both regions belong to the same ground-truth object)
and only correct merges are carried out, so the examples come from the states the
policy meets; the edges of the initial graph are examples too. The classifier of
the last epoch is trained on the examples of all. Each example is weighted by what
its mistake would cost: merging two regions of sizes ``a`` and ``b`` wrongly adds
``(a + b) log(a + b) - a log a - b log b`` (over the volume size) to the merge
error of the variation of information, and leaving two parts of one object apart
costs the same split error; the weight is a power of that cost (0.5 by default), so
that the few pairs of large regions, whose wrong merges dominate the error, count
more than the many pairs of small fragments.

The classifier is stored as flat tree arrays in an ``.npz`` file with JSON metadata,
read without pickle and bounds-checked before use. The metadata may carry the merge
threshold chosen on the training volume (``neuropil agglomeration train`` stores it;
``neuropil segment --method learned`` uses it when given no ``--threshold``); files
without one load with none.

Reference: Nunez-Iglesias, J. et al. (2013). PLoS ONE 8(8), e71715.
doi:10.1371/journal.pone.0071715
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from numpy.typing import NDArray

from neuropil.errors import NeuropilError
from neuropil.segment import features, graph, merge
from neuropil.segment.affinities import affinities_from_boundaries, as_affinities, mean_affinity

logger = logging.getLogger(__name__)

FORMAT = "neuropil-merge-classifier"
FORMAT_VERSION = 3
DEFAULT_BINS = 8
POLICY_TREES_DIVISOR = 10


def feature_names(n_bins: int, image: bool = False) -> list[str]:
    """Names of the edge features (:func:`neuropil.segment.features.feature_names`)."""
    return features.feature_names(n_bins, image)


@dataclass(frozen=True)
class MergeClassifier:
    """A trained merge classifier: a decision forest over :func:`feature_names`."""

    forest: merge.Forest
    n_bins: int
    feature_names: tuple[str, ...]
    image: bool = False
    """Whether the classifier uses the image channel (then every use needs the image)."""
    merge_threshold: float | None = None
    """The merge probability threshold chosen on its training volume (lowest VOI), if one was."""

    def save(self, path: str | os.PathLike) -> None:
        """Write the forest arrays and metadata to an ``.npz`` file (no pickle)."""
        metadata = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "n_bins": self.n_bins,
            "image": self.image,
            "feature_names": list(self.feature_names),
        }
        if self.merge_threshold is not None:
            metadata["merge_threshold"] = float(self.merge_threshold)
        path = Path(path)
        if not path.parent.is_dir():
            raise NeuropilError(f"{path}: folder {path.parent} does not exist")
        temporary = path.with_name(path.name + ".partial")
        try:
            with open(temporary, "wb") as file:
                np.savez_compressed(file, metadata=np.array(json.dumps(metadata)), **self.forest._asdict())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> MergeClassifier:
        """Read and check a classifier written by :meth:`save`."""
        if not Path(path).is_file():
            raise NeuropilError(f"{path}: no such merge classifier file")
        try:
            with np.load(path, allow_pickle=False) as stored:
                metadata = json.loads(str(stored["metadata"]))
                arrays = {name: stored[name] for name in merge.Forest._fields}
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise NeuropilError(f"{path}: not a neuropil merge classifier ({reason})") from None
        if metadata.get("format") != FORMAT or metadata.get("version") != FORMAT_VERSION:
            raise NeuropilError(f"{path}: not a {FORMAT} version {FORMAT_VERSION} file")
        n_bins, names = metadata.get("n_bins"), metadata.get("feature_names")
        if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
            raise NeuropilError(f"{path}: n_bins is {n_bins!r}, not a positive count")
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise NeuropilError(f"{path}: feature_names is {names!r}, not a list of names")
        image = bool(metadata.get("image", False))
        names = tuple(names)
        if names != tuple(feature_names(n_bins, image)):
            raise NeuropilError(
                f"{path}: the classifier was trained with other features than this version of neuropil computes"
            )
        forest = merge.Forest(
            feature=arrays["feature"].astype(np.int64),
            threshold=arrays["threshold"].astype(np.float64),
            left=arrays["left"].astype(np.int64),
            right=arrays["right"].astype(np.int64),
            probability=arrays["probability"].astype(np.float64),
            roots=arrays["roots"].astype(np.int64),
        )
        _check_forest(forest, len(names), path)
        threshold = metadata.get("merge_threshold")
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
            raise NeuropilError(f"{path}: stored merge threshold {threshold!r} is not a number in [0, 1]")
        return cls(forest, n_bins, names, image, None if threshold is None else float(threshold))

    def probability(self, features: NDArray) -> NDArray[np.float64]:
        """(n,) P(same object) for an (n, n_features) array of features."""
        features = np.asarray(features, dtype=np.float64)
        packed = self.forest.packed()
        return np.array([merge.forest_probability(*packed, row) for row in features])

    def scoring(self) -> merge.Scoring:
        """The merge loop's scoring by this classifier."""
        return merge.Scoring("learned", n_bins=self.n_bins, forest=self.forest)


def _check_forest(forest: merge.Forest, n_features: int, path) -> None:
    n = forest.feature.size
    sizes = {forest.threshold.size, forest.left.size, forest.right.size, forest.probability.size}
    internal = forest.feature >= 0
    index = np.arange(n)
    ok = (
        sizes == {n}
        and forest.roots.size > 0
        and ((forest.roots >= 0) & (forest.roots < n)).all()
        and (forest.feature < n_features).all()
        # children come after their parent, so every walk ends at a leaf
        and (forest.left[internal] > index[internal]).all()
        and (forest.right[internal] > index[internal]).all()
        and (forest.left[internal] < n).all()
        and (forest.right[internal] < n).all()
        and np.isfinite(forest.probability).all()
    )
    if not ok:
        raise NeuropilError(f"{path}: the stored decision trees are inconsistent")


def forest_from_sklearn(classifier) -> merge.Forest:
    """Flat arrays of a fitted scikit-learn forest (or single tree) for the merge loop."""
    estimators = getattr(classifier, "estimators_", [classifier])
    classes = list(classifier.classes_)
    positive = classes.index(True) if True in classes else None
    parts: dict[str, list[NDArray]] = {name: [] for name in merge.Forest._fields}
    offset = 0
    for estimator in estimators:
        tree = estimator.tree_
        values = tree.value[:, 0, :]
        totals = values.sum(axis=1)
        if positive is None:
            probability = np.zeros(tree.node_count)
        else:
            probability = values[:, positive] / np.maximum(totals, 1e-300)
        leaf = tree.children_left < 0
        parts["feature"].append(np.where(leaf, -1, tree.feature).astype(np.int64))
        parts["threshold"].append(tree.threshold.astype(np.float64))
        parts["left"].append(np.where(leaf, -1, tree.children_left + offset).astype(np.int64))
        parts["right"].append(np.where(leaf, -1, tree.children_right + offset).astype(np.int64))
        parts["probability"].append(probability.astype(np.float64))
        parts["roots"].append(np.array([offset], dtype=np.int64))
        offset += tree.node_count
    return merge.Forest(**{name: np.concatenate(arrays) for name, arrays in parts.items()})


def voxel_boundaries(affinities_or_boundaries: NDArray, values: NDArray[np.float32] | None) -> NDArray[np.float32]:
    """Boundary value of each voxel: the boundary map itself, or 1 - mean affinity.

    ``values`` are the affinities as :func:`neuropil.segment.affinities.as_affinities` gives them
    (not read for a boundary map; computed here when None).
    """
    array = np.asarray(affinities_or_boundaries)
    if array.ndim == 3:
        return array.astype(np.float32, copy=False)
    return 1 - mean_affinity(as_affinities(array) if values is None else values)


def statistics(
    contacts: graph.Contacts, voxel_boundary: NDArray[np.float32], n_bins: int, image: NDArray | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Additive edge and node statistics of the learned features.

    Parameters
    ----------
    contacts : graph.Contacts
    voxel_boundary : (z, y, x) ndarray of float32
        Boundary value of each voxel (:func:`voxel_boundaries`).
    n_bins : int
        Bins of the boundary-value histogram.
    image : (z, y, x) ndarray, optional
        The image channel (see :func:`image_values`), same shape as the fragments.

    Returns
    -------
    edge_stats : (n_edges, Layout.edge_columns) ndarray of float64
    node_stats : (n_nodes, Layout.node_columns) ndarray of float64
        The columns of :mod:`neuropil.segment.features` (its :class:`~neuropil.segment.features.Layout`
        for ``n_bins`` and whether an image is given).
    """
    node3 = contacts.node.reshape((1,) * (3 - contacts.node.ndim) + contacts.node.shape)
    across = None
    if image is not None:
        image = image_values(image, contacts.node.shape)
        # the same walk over voxel pairs as the contacts', so the values line up with them
        across = graph.contact_values(contacts, affinities_from_boundaries(image, combine="mean"))
    edge_stats = edge_statistics(contacts.edge, contacts.value, contacts.n_edges, n_bins, across)
    node_stats = node_statistics(node3, voxel_boundary, contacts.n_nodes, image=image)
    contact = edge_stats[:, features.CONTACTS]
    surface = np.bincount(contacts.u, weights=contact, minlength=contacts.n_nodes)
    surface += np.bincount(contacts.v, weights=contact, minlength=contacts.n_nodes)
    return edge_stats, with_surface(node_stats, surface)


def edge_statistics(
    edge: NDArray[np.int64], value: NDArray[np.float32], n_edges: int, n_bins: int, across: NDArray | None = None
) -> NDArray[np.float64]:
    """The edge statistics of :func:`statistics` from per-contact values.

    ``edge`` is each contact's edge index, ``value`` its affinity and ``across`` (with
    an image channel) the image pair value ``1 - mean`` of its two voxels' images, as
    :func:`neuropil.segment.affinities.affinities_from_boundaries` gives it.
    """
    boundary = 1.0 - value.astype(np.float64)
    level = np.clip((boundary * n_bins).astype(np.int64), 0, n_bins - 1)
    histogram = np.bincount(edge * n_bins + level, minlength=n_edges * n_bins)
    columns = features.layout(n_bins, across is not None)
    stats = np.empty((n_edges, columns.edge_columns), dtype=np.float64)
    stats[:, features.CONTACTS] = np.bincount(edge, minlength=n_edges)
    stats[:, features.CONTACT_SUM] = np.bincount(edge, weights=boundary, minlength=n_edges)
    stats[:, features.CONTACT_SQUARES] = np.bincount(edge, weights=boundary**2, minlength=n_edges)
    stats[:, features.CONTACT_HISTOGRAM : features.CONTACT_HISTOGRAM + n_bins] = histogram.reshape(n_edges, n_bins)
    if across is not None:
        image = 1.0 - np.asarray(across).astype(np.float64)
        stats[:, columns.contact_image_sum] = np.bincount(edge, weights=image, minlength=n_edges)
        stats[:, columns.contact_image_squares] = np.bincount(edge, weights=image**2, minlength=n_edges)
    return stats


def node_statistics(
    node: NDArray[np.int64],
    voxel_boundary: NDArray[np.float32],
    n_nodes: int,
    *,
    image: NDArray[np.float32] | None = None,
    origin: tuple[int, int, int] = (0, 0, 0),
) -> NDArray[np.float64]:
    """The node statistics of :func:`statistics` without the surface column (:func:`with_surface` adds it).

    ``node`` is a (z, y, x) array of node indices (-1: no fragment) whose voxel 0 lies
    at ``origin`` in the volume (coordinate moments are of volume coordinates);
    ``image`` is already scaled (:func:`image_values`).
    """
    value3 = np.ascontiguousarray(voxel_boundary, dtype=np.float32).reshape(node.shape)
    stats = _node_statistics(node, value3, n_nodes, np.asarray(origin, dtype=np.int64))
    if image is None:
        return stats
    flat = node.ravel()
    inside = flat >= 0
    voxel_image = np.asarray(image).ravel()[inside].astype(np.float64)
    node_image = np.stack(
        [
            np.bincount(flat[inside], weights=voxel_image, minlength=n_nodes),
            np.bincount(flat[inside], weights=voxel_image**2, minlength=n_nodes),
        ],
        axis=1,
    )
    # histogram of the image away from boundaries (the cytoplasm) in each region
    bins = features.IMAGE_BINS
    interior = value3.ravel()[inside] < features.INTERIOR
    level = np.clip((voxel_image[interior] * bins).astype(np.int64), 0, bins - 1)
    histogram = np.bincount(flat[inside][interior] * bins + level, minlength=n_nodes * bins)
    # the columns from features.IMAGE_SUM on, less the surface column before them
    return np.concatenate([stats, node_image, histogram.reshape(n_nodes, bins).astype(np.float64)], axis=1)


def with_surface(node_stats: NDArray[np.float64], surface: NDArray) -> NDArray[np.float64]:
    """Node statistics with the surface (contact area with all other regions) in its column, :data:`features.SURFACE`."""
    column = features.SURFACE
    return np.concatenate([node_stats[:, :column], surface[:, None], node_stats[:, column:]], axis=1)


def image_values(image: NDArray, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """The image channel as float32 in about [0, 1]: integer images are divided by their type's maximum.

    Parameters
    ----------
    image : (z, y, x) ndarray of int or float
        Raw EM intensities (uint8, uint16) or an already scaled float image.
    shape : tuple of int
        Shape of the fragments, which the image must have.
    """
    image = np.asarray(image)
    if image.shape != tuple(shape):
        raise NeuropilError(f"image shape {image.shape} does not match fragments shape {tuple(shape)}")
    if np.issubdtype(image.dtype, np.integer):
        return (image / np.float32(np.iinfo(image.dtype).max)).astype(np.float32)
    if not np.issubdtype(image.dtype, np.floating):
        raise NeuropilError(f"image must be integer or float intensities, not {image.dtype}")
    return image.astype(np.float32, copy=False)


def merge_cost(features: NDArray, n_bins: int) -> NDArray[np.float64]:
    """(n,) VOI change (unnormalised) ``(a+b) log(a+b) - a log a - b log b`` of merging each example's regions.

    ``a`` and ``b`` are the region sizes in voxels, read from the ``smaller_log_size``
    and ``larger_log_size`` columns of the (n, n_features) features.
    """
    names = feature_names(n_bins)
    a = np.exp(features[:, names.index("smaller_log_size")])
    b = np.exp(features[:, names.index("larger_log_size")])
    return (a + b) * np.log(a + b) - a * np.log(a) - b * np.log(b)


@numba.njit(cache=True)
def _node_statistics(node, value, n_nodes, origin):
    """(n_nodes, features.VOXEL_COLUMNS) size, value sum and square sum, coordinate sums and second moments.

    Coordinates are those of the volume: voxel ``(i, j, k)`` of ``node`` is at ``origin + (i, j, k)``.
    """
    stats = np.zeros((n_nodes, features.VOXEL_COLUMNS), dtype=np.float64)
    depth, height, width = node.shape
    for i in range(depth):
        z = i + origin[0]
        for j in range(height):
            y = j + origin[1]
            for k in range(width):
                x = k + origin[2]
                n = node[i, j, k]
                if n < 0:
                    continue
                b = np.float64(value[i, j, k])
                coordinates = (z, y, x)
                row = stats[n]
                row[features.SIZE] += 1.0
                row[features.BOUNDARY_SUM] += b
                row[features.BOUNDARY_SQUARES] += b * b
                for axis in range(3):
                    row[features.COORDINATES + axis] += coordinates[axis]
                    row[features.SQUARES + axis] += coordinates[axis] * coordinates[axis]
                for pair in range(len(features.PRODUCT_AXES)):
                    first, second = features.PRODUCT_AXES[pair]
                    row[features.PRODUCTS + pair] += coordinates[first] * coordinates[second]
    return stats


def node_labels(contacts: graph.Contacts, ground_truth: NDArray) -> NDArray[np.int64]:
    """(n_nodes,) index of each node's majority ground-truth object (ignoring 0); 0 if none."""
    node = contacts.node.ravel()
    truth = np.asarray(ground_truth).ravel()
    scored = (node >= 0) & (truth != 0)
    objects, truth_index = np.unique(truth[scored], return_inverse=True)
    pairs, counts = np.unique(node[scored] * (objects.size + 1) + truth_index + 1, return_counts=True)
    pair_node, pair_object = pairs // (objects.size + 1), pairs % (objects.size + 1)
    order = np.lexsort((counts, pair_node))  # per node, the largest count last
    labels = np.zeros(contacts.n_nodes, dtype=np.int64)
    labels[pair_node[order]] = pair_object[order]
    return labels


def train(
    affinities: NDArray,
    fragments: NDArray,
    ground_truth: NDArray,
    *,
    image: NDArray | None = None,
    epochs: int = 5,
    n_bins: int = DEFAULT_BINS,
    n_estimators: int = 100,
    min_samples_leaf: int = 5,
    cost_power: float = 0.5,
    random_state: int = 0,
) -> MergeClassifier:
    """Train a merge classifier by agglomerating against ground truth (gala's scheme).

    The examples are every edge of the fragments' graph (gala's ``learn_flat``), then
    the edges each agglomeration pass reaches, weighted by ``merge_cost ** cost_power``
    (see the module docstring). The classifier is an extremely randomized forest
    (Geurts et al. 2006, doi:10.1007/s10994-006-6226-1): on fib-gala it generalised
    better than a random forest and fits about twice as fast. The defaults were
    chosen on the fib-gala train volume and checked on its test volume (docs/benchmarks.md).

    Parameters
    ----------
    affinities : (c, z, y, x) ndarray of float, or (z, y, x) ndarray of float
        Nearest-neighbour affinities (1 = same object), or a boundary map (1 = boundary).
    fragments : (z, y, x) ndarray of int
        Fragment ids, 0 = no fragment.
    ground_truth : (z, y, x) ndarray of int
        Object ids; 0 = unknown (not used).
    image : (z, y, x) ndarray, optional
        Raw image as an optional second channel (see the module docstring); a
        classifier trained with it needs the image wherever it is used.
    epochs : int
        Agglomeration passes: the first follows the mean boundary value, each later
        one the classifier trained on the examples of all passes before it.
    n_bins : int
        Bins of the boundary-value histogram feature.
    n_estimators : int
        Trees of the final forest; the forests that steer the passes have a tenth.
    min_samples_leaf : int
        Fewest examples in a leaf; larger leaves give less extreme probabilities.
    cost_power : float
        Examples are weighted by their merge cost to this power (0: all alike).
    random_state : int
        Seed of the forest.

    Returns
    -------
    MergeClassifier
    """
    from sklearn.ensemble import ExtraTreesClassifier

    values = as_affinities(affinities)
    fragments = graph.check_fragments(fragments, values.shape[1:])
    ground_truth = np.asarray(ground_truth)
    if ground_truth.shape != fragments.shape:
        raise NeuropilError(f"ground truth shape {ground_truth.shape} does not match fragments shape {fragments.shape}")
    if epochs < 1:
        raise NeuropilError(f"epochs must be >= 1, not {epochs}")
    if n_estimators < 1:
        raise NeuropilError(f"the forest needs at least one tree, not {n_estimators}")
    contacts = graph.contacts(values, fragments)
    edge_stats, node_stats = statistics(contacts, voxel_boundaries(affinities, values), n_bins, image)
    labels = node_labels(contacts, ground_truth)
    names = tuple(feature_names(n_bins, image is not None))
    known = (labels[contacts.u] > 0) & (labels[contacts.v] > 0)
    flat = features.all_edge_features(contacts.u, contacts.v, edge_stats, node_stats, n_bins=n_bins)
    all_examples = [flat[known]]
    all_labels = [(labels[contacts.u] == labels[contacts.v])[known]]
    policy = merge.Scoring("boundary_mean", n_bins=n_bins)
    for epoch in range(epochs):
        examples, example_labels = merge.learning_examples(
            contacts, edge_stats, scoring=policy, node_stats=node_stats, node_label=labels
        )
        all_examples.append(examples)
        all_labels.append(example_labels)
        inputs = np.concatenate(all_examples)
        targets = np.concatenate(all_labels)
        if targets.size == 0:
            raise NeuropilError(
                "no training examples: no two touching fragments both overlap labelled ground truth "
                "(are the fragments and the ground truth of the same volume, with labels other than 0?)"
            )
        weights = merge_cost(inputs, n_bins) ** cost_power
        weights /= max(weights.mean(), 1e-300)
        logger.info("epoch %d: %d examples (%d merges)", epoch, targets.size, int(targets.sum()))
        last = epoch == epochs - 1
        # the forests of earlier epochs only steer the next pass: fewer trees do
        # (scikit-learn's per-tree overhead dominates the fit on graphs this small)
        classifier = ExtraTreesClassifier(
            n_estimators=n_estimators if last else max(1, n_estimators // POLICY_TREES_DIVISOR),
            min_samples_leaf=min_samples_leaf,
            n_jobs=1,
            random_state=random_state,
        ).fit(inputs, targets, sample_weight=weights)
        forest = forest_from_sklearn(classifier)
        policy = merge.Scoring("learned", n_bins=n_bins, forest=forest)
    return MergeClassifier(forest, n_bins, names, image is not None)


def check_model(model, image: bool) -> None:
    """A one-line error unless ``model`` is a classifier whose image channel matches whether an image is given."""
    if model is None:
        raise NeuropilError("the learned method needs a trained model (model=...)")
    if model.image and not image:
        raise NeuropilError("the classifier was trained with the image channel: give the image too")
    if image and not model.image:
        raise NeuropilError("an image was given, but the classifier was trained without the image channel")
