"""Segmentation metrics: variation of information (split, merge) and adapted Rand error.

Both are computed from one sparse contingency table of (segmentation, ground truth)
ids, so that label arrays of any size and id range cost one pass: ids are made dense by
hashing (``fastremap``), not sorting, and (segment, object) pairs are counted as one
int64 key each. :class:`GroundTruth` prepares a ground truth once for scoring several
segmentations (a threshold sweep); :func:`evaluate_many` scores a sequence of them.

Voxels whose ground truth is 0, or outside a mask, are not scored. This is also how
partial labels (e.g. dendrites only) are scored: give unlabelled voxels 0 (or a mask).
A segment then counts as a merge only for the labelled objects it joins, however far it
reaches into unlabelled tissue. :func:`object_errors` names the objects split and the
segments merging most, with their share of VOI split and merge.

References
----------
Meila, M. (2007). Comparing clusterings - an information based distance.
J. Multivariate Anal. 98(5), 873-895. doi:10.1016/j.jmva.2006.11.013
Arganda-Carreras, I. et al. (2015). Crowdsourcing the creation of image
segmentation algorithms for connectomics. Front. Neuroanat. 9:142.
doi:10.3389/fnana.2015.00142
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import fastremap
import numpy as np
import scipy.sparse
from numpy.typing import NDArray

from neuropil.errors import NeuropilError


@dataclass(frozen=True)
class Scores:
    """Segmentation errors against ground truth; lower is better for every field."""

    voi_split: float
    """H(segmentation | ground truth) in bits: how much objects are split."""
    voi_merge: float
    """H(ground truth | segmentation) in bits: how much objects are merged."""
    arand: float
    """Adapted Rand error, 1 - F-score of Rand precision and recall."""
    arand_precision: float
    """Fraction of same-segment voxel pairs that are the same object (merges lower it)."""
    arand_recall: float
    """Fraction of same-object voxel pairs that are in the same segment (splits lower it)."""
    n_voxels: int
    """Voxels scored (ground truth != 0 and inside the mask)."""

    @property
    def voi(self) -> float:
        """Variation of information in bits, split + merge."""
        return self.voi_split + self.voi_merge

    @property
    def cremi_score(self) -> float:
        """CREMI's combined score, sqrt(VOI * ARAND)."""
        return float(np.sqrt(self.voi * self.arand))

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "voi": self.voi, "cremi_score": self.cremi_score}


def contingency_table(
    segmentation: NDArray, ground_truth: NDArray, *, mask: NDArray | None = None, ignore_zero: bool = True
) -> scipy.sparse.csr_matrix:
    """Voxel counts of each (segmentation id, ground-truth id) pair.

    Parameters
    ----------
    segmentation, ground_truth : (z, y, x) ndarray of int
        Label volumes of the same shape.
    mask : (z, y, x) ndarray of bool, optional
        Only voxels where the mask is true are counted.
    ignore_zero : bool
        Leave out voxels whose ground truth is 0 (boundary, extracellular or unknown).

    Returns
    -------
    table : (n_segments, n_objects) csr_matrix of float64
        Rows are compact segmentation ids, columns compact ground-truth ids.
    """
    return _labelled_table(segmentation, ground_truth, mask=mask, ignore_zero=ignore_zero)[0]


def _labelled_table(
    segmentation, ground_truth, *, mask, ignore_zero
) -> tuple[scipy.sparse.csr_matrix, NDArray, NDArray]:
    """The contingency table with the segmentation ids of its rows and the ground-truth ids of its columns."""
    truth, segmentation = _prepared(segmentation, ground_truth, mask=mask, ignore_zero=ignore_zero)
    return truth.labelled_table(segmentation)


def _prepared(segmentation, ground_truth, *, mask, ignore_zero) -> tuple[GroundTruth, NDArray]:
    """The ground truth prepared for one segmentation, checked in the order the errors were always raised."""
    segmentation = np.asarray(segmentation)
    ground_truth = np.asarray(ground_truth)
    if segmentation.shape != ground_truth.shape:
        raise NeuropilError(
            f"segmentation shape {segmentation.shape} does not match ground truth shape {ground_truth.shape}"
        )
    _require_integers("segmentation", segmentation)
    return GroundTruth(ground_truth, mask=mask, ignore_zero=ignore_zero), segmentation


