"""``neuropil evaluate SEG GT [--mask M] [--objects N] [--json]``."""

from __future__ import annotations

import argparse
import json

from neuropil.cli.data import add_missing_chunks_argument
from neuropil.errors import NeuropilError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a segmentation against ground truth (VOI split/merge, adapted Rand)",
        description="Score SEG against GT. Voxels where GT is 0, or outside --mask, are not scored: "
        "for partial labels (e.g. dendrites only) give unlabelled voxels 0, and a segment is a merge "
        "only for the labelled objects it joins.",
    )
    parser.add_argument("segmentation", metavar="SEG", help="segmentation address (file.h5:key, dir.zarr/key, ...)")
    parser.add_argument("ground_truth", metavar="GT", help="ground-truth address")
    parser.add_argument("--mask", metavar="M", help="address of a mask; only voxels where it is non-zero are scored")
    parser.add_argument(
        "--objects",
        metavar="N",
        type=int,
        help="also list the N ground-truth objects split most and the N segments merging most, "
        "with their shares of VOI split and merge in bits",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_missing_chunks_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neuropil.evaluate import evaluate, object_errors
    from neuropil.io import read_volume

    if args.objects is not None and args.objects < 1:
        raise NeuropilError(f"--objects must be >= 1, got {args.objects}")
    allow = args.allow_missing_chunks
    segmentation = read_volume(args.segmentation, allow_missing_chunks=allow)
    ground_truth = read_volume(args.ground_truth, allow_missing_chunks=allow)
    mask = read_volume(args.mask, allow_missing_chunks=allow) if args.mask else None
    scores = evaluate(segmentation, ground_truth, mask=mask)
    errors = None if args.objects is None else object_errors(segmentation, ground_truth, mask=mask, top=args.objects)
    if args.json:
        result = scores.as_dict()
        if errors is not None:
            listed = errors.as_dict()
            result = {**result, "worst_splits": listed["splits"], "worst_merges": listed["merges"]}
        print(json.dumps(result))
        return 0
    print(f"VOI split  {scores.voi_split:.4f}")
    print(f"VOI merge  {scores.voi_merge:.4f}")
    print(f"ARAND      {scores.arand:.4f}")
    print(f"CREMI      {scores.cremi_score:.4f}")
    if errors is not None:
        print()
        print(f"Worst splits ({len(errors.splits)} of {errors.n_split} objects in more than one segment)")
        if errors.splits:
            print(f"  {'object':>12} {'voxels':>10} {'segments':>8} {'bits':>8}")
        for split in errors.splits:
            print(f"  {split.gt_id:>12} {split.size:>10} {split.n_segments:>8} {split.bits:>8.4f}")
        print()
        print(f"Worst merges ({len(errors.merges)} of {errors.n_merging} segments joining more than one object)")
        if errors.merges:
            print(f"  {'segment':>12} {'voxels':>10} {'objects':>8} {'bits':>8}  joined objects")
        for merge in errors.merges:
            joined = ", ".join(str(gt_id) for gt_id in merge.gt_ids)
            if merge.n_objects > len(merge.gt_ids):
                joined += f", ... ({merge.n_objects - len(merge.gt_ids)} more)"
            print(f"  {merge.segment_id:>12} {merge.size:>10} {merge.n_objects:>8} {merge.bits:>8.4f}  {joined}")
    return 0
