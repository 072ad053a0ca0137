"""Blockwise (Dask) against in-memory segmentation and prediction: seconds, peak memory, quality. One table.

Segmentation: fib-gala's test boundary map (p1), mirrored 2x4x4 into a 100x400x800 volume
(32 Mvoxels), from the boundary map to segments (watershed fragments, mean agglomeration at
threshold 0.8): waterz (watershed and agglomeration of the same affinities in memory, what a
user would otherwise run), neuropil in memory, and neuropil blockwise in 50x100x100 blocks with
1 and 2 worker processes. Prediction: the demo's U-Net (depth 4, 8 base channels, untrained:
speed only) on a 32x256x256 volume, in memory and blockwise in 32x128x128 blocks. Each row
runs in its own process; "peak MB" is the peak of the resident memory of that process and
its Dask workers together, including each process's Python and library overhead (about
300-400 MB each).

    PYTHONPATH=src python benchmarks/blockwise.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

THRESHOLD = 0.8
VOXEL_SIZE = (10.0, 10.0, 10.0)  # fib-gala is FIB-SEM at 10 nm
SEGMENT_SHAPE = (100, 400, 800)
MIRROR = (2, 4, 4)
"""Copies of fib-gala's 50x100x200 test volume along z, y, x, alternately mirrored."""
SEGMENT_BLOCK = (50, 100, 100)
PREDICT_SHAPE = (32, 256, 256)
PREDICT_BLOCK = (32, 128, 128)