def _require_integers(name: str, array: NDArray) -> None:
    if not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
        raise NeuropilError(f"{name} must hold integer ids, got dtype {array.dtype}")


def _dense_ids(values: NDArray) -> tuple[NDArray, NDArray]:
    """The sorted distinct ids of 1-d ``values`` and each value's index among them, without sorting the values.

    ``values`` must be a contiguous array of this module's own: it may be overwritten. The
    result equals ``np.unique(values, return_inverse=True)`` with int32 (or int64) indices.
    """
    dtype = values.dtype
    if dtype.itemsize <= 2:  # bool, 8 and 16 bits: a lookup table over every possible id
        low = 0 if dtype == np.bool_ else int(np.iinfo(dtype).min)
        shifted = values.astype(np.int32)
        shifted -= low
        present = np.bincount(shifted) > 0
        lookup = np.cumsum(present, dtype=np.int32) - 1
        return (np.flatnonzero(present) + low).astype(dtype), lookup[shifted]
    # fastremap hashes unsigned ids (its signed output can overflow): signed ids are hashed by their bits
    bits = values.view(np.dtype(f"u{dtype.itemsize}"))
    dense, remap = fastremap.renumber(bits, start=0, preserve_zero=False, in_place=True)
    ids = np.fromiter(remap.keys(), dtype=bits.dtype, count=len(remap)).view(dtype)
    first_seen = np.fromiter(remap.values(), dtype=np.int64, count=len(remap))
    order = np.argsort(ids)
    index_type = _index_type(ids.size)
    rank = np.empty(ids.size, dtype=index_type)
    rank[first_seen[order]] = np.arange(ids.size, dtype=index_type)
    return ids[order], rank[dense]


def _index_type(n: int) -> type[np.signedinteger]:
    return np.int32 if n <= np.iinfo(np.int32).max else np.int64


