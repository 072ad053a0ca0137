"""Skeletons of dense ground truth and the expected run length (ERL) of a segmentation along them.

:func:`skeletonize` draws one skeleton per ground-truth object with kimimaro (TEASAR), at the
volume's voxel size; :func:`expected_run_length` scores a segmentation on skeletons;
:func:`erl_scores` does both.

ERL (Januszewski et al. 2018, as funlib.evaluate computes it and the LSD paper and the NISB
benchmark report it) is the expected length of the correctly reconstructed neurite around a point
drawn uniformly along the ground-truth skeletons. An edge of a skeleton is correct when both of its
nodes lie in the same segment, that segment is not 0, and that segment covers no node of any other
skeleton; a segment that does (a merge) makes every edge of every skeleton inside it wrong. The
correct runs are the connected pieces of correct edges, and

    ERL = sum over runs of length(run)^2 / total length of all skeletons

(equivalently: the sum over skeletons of each one's share of the total length times its own
expected run, the sum of its runs' length^2 over its length). Normalised ERL divides by the ERL of
the ground truth itself, where every connected piece of a skeleton is one run:

    NERL = ERL / (sum over skeleton pieces of length^2 / total length)

so NERL is 1 for the ground truth against itself and tends to 0 both for segmentations that split
every neurite into short pieces and for those that merge many neurites.

References
----------
Januszewski, M. et al. (2018). High-precision automated reconstruction of neurons with
flood-filling networks. Nat. Methods 15, 605-610. doi:10.1038/s41592-018-0049-4
Sheridan, A. et al. (2023). Local shape descriptors for neuron segmentation. Nat. Methods 20,
295-303. doi:10.1038/s41592-022-01711-z
Sato, M. et al. (2000). TEASAR: tree-structure extraction algorithm for accurate and robust
skeletons. Proc. 8th Pacific Conf. on Computer Graphics and Applications.
doi:10.1109/PCCGA.2000.883951 (the method of kimimaro, https://github.com/seung-lab/kimimaro)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
from numpy.typing import NDArray

from neuropil.errors import NeuropilError

SCALE = 1.5
"""TEASAR's invalidation ball: ``scale`` times the distance to the boundary, plus :data:`CONST_NM`."""
CONST_NM = 300.0
"""nm added to the invalidation ball: branches shorter than about this are not traced (kimimaro's neurite value)."""
DUST_VOXELS = 1000
"""Objects (connected pieces) of fewer voxels are not skeletonized (kimimaro's default)."""


@dataclass(frozen=True)
class Skeleton:
    """The skeleton of one ground-truth object: nodes at voxels, edges between them."""

    label: int
    """The object's ground-truth id."""
    voxels: NDArray[np.int64]
    """(n, 3) node positions as voxel indices, z-first."""
    edges: NDArray[np.int64]
    """(m, 2) pairs of node indices."""
    voxel_size: tuple[float, float, float]
    """nm, z-first."""

    @property
    def vertices(self) -> NDArray[np.float64]:
        """(n, 3) node positions in nm, z-first."""
        return np.multiply(self.voxels, np.asarray(self.voxel_size, dtype=np.float64), dtype=np.float64)

    @property
    def edge_lengths(self) -> NDArray[np.float64]:
        """(m,) the length of each edge in nm."""
        vertices = self.vertices
        return np.linalg.norm(vertices[self.edges[:, 0]] - vertices[self.edges[:, 1]], axis=1)

    @property
    def length(self) -> float:
        """The total length in nm."""
        return float(self.edge_lengths.sum())


