"""Evaluation speed: neuropil's evaluate against scikit-image's VOI + adapted Rand, same inputs, same run.

Both compute VOI split, VOI merge and adapted Rand error with ground-truth 0 left out
(scikit-image: ``variation_of_information(gt, seg, ignore_labels=[0])`` and
``adapted_rand_error(gt, seg, ignore_labels=[0])``, two contingency tables; neuropil: one
table, ``evaluate(seg, gt)``). Inputs are in memory; reading them is not timed.

Cases: synthetic uint64 volumes (a blocky label volume with about 10^4 objects and 0 on the
boundaries between them as ground truth; as segmentation the same blocks with boundaries moved
by up to 2 voxels, 10 % of the blocks merged with others and 1 % of the voxels speckled with
small fragments; ids drawn below 10^6, since scikit-image indexes its table by the ids
themselves), the fib-gala test volume (shipped watershed fragments against its ground truth)
when ``--data`` holds it, and a sweep: 5 segmentations (merging 0-40 % of the blocks) against
one ground truth, neuropil's ``evaluate_many`` (the ground truth prepared once, its preparation
timed) against 5 separate scikit-image calls.

Each case is timed ``--repeats`` times with the two libraries interleaved (their order
alternating), since the machine may be shared with other jobs: the seconds are medians, the
ratio is the median of the ratios of the same repeat. The last column is the largest absolute
difference between the two libraries' VOI split, VOI merge and adapted Rand error.

    PYTHONPATH=src python benchmarks/evaluate.py [--data ../shared/data] [--size 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from skimage.metrics import adapted_rand_error, variation_of_information

from neuropil.evaluate import evaluate, evaluate_many

RERUN = "PYTHONPATH=src python benchmarks/evaluate.py [--data ../shared/data] [--size 256] [--repeats 3]"


def blocks(shape: tuple[int, ...], rng: np.random.Generator, *, cell: int = 12) -> list[np.ndarray]:
    """Random cut positions along each axis: about ``cell`` voxels between cuts."""
    return [np.sort(rng.choice(np.arange(1, n), size=max(n // cell, 1), replace=False)) for n in shape]


def label_blocks(shape, cuts, ids: np.ndarray) -> np.ndarray:
    """The volume whose block (i, j, k) between cuts holds ``ids[i, j, k]``."""
    index = [np.searchsorted(c, np.arange(n), side="right") for c, n in zip(cuts, shape)]
    return ids.reshape([len(c) + 1 for c in cuts])[np.ix_(*index)]


def random_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(np.arange(1, 10**6, dtype=np.uint64), size=n, replace=False)


def ground_truth(shape, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A blocky uint64 label volume, 0 on the boundaries between blocks, and its cut positions."""
    rng = np.random.default_rng(seed)
    cuts = blocks(shape, rng)
    labels = label_blocks(shape, cuts, random_ids(rng, int(np.prod([len(c) + 1 for c in cuts]))))
    boundary = np.zeros(shape, dtype=bool)
    for axis in range(labels.ndim):
        ahead = [slice(None)] * labels.ndim
        behind = [slice(None)] * labels.ndim
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        boundary[tuple(ahead)] |= labels[tuple(ahead)] != labels[tuple(behind)]
    return np.where(boundary, np.uint64(0), labels), cuts


def segmentation(shape, cuts, *, seed: int, merged: float = 0.1) -> np.ndarray:
    """The blocks of ``cuts`` with boundaries moved, a fraction ``merged`` of them merged, speckled with fragments."""
    rng = np.random.default_rng(seed)
    moved = [np.unique(np.clip(c + rng.integers(-2, 3, c.size), 1, n - 1)) for c, n in zip(cuts, shape)]
    ids = random_ids(rng, int(np.prod([len(c) + 1 for c in moved])))
    merge = rng.random(ids.size) < merged
    ids[merge] = ids[rng.integers(0, ids.size, int(merge.sum()))]
    labels = label_blocks(shape, moved, ids)
    speckle = rng.random(shape) < 0.01
    labels[speckle] = rng.integers(10**6, 10**6 + 5000, int(speckle.sum())).astype(np.uint64)
    return labels