def _pair_counts(keys: NDArray[np.int64], n_keys: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The distinct values of ``keys`` (in [0, n_keys)), ascending, and how often each occurs; ``keys`` is overwritten."""
    if n_keys <= max(keys.size, 1 << 16):  # a dense count is no larger than the keys themselves
        counts = np.bincount(keys, minlength=n_keys)
        distinct = np.flatnonzero(counts)
        return distinct, counts[distinct].astype(np.float64)
    keys.sort()
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return keys[starts], np.diff(np.append(starts, keys.size)).astype(np.float64)


class GroundTruth:
    """Ground truth prepared once for scoring any number of segmentations against it.

    Its scored voxels (ground truth not 0 unless ``ignore_zero`` is False, inside ``mask``) and
    their dense object indices are found once; each segmentation then costs one relabelling of
    its scored voxels and one count of (segment, object) pairs. Scores are those of
    :func:`evaluate` and :func:`object_errors` on the same arrays, to the last bit.

    Parameters
    ----------
    ground_truth : (z, y, x) ndarray of int
        Label volume (any number of axes); not modified.
    mask : (z, y, x) ndarray of bool, optional
        Only voxels where the mask is true are scored.
    ignore_zero : bool
        Leave out voxels whose ground truth is 0.

    Raises
    ------
    NeuropilError
        When the labels are not integers or the mask's shape differs.

    Examples
    --------
    >>> truth = GroundTruth(labels)
    >>> [truth.evaluate(segmentation).voi for segmentation in segmentations]  # doctest: +SKIP
    """

    def __init__(self, ground_truth: NDArray, *, mask: NDArray | None = None, ignore_zero: bool = True):
        ground_truth = np.asarray(ground_truth)
        _require_integers("ground truth", ground_truth)
        self.shape: tuple[int, ...] = ground_truth.shape
        keep = None if mask is None else np.asarray(mask, dtype=bool)
        if keep is not None and keep.shape != self.shape:
            raise NeuropilError(f"mask shape {keep.shape} does not match ground truth shape {self.shape}")
        if ignore_zero:
            keep = ground_truth != 0 if keep is None else keep & (ground_truth != 0)
        self._keep = keep
        self.ids, self._index = _dense_ids(self._scored(ground_truth))
        """The sorted ground-truth ids of the scored voxels: the columns of every table."""

    @property
    def n_voxels(self) -> int:
        """Voxels scored."""
        return int(self._index.size)

    def _scored(self, labels: NDArray) -> NDArray:
        """The scored voxels of ``labels`` as a new contiguous 1-d array."""
        return labels[self._keep] if self._keep is not None else labels.ravel().copy()

    def labelled_table(self, segmentation: NDArray) -> tuple[scipy.sparse.csr_matrix, NDArray, NDArray]:
        """The contingency table of ``segmentation`` with the segment ids of its rows and the object ids of its columns.

        Rows are the sorted segmentation ids of the scored voxels, columns :attr:`ids`; the
        table is that of :func:`contingency_table`.
        """
        segmentation = np.asarray(segmentation)
        if segmentation.shape != self.shape:
            raise NeuropilError(
                f"segmentation shape {segmentation.shape} does not match ground truth shape {self.shape}"
            )
        _require_integers("segmentation", segmentation)
        seg_ids, seg_index = _dense_ids(self._scored(segmentation))
        n_objects = self.ids.size
        keys = seg_index.astype(np.int64)
        keys *= n_objects
        keys += self._index
        pairs, counts = _pair_counts(keys, seg_ids.size * n_objects)
        rows, columns = np.divmod(pairs, max(n_objects, 1))
        index_type = _index_type(max(counts.size, seg_ids.size, n_objects))
        indptr = np.zeros(seg_ids.size + 1, dtype=index_type)
        np.cumsum(np.bincount(rows, minlength=seg_ids.size), out=indptr[1:])
        table = scipy.sparse.csr_matrix((counts, columns.astype(index_type), indptr), shape=(seg_ids.size, n_objects))
        return table, seg_ids, self.ids

    def table(self, segmentation: NDArray) -> scipy.sparse.csr_matrix:
        """The contingency table of ``segmentation`` (see :func:`contingency_table`)."""
        return self.labelled_table(segmentation)[0]

    def _scored_labelled_table(self, segmentation: NDArray) -> tuple[scipy.sparse.csr_matrix, NDArray, NDArray]:
        """The labelled table, refusing one with no voxels: an empty score would read as perfect."""
        labelled = self.labelled_table(segmentation)
        if self.n_voxels == 0:
            raise NeuropilError(
                f"no voxels to score in a volume of shape {self.shape}: it is empty, "
                "its ground truth is all 0 or the mask excludes every labelled voxel"
            )
        return labelled

    def evaluate(self, segmentation: NDArray) -> Scores:
        """All metrics of ``segmentation`` (see :func:`evaluate`)."""
        return _scores_from_table(self._scored_labelled_table(segmentation)[0])

    def object_errors(self, segmentation: NDArray, *, top: int = 10) -> ObjectErrors:
        """The objects split and the segments merging most in ``segmentation`` (see :func:`object_errors`)."""
        _require_top(top)
        return _errors_from_table(*self._scored_labelled_table(segmentation), top=top)


def evaluate_many(
    segmentations: Iterable[NDArray],
    ground_truth: NDArray,
    *,
    mask: NDArray | None = None,
    ignore_zero: bool = True,
) -> list[Scores]:
    """:func:`evaluate` of each segmentation against one ground truth, prepared once (:class:`GroundTruth`).

    ``segmentations`` may be any iterable (e.g. a generator reading one volume at a time).
    """
    truth = GroundTruth(ground_truth, mask=mask, ignore_zero=ignore_zero)
    return [truth.evaluate(segmentation) for segmentation in segmentations]


def _scored_table(segmentation, ground_truth, *, mask, ignore_zero) -> scipy.sparse.csr_matrix:
    """The contingency table, refusing one with no voxels: an empty score would read as perfect."""
    return _scored_labelled_table(segmentation, ground_truth, mask=mask, ignore_zero=ignore_zero)[0]


def _scored_labelled_table(
    segmentation, ground_truth, *, mask, ignore_zero
) -> tuple[scipy.sparse.csr_matrix, NDArray, NDArray]:
    truth, segmentation = _prepared(segmentation, ground_truth, mask=mask, ignore_zero=ignore_zero)
    return truth._scored_labelled_table(segmentation)


def _entropy_terms(counts: NDArray) -> float:
    counts = counts[counts > 0]
    return float(np.sum(counts * np.log2(counts)))


def variation_of_information(
    segmentation: NDArray, ground_truth: NDArray, *, mask: NDArray | None = None, ignore_zero: bool = True
) -> tuple[float, float]:
    """Variation of information, split into its two conditional entropies.

    Parameters
    ----------
    segmentation, ground_truth : (z, y, x) ndarray of int
        Label volumes of the same shape (any number of axes).
    mask : (z, y, x) ndarray of bool, optional
        Only voxels where the mask is true are scored.
    ignore_zero : bool
        Leave out voxels whose ground truth is 0.

    Returns
    -------
    voi_split : float
        H(segmentation | ground truth) in bits (over-segmentation).
    voi_merge : float
        H(ground truth | segmentation) in bits (under-segmentation).
    """
    table = _scored_table(segmentation, ground_truth, mask=mask, ignore_zero=ignore_zero)
    return _voi_from_table(table)


def _voi_from_table(table: scipy.sparse.csr_matrix) -> tuple[float, float]:
    n = table.sum()
    if n == 0:
        return 0.0, 0.0
    joint = _entropy_terms(table.data)
    rows = _entropy_terms(np.asarray(table.sum(axis=1)).ravel())
    cols = _entropy_terms(np.asarray(table.sum(axis=0)).ravel())
    # H(S|G) = H(S,G) - H(G) = (sum_g c_g log c_g - sum_sg c_sg log c_sg) / n
    voi_split = (cols - joint) / n
    voi_merge = (rows - joint) / n
    return max(float(voi_split), 0.0), max(float(voi_merge), 0.0)


def adapted_rand_error(
    segmentation: NDArray, ground_truth: NDArray, *, mask: NDArray | None = None, ignore_zero: bool = True
) -> tuple[float, float, float]:
    """Adapted Rand error as in SNEMI3D and scikit-image (self-pairs excluded).

    Parameters are those of :func:`variation_of_information`.

    Returns
    -------
    error, precision, recall : float
        Error is 1 - F-score of precision and recall, all in [0, 1].
    """
    table = _scored_table(segmentation, ground_truth, mask=mask, ignore_zero=ignore_zero)
    return _arand_from_table(table)


def _arand_from_table(table: scipy.sparse.csr_matrix) -> tuple[float, float, float]:
    n = table.sum()
    if n == 0:
        return 0.0, 1.0, 1.0
    sum_joint = float(np.sum(table.data**2)) - n
    sum_seg = float(np.sum(np.asarray(table.sum(axis=1)).ravel() ** 2)) - n
    sum_gt = float(np.sum(np.asarray(table.sum(axis=0)).ravel() ** 2)) - n
    precision = sum_joint / sum_seg if sum_seg > 0 else 1.0
    recall = sum_joint / sum_gt if sum_gt > 0 else 1.0
    if precision + recall == 0:
        return 1.0, float(precision), float(recall)
    f_score = 2.0 * precision * recall / (precision + recall)
    return float(1.0 - f_score), float(precision), float(recall)


def evaluate(
    segmentation: NDArray, ground_truth: NDArray, *, mask: NDArray | None = None, ignore_zero: bool = True
) -> Scores:
    """All metrics from one contingency table.

    Voxels where the ground truth is 0 are left out (``ignore_zero``), and so are
    voxels outside ``mask``: this is how partial labels (e.g. dendrites only) are scored.
    Give unlabelled voxels 0 (or leave them out of the mask): only voxels of labelled
    objects are then counted, and a segment is a merge only for the labelled objects it
    joins; how much unlabelled tissue it also covers changes no score. No separate
    partial-label option is needed. :func:`object_errors` names the worst objects.

    Parameters
    ----------
    segmentation, ground_truth : (z, y, x) ndarray of int
        Label volumes of the same shape; neither is modified.
    mask : (z, y, x) ndarray of bool, optional
        Only voxels where the mask is true are scored.
    ignore_zero : bool
        Leave out voxels whose ground truth is 0.

    Returns
    -------
    Scores

    Raises
    ------
    NeuropilError
        When the shapes differ, the labels are not integers, or no voxel is left to score.
    """
    return _scores_from_table(_scored_table(segmentation, ground_truth, mask=mask, ignore_zero=ignore_zero))


def _scores_from_table(table: scipy.sparse.csr_matrix) -> Scores:
    voi_split, voi_merge = _voi_from_table(table)
    arand, precision, recall = _arand_from_table(table)
    return Scores(
        voi_split=voi_split,
        voi_merge=voi_merge,
        arand=arand,
        arand_precision=precision,
        arand_recall=recall,
        n_voxels=int(table.sum()),
    )


JOINED_IDS_SHOWN = 5
"""Ground-truth ids a :class:`SegmentMerge` lists (the largest of those it joins)."""


@dataclass(frozen=True)
class ObjectSplit:
    """A ground-truth object cut into more than one segment."""

    gt_id: int
    """Its ground-truth id."""
    size: int
    """Its scored voxels."""
    n_segments: int
    """Segments it is cut into."""
    bits: float
    """Its share of VOI split in bits; the shares of all objects sum to ``voi_split``."""


@dataclass(frozen=True)
class SegmentMerge:
    """A segment joining more than one ground-truth object."""

    segment_id: int
    """Its segmentation id."""
    size: int
    """Its scored voxels (those of labelled objects only)."""
    gt_ids: tuple[int, ...]
    """The ground-truth objects it joins, most overlapped first (at most :data:`JOINED_IDS_SHOWN`)."""
    n_objects: int
    """Ground-truth objects it joins, all of them."""
    bits: float
    """Its share of VOI merge in bits; the shares of all segments sum to ``voi_merge``."""


@dataclass(frozen=True)
class ObjectErrors:
    """The worst split objects and merging segments, worst (most bits) first."""

    splits: tuple[ObjectSplit, ...]
    merges: tuple[SegmentMerge, ...]
    n_split: int
    """Ground-truth objects in more than one segment, listed or not."""
    n_merging: int
    """Segments joining more than one ground-truth object, listed or not."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "splits": [asdict(split) for split in self.splits],
            "merges": [{**asdict(merge), "gt_ids": list(merge.gt_ids)} for merge in self.merges],
            "n_split": self.n_split,
            "n_merging": self.n_merging,
        }


