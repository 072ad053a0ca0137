"""Watershed and mean agglomeration against bioimage-cpp and waterz: seconds and quality in one table.

    PYTHONPATH=src python benchmarks/segmentation.py [--data ../shared/data] [--repeats 5] [--no-large]

Input: fib-gala's test boundary map (p1; 50x100x200 voxels = 1.0 Mvoxel of FIB-SEM at
10x10x10 nm) and, unless ``--no-large``, the same map mirrored to 250x250x250 (15.6 Mvoxels;
its ground truth mirrored alike, each connected piece of an id one object). Every row reads
the boundary map from memory; times are the best of ``--repeats`` rounds in this process
(each round runs every row of a comparison once, so that the shared machine's changing load
falls on all of them), after a warm-up run on a small crop (waterz compiles, numba loads
its cached kernels).

Rows, two comparisons:

- the flood from seeds, neuropil's seeds (``_distance_transform_seeds``) for both, on the
  affinities ``fragments_from_boundaries`` floods (``max(1 - max(b_p, b_q), 1e-6)``):
  bioimage-cpp's ``watershed_from_affinities`` (uint32 markers, its fastest) against
  neuropil's flood alone (``min_size=0``: flood and uint64 output) and with its merge of
  fragments under 20 voxels; "seeds excluded" rows time the flood only (seeds computed
  once beforehand), "seeds included" rows add the affinities and the seeds
  (``fragments_from_boundaries`` for neuropil);
- watershed + mean agglomeration from the boundary map, a segmentation per threshold of
  ``THRESHOLDS``: waterz (``affinities_from_boundaries(combine="mean")``, then its own
  watershed and ``OneMinus<MeanAffinity>`` with ``discretize_queue=256``, each
  segmentation copied out) against ``neuropil.segment.segment`` (``fragments_from_boundaries``
  and mean agglomeration). Both merge while ``1 - mean affinity < threshold``: a higher
  threshold merges more, the same grid means the same for both.

Columns: seconds, Mvoxels/s, "vs library" (the library's seconds / this row's: above 1 is
faster than the library), and the scores (:func:`neuropil.evaluate.evaluate`, ground
truth 0 ignored) of the fragments, or of the threshold with the lowest VOI (split + merge)
with the lowest ARAND of the grid beside it. neuropil's kernels run on every core this
process may use (the flood itself on one); bioimage-cpp and waterz run on one. Run it
under ``taskset -c 0`` for one core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import h5py
import numpy as np

from agglomeration import silenced  # benchmarks/agglomeration.py: waterz's C++ prints
from neuropil.evaluate import GroundTruth, Scores
from neuropil.segment import segment
from neuropil.segment.affinities import affinities_from_boundaries
from neuropil.segment.graph import cores
from neuropil.segment.watershed import _distance_transform_seeds, _Volume, _watershed_cut, fragments_from_boundaries

VOXEL_SIZE = (10.0, 10.0, 10.0)  # fib-gala is FIB-SEM at 10 nm
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MIN_SIZE = 20  # fragments_from_boundaries' default
LARGE_SHAPE = (250, 250, 250)
OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]  # neuropil's nearest neighbours (bioimage-cpp wants one sign)


def read(folder: Path, name: str) -> np.ndarray:
    with h5py.File(folder / name) as file:
        return file["stack"][:]


def mirrored(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``array`` continued by mirror images of itself to ``shape``."""
    return np.pad(array, [(0, size - own) for size, own in zip(shape, array.shape)], mode="symmetric")