class MemorySampler:
    """Peak of the summed resident memory of this process and its descendants, sampled every 20 ms.

    (``getrusage(RUSAGE_CHILDREN)`` cannot tell: a spawned worker's peak counts the parent's
    pages it shares between fork and exec.)
    """

    def __init__(self):
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while True:
            self.peak = max(self.peak, self.total())
            if self._stop.wait(0.02):
                return

    @staticmethod
    def total() -> int:
        """Bytes resident in this process and its descendants."""
        import os

        parents, sizes = {}, {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                parents[int(entry.name)] = int(fields[1])
                sizes[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError, IndexError):
                continue
        tree, total = {os.getpid()}, 0
        for pid in sorted(parents):  # a child's pid is usually larger than its parent's
            if pid in tree or parents[pid] in tree:
                tree.add(pid)
                total += sizes.get(pid, 0)
        return total


def prepare(data: Path, work: Path) -> None:
    """The mirrored fib-gala volume and ground truth, an untrained checkpoint and a raw volume."""
    import h5py
    import torch

    from neuropil.checkpoint import save_checkpoint
    from neuropil.conventions import METHOD_VOXEL_SIZE
    from neuropil.io import write_volume
    from neuropil.model import ModelConfig, UNet3D

    def mirrored(name):
        with h5py.File(data / "fib-gala" / name) as file:
            array = file["stack"][:]
        for axis, copies in enumerate(MIRROR):
            flipped = np.flip(array, axis)
            array = np.concatenate([array if i % 2 == 0 else flipped for i in range(copies)], axis=axis)
        return array

    boundaries = mirrored("test-p1.lzf.h5").astype(np.float32)
    write_volume(f"{work / 'in.zarr'}/boundaries", boundaries, voxel_size=VOXEL_SIZE, chunks=SEGMENT_BLOCK)
    # mirrored copies of one object are one object only where they touch; label them apart
    gt = mirrored("test-gt.lzf.h5").astype(np.uint64)
    copy = np.zeros(gt.shape, dtype=np.uint64)
    for axis, copies in enumerate(MIRROR):
        index = np.arange(gt.shape[axis]) // (gt.shape[axis] // copies)
        copy += np.expand_dims(index, [a for a in range(3) if a != axis]).astype(np.uint64) * int(
            np.prod(MIRROR[:axis])
        )
    np.save(work / "gt.npy", np.where(gt > 0, gt * int(np.prod(MIRROR)) + copy, 0))
    torch.manual_seed(0)
    model = UNet3D(ModelConfig(base_channels=8, depth=4, voxel_size=METHOD_VOXEL_SIZE))
    save_checkpoint(
        work / "checkpoint.pt",
        {"model_config": model.config.model_dump(mode="json"), "model_state": model.state_dict()},
    )
    raw = np.random.default_rng(0).integers(0, 255, size=PREDICT_SHAPE, dtype=np.uint8)
    write_volume(f"{work / 'raw.zarr'}/raw", raw, voxel_size=METHOD_VOXEL_SIZE, chunks=PREDICT_BLOCK)


def run_variant(variant: str, work: Path) -> dict:
    """One row, in this process: seconds, peak memory (this process, its largest worker) and VOI."""
    import torch

    from neuropil.io import read_volume

    torch.set_num_threads(2)
    sampler = MemorySampler().__enter__()
    start = time.perf_counter()
    if variant == "waterz":
        import waterz

        from neuropil.segment.affinities import affinities_from_boundaries

        affinities = affinities_from_boundaries(read_volume(f"{work / 'in.zarr'}/boundaries"), combine="mean")
        segmentation = next(waterz.agglomerate(affinities, [THRESHOLD]))
    elif variant == "segment in memory":
        from neuropil.segment import segment

        boundaries = read_volume(f"{work / 'in.zarr'}/boundaries")
        (segmentation,) = segment(boundaries, voxel_size=VOXEL_SIZE, thresholds=(THRESHOLD,)).segmentations
    elif variant.startswith("segment blockwise"):
        from neuropil.blockwise import segment_blockwise

        (segmentation,) = segment_blockwise(
            f"{work / 'in.zarr'}/boundaries",
            [f"{work / 'out.zarr'}/{variant.replace(' ', '-')}"],
            thresholds=[THRESHOLD],
            block_shape=SEGMENT_BLOCK,
            num_workers=int(variant.split()[-2]),
            progress=False,
        )  # an address, read back below (not timed)
    elif variant == "predict in memory":
        from neuropil.checkpoint import load_model
        from neuropil.predict import predict_affinities

        segmentation = None
        predict_affinities(
            read_volume(f"{work / 'raw.zarr'}/raw"),
            load_model(work / "checkpoint.pt"),
            tile_shape=PREDICT_BLOCK,
            progress=False,
        )
    else:
        from neuropil.blockwise import predict_blockwise

        segmentation = None
        predict_blockwise(
            work / "checkpoint.pt",
            f"{work / 'raw.zarr'}/raw",
            f"{work / 'out.zarr'}/affs",
            block_shape=PREDICT_BLOCK,
            progress=False,
        )
    row = {"seconds": time.perf_counter() - start}
    sampler.__exit__()
    row["peak"] = sampler.peak / 2**20
    if segmentation is not None:
        from neuropil.evaluate import evaluate

        score = evaluate(
            read_volume(segmentation) if isinstance(segmentation, str) else segmentation, np.load(work / "gt.npy")
        )
        row.update(split=score.voi_split, merge=score.voi_merge, arand=score.arand)
    return row


VARIANTS = [
    ("segment", "waterz"),
    ("segment", "segment in memory"),
    ("segment", "segment blockwise 1 workers"),
    ("segment", "segment blockwise 2 workers"),
    ("predict", "predict in memory"),
    ("predict", "predict blockwise"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.work)))
        return
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        prepare(args.data, work)
        print("| stage | method | Mvoxels | s | Mvox/s | peak MB | split | merge | ARAND |")
        print("|---|---|---|---|---|---|---|---|---|")
        for stage, variant in VARIANTS:
            # fresh process per row: its own peak memory, warm numba caches from the first run
            output = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--work", str(work)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            row = json.loads(output.strip().splitlines()[-1])
            voxels = np.prod(SEGMENT_SHAPE if stage == "segment" else PREDICT_SHAPE) / 1e6
            cells = [
                stage,
                variant.removeprefix(f"{stage} "),
                f"{voxels:.1f}",
                f"{row['seconds']:.1f}",
                f"{voxels / row['seconds']:.2f}",
                f"{row['peak']:.0f}",
            ]
            cells += [f"{row[k]:.3f}" for k in ("split", "merge", "arand")] if "split" in row else ["", "", ""]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