def object_errors(
    segmentation: NDArray, ground_truth: NDArray, *, mask: NDArray | None = None, top: int = 10
) -> ObjectErrors:
    """The ground-truth objects split and the segments merging most, with their shares of VOI.

    Scores the voxels :func:`evaluate` scores (ground truth not 0, inside ``mask``) from the
    same contingency table n_sg. Object g's share of VOI split is
    sum_s n_sg / n * log2(n_g / n_sg) and segment s's share of VOI merge is
    sum_g n_sg / n * log2(n_s / n_sg), so the shares sum to ``voi_split`` and ``voi_merge``.
    With partial labels (unlabelled voxels 0) a segment's size and merges count labelled
    voxels only. Objects in one segment and segments of one object have no share and are
    left out.

    Parameters
    ----------
    segmentation, ground_truth : (z, y, x) ndarray of int
        Label volumes of the same shape; neither is modified.
    mask : (z, y, x) ndarray of bool, optional
        Only voxels where the mask is true are scored.
    top : int
        Most splits and most merges listed.

    Returns
    -------
    ObjectErrors

    Raises
    ------
    NeuropilError
        When ``top`` is below 1, the shapes differ, the labels are not integers, or no voxel is left to score.
    """
    _require_top(top)
    labelled = _scored_labelled_table(segmentation, ground_truth, mask=mask, ignore_zero=True)
    return _errors_from_table(*labelled, top=top)


