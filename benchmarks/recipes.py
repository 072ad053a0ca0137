"""Recipe study: which training recipe carries a U-Net to real FIB-SEM it never saw.

Trains one model per configuration in ``configs/recipe/`` (the same model, patch, batch and
number of iterations each, so the same CPU budget), then predicts fib-gala's test volume
(FIB-SEM, fly medulla, 50x100x200 at 10 nm, held out from every run), segments it (watershed
+ mean agglomeration, the pipeline of ``neuropil segment``) at every threshold of the grid,
brings each segmentation back to the test volume's 10 nm grid (nearest neighbour) and scores
it against the dense ground truth (VOI split, VOI merge, ARAND; ground truth 0 not scored).
Each row gives the scores at the threshold the run calibrated on its own validation volumes
(what ``neuropil segment`` uses without ``--threshold``) and at the best threshold on test.

    PYTHONPATH=src python benchmarks/recipes.py [--out runs/recipes] [--parallel 2] [--threads T] [NAME ...]
        [--score-only] [--also RUN ...]

``--also`` scores other run folders the same way (e.g. ``runs/generalist`` of
``neuropil train configs/generalist.yaml``).

Training is resumable: running again continues unfinished runs and reuses finished ones.
Needs the catalog sets fib-gala, isbi2012 and vnc-gerhard2013 (``neuropil data list``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from neuropil.checkpoint import load_checkpoint, load_model
from neuropil.data.catalog import get_dataset
from neuropil.data.resample import labels_on_grid, resample
from neuropil.evaluate import THRESHOLD_GRID, Scores, evaluate
from neuropil.io import open_volume
from neuropil.predict import predict_affinities
from neuropil.segment import segment

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "recipe"
ORDER = ("no-fib-plain", "no-fib-em", "no-fib-ecs", "no-fib-long-range", "fib-only", "all-domains")
"""Rows of the table: the four no-FIB-SEM recipes, each adding to the one before, then the references."""
WHAT = {
    "no-fib-plain": "no FIB-SEM; no augmentation",
    "no-fib-em": "no FIB-SEM; EM augmentation",
    "no-fib-ecs": "no FIB-SEM; EM + extracellular-space aug.",
    "no-fib-long-range": "no FIB-SEM; + long-range affinities",
    "fib-only": "in-domain: fib-gala train only",
    "all-domains": "all domains (FIB-SEM included)",
    "generalist": "the shipped generalist (base 16, longer)",
}


def train(name: str, out: Path, threads: int) -> None:
    """``neuropil train`` as a user runs it, one thread pool of ``threads`` per run."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "neuropil", "train", str(RECIPES / f"{name}.yaml"), "--out", str(out / name)]
    with (out / f"{name}.log").open("a") as log:
        subprocess.run([*command, "--no-progress"], env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


def test_volume() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    dataset = get_dataset("fib-gala")
    _, entry = dataset.volume("test")
    assert entry.raw is not None and entry.labels is not None
    with open_volume(dataset.address(entry.raw)) as volume:
        raw = volume.read()
    with open_volume(dataset.address(entry.labels)) as volume:
        labels = volume.read()
    return raw, labels, dataset.volume_voxel_size(entry)


def score(name: str, out: Path, run: Path | None = None) -> dict:
    run = out / name if run is None else run
    checkpoint = run / "best.pt" if (run / "best.pt").exists() else run / "checkpoint.pt"
    state = load_checkpoint(run / "checkpoint.pt")
    calibrated = float(load_checkpoint(checkpoint)["merge_threshold"])
    model = load_model(checkpoint)
    raw, labels, test_size = test_volume()
    model_size = tuple(model.config.voxel_size)
    image = resample(raw, voxel_size=test_size, target_voxel_size=model_size, kind="image")
    affinities = predict_affinities(image, model, tile_shape=None, progress=False)
    result = segment(affinities, voxel_size=model_size, thresholds=THRESHOLD_GRID)
    scores: list[Scores] = [
        evaluate(labels_on_grid(s, voxel_size=model_size, target_voxel_size=test_size, shape=labels.shape), labels)
        for s in result.segmentations
    ]
    best = int(np.argmin([s.voi for s in scores]))
    log = (run / "log.csv").read_text().splitlines()[1:]
    return {
        "name": name,
        "iterations": int(state["iteration"]),
        "minutes": float(state.get("training_seconds", 0.0)) / 60,
        "best_iteration": int(load_checkpoint(checkpoint)["iteration"]),
        "calibrated": calibrated,
        "at_calibrated": scores[THRESHOLD_GRID.index(calibrated)],
        "best": THRESHOLD_GRID[best],
        "at_best": scores[best],
        "rows": len(log),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| recipe | iterations (best) | train min | thr (val) | split | merge | ARAND | best thr | split | merge | ARAND |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        c, b = row["at_calibrated"], row["at_best"]
        lines.append(
            f"| {WHAT.get(row['name'], row['name'])} (`{row['name']}`) | {row['iterations']} ({row['best_iteration']}) | "
            f"{row['minutes']:.1f} | {row['calibrated']:.2f} | {c.voi_split:.3f} | {c.voi_merge:.3f} | "
            f"{c.arand:.3f} | {row['best']:.2f} | {b.voi_split:.3f} | {b.voi_merge:.3f} | {b.arand:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(ORDER), help=f"recipes, of {', '.join(ORDER)}")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "recipes")
    parser.add_argument(
        "--parallel",
        type=int,
        choices=range(1, 65),
        default=1,
        metavar="N",
        help="runs trained at once (one CPU thread each)",
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per run (default: cores / parallel)")
    parser.add_argument("--score-only", action="store_true", help="score the runs as they are, no training")
    parser.add_argument("--also", type=Path, nargs="*", default=[], metavar="RUN", help="other run folders to score")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(ORDER))
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    if not args.score_only:
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            list(pool.map(lambda name: train(name, args.out, threads), args.names))
    rows = [score(name, args.out) for name in args.names]
    rows += [score(run.name, args.out, run) for run in args.also]
    print(table(rows))
    print(
        f"\nfib-gala test (50x100x200 at 10 nm), mean agglomeration, VOI in bits; thr (val): calibrated on the "
        f"run's validation volumes; {time.monotonic() - start:.0f} s. "
        f"Rerun: PYTHONPATH=src python benchmarks/recipes.py --parallel 2"
    )


if __name__ == "__main__":
    main()
