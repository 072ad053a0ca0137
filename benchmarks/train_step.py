"""What loading and augmenting batches add to a training step, made in the training process or in workers.

Usage: python benchmarks/train_step.py [--iterations N] [--rounds R] [--threads T] [--patch Z Y X]

The configs' small network (base 8, depth 4, batch 2, 16x64x64 patches at 25x13x13 nm) on two
synthetic domains, one whose label 0 is thin boundaries (cremi-like) and one with extracellular
space (cryo-ecs), with every default augmentation. Rows:

- model step alone: forward, loss, backward and Adam on batches made beforehand;
- ``train``, workers 0: the trainer's loop, each batch sampled, augmented and given its targets
  in the training process before its step;
- ``train``, workers 1 and 2: the same loop with batches made ahead in worker processes.

Per-step times are medians over the steps of ``--rounds`` interleaved rounds (each variant once
per round, so other work on the machine slows each alike); the last column is the ratio to the
model step alone. The goal: loading and augmentation add less than 10 %.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neuropil.data.synth import synthetic_volume
from neuropil.model import ModelConfig
from neuropil.train import TrainConfig, Trainer

VOXEL = (25.0, 13.0, 13.0)


def domains(patch: tuple[int, int, int]):
    shape = (patch[0] + 16, patch[1] + 64, patch[2] + 64)
    return {
        name: [synthetic_volume(name, shape=shape, target_voxel_size=VOXEL, seed=seed) for seed in (0, 1)]
        for name in ("cremi-like", "cryo-ecs")
    }


def trainer(folder: Path, volumes, patch, iterations: int, workers: int) -> Trainer:
    return Trainer(
        volumes,
        out_dir=folder,
        model_config=ModelConfig(base_channels=8, depth=4, normalization="batch", voxel_size=VOXEL),
        train_config=TrainConfig(
            iterations=iterations,
            patch_shape=patch,
            batch_size=2,
            checkpoint_every=10**6,
            validation=False,
            workers=workers,
        ),
    )


def model_alone(run: Trainer, iterations: int) -> list[float]:
    """Milliseconds of steps on batches made beforehand (8, used in turn)."""
    made = [run.batch_maker(index) for index in range(8)]
    run.step(made[0])  # warm-up
    times = []
    for index in range(iterations):
        start = time.perf_counter()
        run.step(made[index % len(made)])
        times.append((time.perf_counter() - start) * 1e3)
    return times


def trained(run: Trainer) -> list[float]:
    """Milliseconds per step of the trainer's loop, from its log (batch size / samples per second)."""
    run.train(progress=False)
    rows = (run.out_dir / "log.csv").read_text().splitlines()[1:]
    return [2e3 / float(row.split(",")[4]) for row in rows[1:]]  # the first step warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40, help="steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads of the step")
    parser.add_argument("--patch", type=int, nargs=3, default=(16, 64, 64), metavar=("Z", "Y", "X"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    patch = tuple(args.patch)
    volumes = domains(patch)
    names = ("model step alone", "train, workers 0", "train, workers 1", "train, workers 2")
    times: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            base = Path(folder) / str(round_)
            times[names[0]] += model_alone(trainer(base / "alone", volumes, patch, args.iterations, 0), args.iterations)
            for workers in (0, 1, 2):
                run = trainer(base / f"w{workers}", volumes, patch, args.iterations + 1, workers)
                times[names[1 + workers]] += trained(run)
    alone = float(np.median(times[names[0]]))
    print(
        f"| {'x'.join(map(str, patch))}, batch 2, {args.threads} torch thread(s) | ms per step (median) | vs model alone |"
    )
    print("|---|---|---|")
    for name in names:
        median = float(np.median(times[name]))
        print(f"| {name} | {median:.1f} | {median / alone:.3f} |")
    print(
        f"\n{args.rounds} rounds x {args.iterations} steps per variant. Rerun: "
        f"PYTHONPATH=src python benchmarks/train_step.py --threads {args.threads}"
    )


if __name__ == "__main__":
    main()