def _require_top(top: int) -> None:
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
        raise NeuropilError(f"top must be a whole number >= 1, got {top!r}")


def _errors_from_table(table: scipy.sparse.csr_matrix, seg_ids: NDArray, gt_ids: NDArray, *, top: int) -> ObjectErrors:
    n = float(table.sum())
    cells = table.tocoo()
    rows, cols, counts = cells.row, cells.col, cells.data
    seg_sizes = np.bincount(rows, weights=counts, minlength=seg_ids.size)
    gt_sizes = np.bincount(cols, weights=counts, minlength=gt_ids.size)
    split_bits = np.bincount(cols, weights=counts * np.log2(gt_sizes[cols] / counts) / n, minlength=gt_ids.size)
    merge_bits = np.bincount(rows, weights=counts * np.log2(seg_sizes[rows] / counts) / n, minlength=seg_ids.size)
    n_segments = np.bincount(cols, minlength=gt_ids.size)
    n_objects = np.bincount(rows, minlength=seg_ids.size)

    splits = [
        ObjectSplit(
            gt_id=int(gt_ids[g]), size=int(gt_sizes[g]), n_segments=int(n_segments[g]), bits=float(split_bits[g])
        )
        for g in _worst(np.flatnonzero(n_segments > 1), split_bits, gt_sizes, top)
    ]
    merges = []
    for s in _worst(np.flatnonzero(n_objects > 1), merge_bits, seg_sizes, top):
        start, stop = table.indptr[s], table.indptr[s + 1]
        objects, overlaps = table.indices[start:stop], table.data[start:stop]
        joined = objects[np.lexsort((objects, -overlaps))]
        merges.append(
            SegmentMerge(
                segment_id=int(seg_ids[s]),
                size=int(seg_sizes[s]),
                gt_ids=tuple(int(gt_ids[g]) for g in joined[:JOINED_IDS_SHOWN]),
                n_objects=int(n_objects[s]),
                bits=float(merge_bits[s]),
            )
        )
    return ObjectErrors(
        splits=tuple(splits),
        merges=tuple(merges),
        n_split=int(np.count_nonzero(n_segments > 1)),
        n_merging=int(np.count_nonzero(n_objects > 1)),
    )