def neuropil_scores(segmentations, gt) -> list[tuple[float, float, float]]:
    if len(segmentations) == 1:
        scores = [evaluate(segmentations[0], gt)]
    else:
        scores = evaluate_many(segmentations, gt)
    return [(s.voi_split, s.voi_merge, s.arand) for s in scores]


def skimage_scores(segmentations, gt) -> list[tuple[float, float, float]]:
    results = []
    for seg in segmentations:
        # called as (gt, seg), scikit-image returns (H(seg | gt), H(gt | seg)): (split, merge)
        split, merge = variation_of_information(gt, seg, ignore_labels=[0])
        error = adapted_rand_error(gt, seg, ignore_labels=[0])[0]
        results.append((float(split), float(merge), float(error)))
    return results


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def compare(name: str, segmentations: list[np.ndarray], gt: np.ndarray, repeats: int) -> list[str]:
    """One table row: both libraries timed ``repeats`` times, interleaved."""
    ours, theirs, ratios = [], [], []
    for repeat in range(repeats):
        if repeat % 2 == 0:
            ours_s, ours_scores = timed(neuropil_scores, segmentations, gt)
            theirs_s, theirs_scores = timed(skimage_scores, segmentations, gt)
        else:
            theirs_s, theirs_scores = timed(skimage_scores, segmentations, gt)
            ours_s, ours_scores = timed(neuropil_scores, segmentations, gt)
        ours.append(ours_s)
        theirs.append(theirs_s)
        ratios.append(theirs_s / ours_s)
    difference = float(np.max(np.abs(np.array(ours_scores) - np.array(theirs_scores))))
    voxels = f"{gt.size / 1e6:.1f} M" if len(segmentations) == 1 else f"{len(segmentations)} × {gt.size / 1e6:.1f} M"
    return [
        name,
        voxels,
        f"{np.median(ours):.3f}",
        f"{np.median(theirs):.3f}",
        f"{np.median(ratios):.1f}x",
        f"{difference:.1e}",
    ]


def fib_gala(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    import h5py

    if not (folder / "test-gt.lzf.h5").is_file() or not (folder / "test-ws.lzf.h5").is_file():
        return None
    with h5py.File(folder / "test-gt.lzf.h5") as gt_file, h5py.File(folder / "test-ws.lzf.h5") as ws_file:
        return ws_file["stack"][:], gt_file["stack"][:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument(
        "--size", type=int, default=256, help="edge of the synthetic volumes (default 256: 16.8 Mvoxel)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each case (default 3; medians)")
    args = parser.parse_args()

    small = ground_truth((16, 32, 32))[0]
    neuropil_scores([small], small)  # imports and first calls, before anything is timed
    skimage_scores([small], small)

    rows = []
    half = (args.size // 2,) * 3
    gt, cuts = ground_truth(half)
    rows.append(compare(f"synthetic {half[0]}³ uint64", [segmentation(half, cuts, seed=1)], gt, args.repeats))
    shape = (args.size,) * 3
    gt, cuts = ground_truth(shape)
    n_objects = len(np.unique(gt)) - 1
    rows.append(compare(f"synthetic {args.size}³ uint64", [segmentation(shape, cuts, seed=1)], gt, args.repeats))
    gala = fib_gala(args.data / "fib-gala")
    if gala is not None:
        rows.append(compare("fib-gala test (ws vs gt), int32", [gala[0]], gala[1], args.repeats))
    sweep = [segmentation(shape, cuts, seed=1, merged=merged) for merged in (0.0, 0.1, 0.2, 0.3, 0.4)]
    rows.append(compare(f"5 segmentations vs one gt, {args.size}³", sweep, gt, args.repeats))

    print(
        f"Synthetic ground truth: {n_objects} objects in {args.size}³; "
        f"median of {args.repeats} interleaved repeats{'' if gala is not None else '; fib-gala not found'}."
    )
    print()
    print("| case | voxels | neuropil s | scikit-image s | ratio (skimage/neuropil) | max abs difference |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(f"Rerun: `{RERUN}`")


if __name__ == "__main__":
    main()
