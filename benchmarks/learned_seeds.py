"""Learned agglomeration over forest seeds: test VOI at the train-chosen and at the best threshold.

The same protocol as ``benchmarks/agglomeration.py`` (train on the train volume, choose the
threshold by VOI on it, score the test volume), repeated for each seed of the forest, on
fib-gala with and without the image channel (with the shipped fragments, and with fragments
from neuropil's watershed of the same p1 maps) and on snemi-mini. One table.

    PYTHONPATH=src python benchmarks/learned_seeds.py [--data ../shared/data] [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from agglomeration import THRESHOLDS, fib_gala, own_fragments, snemi_mini
from neuropil.evaluate import evaluate
from neuropil.segment import agglomerate
from neuropil.segment.learned import train


def voi_curve(model, part, image):
    segmentations = agglomerate(
        part["boundaries"],
        part["fragments"],
        method="learned",
        model=model,
        image=part["image"] if image else None,
        thresholds=THRESHOLDS,
    )
    return np.array([evaluate(s, part["gt"]).voi for s in segmentations])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    cases = [
        ("fib-gala", "learned + image", fib_gala(args.data / "fib-gala"), True),
        ("fib-gala", "learned", fib_gala(args.data / "fib-gala"), False),
        ("fib-gala, own fragments", "learned + image", own_fragments(fib_gala(args.data / "fib-gala")), True),
        ("fib-gala, own fragments", "learned", own_fragments(fib_gala(args.data / "fib-gala")), False),
        ("snemi-mini", "learned", snemi_mini(args.data / "snemi-mini"), False),
    ]
    print("| data | method | seed | thr (train) | VOI | best thr | VOI |")
    print("|---|---|---|---|---|---|---|")
    for data, method, (train_part, test_part), image in cases:
        chosen_vois, best_vois = [], []
        for seed in args.seeds:
            model = train(
                train_part["boundaries"],
                train_part["fragments"],
                train_part["gt"],
                image=train_part["image"] if image else None,
                random_state=seed,
            )
            chosen = int(np.argmin(voi_curve(model, train_part, image)))
            on_test = voi_curve(model, test_part, image)
            best = int(np.argmin(on_test))
            chosen_vois.append(on_test[chosen])
            best_vois.append(on_test[best])
            print(
                f"| {data} | {method} | {seed} | {THRESHOLDS[chosen]:.2f} | {on_test[chosen]:.3f} "
                f"| {THRESHOLDS[best]:.2f} | {on_test[best]:.3f} |",
                flush=True,
            )
        print(f"| {data} | {method} | mean | | {np.mean(chosen_vois):.3f} | | {np.mean(best_vois):.3f} |", flush=True)


if __name__ == "__main__":
    main()
