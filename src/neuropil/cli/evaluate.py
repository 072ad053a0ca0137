"""``neuropil evaluate SEG GT [--mask M] [--json]``."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a segmentation against ground truth (VOI split/merge, adapted Rand)",
        description="Score SEG against GT. Voxels where GT is 0, or outside --mask, are not scored.",
    )
    parser.add_argument("segmentation", metavar="SEG", help="segmentation address (file.h5:key, dir.zarr/key, ...)")
    parser.add_argument("ground_truth", metavar="GT", help="ground-truth address")
    parser.add_argument("--mask", metavar="M", help="address of a mask; only voxels where it is non-zero are scored")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neuropil.evaluate import evaluate
    from neuropil.io import read_volume

    segmentation = read_volume(args.segmentation)
    ground_truth = read_volume(args.ground_truth)
    mask = read_volume(args.mask) if args.mask else None
    scores = evaluate(segmentation, ground_truth, mask=mask)
    if args.json:
        print(json.dumps(scores.as_dict()))
    else:
        print(f"VOI split  {scores.voi_split:.4f}")
        print(f"VOI merge  {scores.voi_merge:.4f}")
        print(f"ARAND      {scores.arand:.4f}")
        print(f"CREMI      {scores.cremi_score:.4f}")
    return 0