@dataclass(frozen=True)
class ErlScores:
    """Expected run length of a segmentation on ground-truth skeletons; higher is better."""

    erl: float
    """Expected run length in nm."""
    nerl: float
    """``erl / gt_erl``, in [0, 1]."""
    gt_erl: float
    """The expected run length of the ground truth itself in nm: its best possible value."""
    skeleton_length: float
    """The summed length of the skeletons in nm."""
    n_skeletons: int
    """Skeletons scored (ground-truth objects with at least one edge)."""
    n_merging_segments: int
    """Segments covering nodes of more than one skeleton."""
    merged_skeleton_length: float
    """nm of skeleton edges wrong because their segment is a merge."""
    split_skeleton_length: float
    """nm of skeleton edges wrong because their ends are in different segments, or in segment 0."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def skeletonize(
    labels: NDArray,
    *,
    voxel_size: Sequence[float],
    mask: NDArray | None = None,
    scale: float = SCALE,
    const_nm: float = CONST_NM,
    dust_threshold: int = DUST_VOXELS,
) -> dict[int, Skeleton]:
    """One skeleton per object of a dense label volume, with kimimaro, at its voxel size.

    Parameters
    ----------
    labels : (z, y, x) ndarray of int
        Ground truth; 0 is background and has no skeleton.
    voxel_size : (z, y, x) nm
        The skeletons are traced in physical space (anisotropic voxels are weighted so).
    mask : (z, y, x) ndarray of bool, optional
        Only labels where it is non-zero are skeletonized (as
        :func:`neuropil.evaluate.evaluate` scores only voxels inside its mask).
    scale, const_nm
        TEASAR's invalidation ball, ``scale * distance to boundary + const_nm``: larger values
        trace fewer, longer branches.
    dust_threshold : int
        Connected pieces of fewer voxels are skipped.

    The other TEASAR parameters are kimimaro's defaults; kimimaro runs in this process (its
    parallel mode would switch the whole process's multiprocessing to spawn).

    Returns
    -------
    dict
        Ground-truth id -> :class:`Skeleton` (objects with at least one edge).

    Raises
    ------
    NeuropilError
        For a volume that is not 3-D, labels that are not integers, a bad voxel size, or a
        mask of another shape.
    """
    import kimimaro
    from kimimaro.intake import DEFAULT_TEASAR_PARAMS

    labels = np.asarray(labels)
    size = _voxel_size(voxel_size)
    if labels.ndim != 3:
        raise NeuropilError(f"skeletons need a 3-D (z, y, x) label volume, got shape {labels.shape}")
    if labels.dtype.kind not in "iub":
        raise NeuropilError(f"skeletons need integer labels, got {labels.dtype}")
    if labels.dtype.kind == "b":
        labels = labels.astype(np.uint8)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != labels.shape:
            raise NeuropilError(f"mask shape {mask.shape} does not match ground truth shape {labels.shape}")
        labels = np.where(mask != 0, labels, 0).astype(labels.dtype, copy=False)
    traced = kimimaro.skeletonize(
        labels,
        teasar_params={**DEFAULT_TEASAR_PARAMS, "scale": float(scale), "const": float(const_nm)},
        anisotropy=size,
        dust_threshold=int(dust_threshold),
        fix_branching=True,
        fix_borders=True,
        progress=False,
        parallel=1,
    )
    skeletons = {}
    for label, traced_skeleton in sorted(traced.items()):
        if int(label) == 0 or len(traced_skeleton.edges) == 0:
            continue
        voxels = np.rint(np.asarray(traced_skeleton.vertices, dtype=np.float64) / size).astype(np.int64)
        voxels = np.clip(voxels, 0, np.asarray(labels.shape) - 1)
        edges = np.asarray(traced_skeleton.edges, dtype=np.int64).reshape(-1, 2)
        skeletons[int(label)] = Skeleton(int(label), voxels, edges, size)
    return skeletons


def expected_run_length(segmentation: NDArray, skeletons: Mapping[int, Skeleton] | Sequence[Skeleton]) -> ErlScores:
    """ERL and NERL of ``segmentation`` on ground-truth ``skeletons`` (see the module's definition).

    Parameters
    ----------
    segmentation : (z, y, x) ndarray of int
        Segment ids; 0 is no segment (edges there are wrong).
    skeletons : mapping or sequence of Skeleton
        E.g. from :func:`skeletonize`; each is one ground-truth object.

    Raises
    ------
    NeuropilError
        When there is no skeleton edge to score, or a node lies outside the segmentation.
    """
    segmentation = np.asarray(segmentation)
    listed = list(skeletons.values()) if isinstance(skeletons, Mapping) else list(skeletons)
    listed = [skeleton for skeleton in listed if len(skeleton.edges)]
    if segmentation.ndim != 3:
        raise NeuropilError(f"ERL needs a 3-D (z, y, x) segmentation, got shape {segmentation.shape}")
    if not listed:
        raise NeuropilError("no skeleton edges to score ERL on (no ground-truth object large enough to skeletonize)")
    voxels = np.concatenate([skeleton.voxels for skeleton in listed])
    outside = np.any((voxels < 0) | (voxels >= np.asarray(segmentation.shape)), axis=1)
    if outside.any():
        raise NeuropilError(
            f"skeleton node at voxel {tuple(int(v) for v in voxels[outside][0])} is outside the segmentation "
            f"of shape {segmentation.shape}"
        )
    starts = np.cumsum([0] + [len(skeleton.voxels) for skeleton in listed])
    edges = np.concatenate([skeleton.edges + start for skeleton, start in zip(listed, starts)])
    lengths = np.concatenate([skeleton.edge_lengths for skeleton in listed])
    node_skeleton = np.repeat(np.arange(len(listed)), np.diff(starts))
    node_segment = segmentation[tuple(voxels.T)].astype(np.int64, copy=False)

    # segments (not 0) that hold nodes of more than one skeleton
    pairs = np.unique(np.stack([node_segment, node_skeleton], axis=1)[node_segment != 0], axis=0)
    segments, counts = np.unique(pairs[:, 0], return_counts=True)
    merging = segments[counts > 1]

    first, second = node_segment[edges[:, 0]], node_segment[edges[:, 1]]
    kept = (first == second) & (first != 0)
    merged = kept & np.isin(first, merging)
    correct = kept & ~merged

    total = float(lengths.sum())
    erl = _sum_of_squared_runs(len(voxels), edges[correct], lengths[correct]) / total
    gt_erl = _sum_of_squared_runs(len(voxels), edges, lengths) / total
    return ErlScores(
        erl=erl,
        nerl=erl / gt_erl if gt_erl > 0 else 0.0,
        gt_erl=gt_erl,
        skeleton_length=total,
        n_skeletons=len(listed),
        n_merging_segments=len(merging),
        merged_skeleton_length=float(lengths[merged].sum()),
        split_skeleton_length=float(lengths[~kept].sum()),
    )


def erl_scores(
    segmentation: NDArray,
    ground_truth: NDArray,
    *,
    voxel_size: Sequence[float],
    mask: NDArray | None = None,
    dust_threshold: int = DUST_VOXELS,
) -> ErlScores:
    """ERL and NERL of ``segmentation`` on the skeletons of dense ``ground_truth`` (:func:`skeletonize`).

    To score several segmentations, skeletonize once and call :func:`expected_run_length` for each.
    ``mask``: only ground truth where it is non-zero is skeletonized.

    Raises
    ------
    NeuropilError
        When the volumes' shapes differ, or the ground truth has no object large enough to skeletonize.
    """
    segmentation, ground_truth = np.asarray(segmentation), np.asarray(ground_truth)
    if segmentation.shape != ground_truth.shape:
        raise NeuropilError(
            f"segmentation shape {segmentation.shape} does not match ground truth shape {ground_truth.shape}"
        )
    skeletons = skeletonize(ground_truth, voxel_size=voxel_size, mask=mask, dust_threshold=dust_threshold)
    return expected_run_length(segmentation, skeletons)


def _sum_of_squared_runs(n_nodes: int, edges: NDArray, lengths: NDArray) -> float:
    """The sum over connected pieces of the graph (n_nodes, edges) of their summed edge length, squared."""
    if len(edges) == 0:
        return 0.0
    graph = scipy.sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_nodes, n_nodes))
    _, piece = scipy.sparse.csgraph.connected_components(graph, directed=False)
    run_lengths = np.bincount(piece[edges[:, 0]], weights=lengths)
    return float(np.sum(run_lengths**2))


def _voxel_size(voxel_size: Sequence[float]) -> tuple[float, float, float]:
    size = tuple(float(v) for v in voxel_size)
    if len(size) != 3 or not all(np.isfinite(v) and v > 0 for v in size):
        raise NeuropilError(f"voxel size must be 3 positive numbers (z y x nm), got {tuple(voxel_size)}")
    return size[0], size[1], size[2]