def _worst(candidates: NDArray, bits: NDArray, sizes: NDArray, top: int) -> NDArray:
    """The ``top`` candidates with the most bits, then the largest, then the lowest index."""
    order = np.lexsort((candidates, -sizes[candidates], -bits[candidates]))
    return candidates[order[:top]]


def section_ids(labels: NDArray) -> NDArray[np.uint64]:
    """``labels`` with every id made unique to its z-section (0 stays 0): to score objects within sections.

    For volumes whose labels are 2-D (each section labelled on its own, as serial-section sets
    with membrane masks only): scoring a 3-D segmentation against them as 3-D objects counts
    every object continuing across sections as a merge. Applied to both segmentation and
    ground truth, :func:`evaluate` then scores each section's objects, pooled over sections.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise NeuropilError(f"section_ids needs (z, y, x) integer labels, got {labels.dtype} {labels.shape}")
    ids = labels.astype(np.uint64)
    stride = np.uint64(int(ids.max(initial=0)) + 1)
    sections = np.arange(labels.shape[0], dtype=np.uint64)[:, None, None] * stride
    return np.where(ids > 0, ids + sections, np.uint64(0))


THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * step, 2) for step in range(1, 20))
"""Merge thresholds a calibration tries by default: 0.05, 0.10, ..., 0.95."""


def best_threshold(results: Sequence[Sequence[Scores]], thresholds: Sequence[float]) -> float:
    """The threshold with the lowest mean VOI (split + merge) over volumes (the first of equals).

    Parameters
    ----------
    results : one sequence of scores per volume, one score per threshold
    thresholds : the thresholds the scores are for, in their order
    """
    if not results or any(len(per_volume) != len(thresholds) for per_volume in results) or not thresholds:
        raise NeuropilError(f"best_threshold needs one score per threshold ({len(thresholds)}) for each volume")
    mean_voi = np.mean([[s.voi for s in per_volume] for per_volume in results], axis=0)
    return float(thresholds[int(np.argmin(mean_voi))])