def mirrored_truth(ground_truth: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The ground truth mirrored like the image, each connected piece of an id its own object.

    An object cut by a mirror plane continues into its mirror image, one object in the
    mirrored image; two copies of it that do not touch are two objects.
    """
    import cc3d

    return cc3d.connected_components(mirrored(ground_truth, shape), connectivity=6)


def flood_affinities(boundaries: np.ndarray) -> np.ndarray:
    """The affinities ``fragments_from_boundaries`` floods."""
    affinities = affinities_from_boundaries(boundaries)
    np.maximum(affinities, np.float32(1e-6), out=affinities)
    return affinities


def neuropil_seeds(affinities: np.ndarray) -> np.ndarray:
    return _distance_transform_seeds(_Volume(affinities, None), threshold=0.5, voxel_size=VOXEL_SIZE)


class Rows:
    """The rows of one volume's table, timed in rounds: each round runs every row once.

    Rounds rather than all the runs of one row after the other, so that a change in the
    machine's load (it is shared) falls on every row alike; the fastest round counts.
    The first round's results are scored.
    """

    def __init__(self, truth: GroundTruth, repeats: int):
        self.truth = truth
        self.repeats = repeats
        self.rows: list[dict] = []

    def add(self, name: str, function, library: str | None = None, grid: bool = False) -> None:
        """A row: ``function`` returns a segmentation (a list of them with ``grid``)."""
        self.rows.append({"name": name, "function": function, "library": library, "grid": grid, "seconds": np.inf})

    def skip(self, name: str, reason: str) -> None:
        self.rows.append({"name": name, "skipped": reason})

    def run(self) -> None:
        for round_ in range(self.repeats):
            for row in self.rows:
                if "skipped" in row:
                    continue
                start = time.perf_counter()
                result = row["function"]()
                row["seconds"] = min(row["seconds"], time.perf_counter() - start)
                if round_ == 0:
                    segmentations = result if row["grid"] else [result]
                    row["scores"] = [self.truth.evaluate(segmentation) for segmentation in segmentations]
                del result


def flood_rows(rows: Rows, boundaries: np.ndarray) -> None:
    """bioimage-cpp's flood and neuropil's from the same seeds, seeds excluded and included."""
    affinities = flood_affinities(boundaries)
    seeds = neuropil_seeds(affinities)
    volume = _Volume(affinities, None)
    try:
        from bioimage_cpp.segmentation import watershed_from_affinities
    except ImportError:
        rows.skip("bioimage-cpp flood", "bioimage-cpp is not installed (pip install bioimage-cpp)")
    else:
        markers = seeds.astype(np.uint32)

        def seeds_and_flood():
            affinities = flood_affinities(boundaries)
            return watershed_from_affinities(affinities, OFFSETS, neuropil_seeds(affinities).astype(np.uint32))

        rows.add("bioimage-cpp flood (seeds excluded)", lambda: watershed_from_affinities(affinities, OFFSETS, markers))
        rows.add("bioimage-cpp flood (seeds included)", seeds_and_flood)
    library = "bioimage-cpp flood (seeds excluded)"
    rows.add("neuropil flood (seeds excluded)", lambda: _watershed_cut(volume, seeds, 0, 0.0)[0], library)
    rows.add(
        f"neuropil flood + min_size {MIN_SIZE} (seeds excluded)",
        lambda: _watershed_cut(volume, seeds, MIN_SIZE, 0.0)[0],
        library,
    )
    rows.add(
        "neuropil fragments_from_boundaries (seeds included)",
        lambda: fragments_from_boundaries(boundaries, voxel_size=VOXEL_SIZE)[0],
        "bioimage-cpp flood (seeds included)",
    )


def agglomeration_rows(rows: Rows, boundaries: np.ndarray) -> None:
    """waterz's watershed + mean agglomeration and neuropil's, a segmentation per threshold."""
    try:
        import waterz
    except ImportError:
        rows.skip("waterz watershed + mean", "waterz is not installed (pip install waterz)")
    else:

        def run_waterz():
            affinities = affinities_from_boundaries(boundaries, combine="mean")
            # waterz yields one array, agglomerated further at each threshold: copy each out
            runs = waterz.agglomerate(affinities, list(THRESHOLDS), discretize_queue=256)
            return silenced(lambda: [segmentation.copy() for segmentation in runs])

        rows.add("waterz watershed + mean", run_waterz, grid=True)
    rows.add(
        "neuropil fragments + mean (segment)",
        lambda: segment(boundaries, voxel_size=VOXEL_SIZE, thresholds=THRESHOLDS).segmentations,
        "waterz watershed + mean",
        grid=True,
    )


def scores_cells(scores: list[Scores], grid: bool) -> list[str]:
    best = int(np.argmin([s.voi for s in scores]))
    chosen = scores[best]
    cells = [f"{chosen.voi_split:.3f}", f"{chosen.voi_merge:.3f}", f"{chosen.voi:.3f}", f"{chosen.arand:.3f}"]
    if grid:
        best_arand = int(np.argmin([s.arand for s in scores]))
        cells = [f"{THRESHOLDS[best]:g}"] + cells + [f"{scores[best_arand].arand:.3f} ({THRESHOLDS[best_arand]:g})"]
    else:
        cells = ["fragments"] + cells + [""]
    return cells


def table(title: str, rows: list[dict], voxels: int) -> str:
    lines = [
        f"**{title}**",
        "",
        "| row | s | Mvox/s | vs library | threshold | VOI split | VOI merge | VOI | ARAND | best ARAND (threshold) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    seconds = {row["name"]: row.get("seconds") for row in rows}
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['name']} | skipped: {row['skipped']} | | | | | | | | |")
            continue
        library = row["library"]
        if library is None:
            versus = "1.00 (library)" if not row["name"].startswith("neuropil") else ""
        elif seconds.get(library) is None:
            versus = "n/a (library skipped)"
        else:
            versus = f"{seconds[library] / row['seconds']:.2f}x"
        cells = [row["name"], f"{row['seconds']:.3f}", f"{voxels / 1e6 / row['seconds']:.2f}", versus]
        cells += scores_cells(row["scores"], grid=row["grid"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def warm_up(boundaries: np.ndarray) -> None:
    """Compile or load every kernel once, on a crop (not timed)."""
    crop = np.ascontiguousarray(boundaries[:16, :32, :32])
    segment(crop, voxel_size=VOXEL_SIZE, thresholds=THRESHOLDS)
    affinities = flood_affinities(crop)
    _watershed_cut(_Volume(affinities, None), neuropil_seeds(affinities), 0, 0.0)
    try:
        import waterz

        silenced(lambda: list(waterz.agglomerate(affinities_from_boundaries(crop, combine="mean"), [0.5])))
    except ImportError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; each row's fastest counts (default 5)")
    parser.add_argument("--no-large", action="store_true", help="only the fib-gala test volume, not its 250^3 mirror")
    args = parser.parse_args()
    folder = args.data / "fib-gala"
    boundaries = read(folder, "test-p1.lzf.h5").astype(np.float32)
    ground_truth = read(folder, "test-gt.lzf.h5")
    print("    PYTHONPATH=src python benchmarks/segmentation.py [--data ../shared/data]")
    print()
    print(
        f"neuropil on {cores()} cores (its flood on one); bioimage-cpp and waterz on one. "
        f"Thresholds {', '.join(f'{t:g}' for t in THRESHOLDS)}; best of {args.repeats} rounds."
    )
    print()
    warm_up(boundaries)
    volumes = [("fib-gala test, 50x100x200 (1.0 Mvoxels)", boundaries, ground_truth)]
    if not args.no_large:
        volumes.append(
            (
                "fib-gala test mirrored to 250x250x250 (15.6 Mvoxels)",
                mirrored(boundaries, LARGE_SHAPE),
                mirrored_truth(ground_truth, LARGE_SHAPE),
            )
        )
    for title, volume, labels in volumes:
        floods = Rows(GroundTruth(labels), args.repeats)
        flood_rows(floods, volume)
        floods.run()
        agglomerations = Rows(floods.truth, args.repeats)
        agglomeration_rows(agglomerations, volume)
        agglomerations.run()
        print(table(title, floods.rows + agglomerations.rows, volume.size), flush=True)
        print()


if __name__ == "__main__":
    main()
