"""``neuropil agglomeration train --fragments F --boundaries B --gt G --out MODEL``."""

from __future__ import annotations

import argparse
import logging

from neuropil.cli.summary import add_summary_options

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("agglomeration", help="train a learned (gala-style) merge classifier")
    commands = parser.add_subparsers(dest="agglomeration_command", required=True, metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train a merge classifier by agglomerating fragments against ground truth",
        description=(
            "Train a merge classifier; the model is written as an .npz file (no pickle). It carries the merge "
            "threshold of lowest VOI on the training volume (0.05, 0.10, ..., 0.95), which `neuropil segment "
            "--method learned` uses when given no --threshold."
        ),
    )
    train.add_argument("--fragments", required=True, metavar="F", help="address of the fragments")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--boundaries", metavar="B", help="address of a boundary map (1 = boundary)")
    source.add_argument("--affinities", metavar="A", help="address of (c, z, y, x) affinities (1 = same object)")
    train.add_argument("--gt", required=True, metavar="G", help="address of the ground truth (0 = unknown)")
    train.add_argument("--image", metavar="I", help="address of the raw image: an optional second channel of features")
    train.add_argument("--out", required=True, metavar="MODEL", help="file to write the classifier to (.npz)")
    train.add_argument(
        "--epochs", type=int, default=5, help="agglomeration passes against the ground truth (default: 5)"
    )
    train.add_argument("--trees", type=int, default=100, help="trees of the forest (default: 100)")
    train.add_argument("--seed", type=int, default=0, help="seed of the forest (default: 0)")
    add_summary_options(train)
    train.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    from neuropil.evaluate import THRESHOLD_GRID, best_threshold, evaluate
    from neuropil.files import check_output_file
    from neuropil.io import read_volume
    from neuropil.segment import agglomerate
    from neuropil.segment.learned import train

    check_output_file(args.out)
    volume = read_volume(args.boundaries or args.affinities)
    fragments, ground_truth = read_volume(args.fragments), read_volume(args.gt)
    image = read_volume(args.image) if args.image else None
    model = train(
        volume,
        fragments,
        ground_truth,
        image=image,
        epochs=args.epochs,
        n_estimators=args.trees,
        random_state=args.seed,
    )
    # the threshold is chosen on the training volume, as benchmarks/agglomeration.py does
    segmented = agglomerate(volume, fragments, method="learned", thresholds=THRESHOLD_GRID, model=model, image=image)
    threshold = best_threshold([[evaluate(s, ground_truth) for s in segmented]], THRESHOLD_GRID)
    logger.info("merge threshold %g: lowest VOI on the training volume", threshold)
    dataclasses.replace(model, merge_threshold=threshold).save(args.out)
    from neuropil.cli.summary import summarize

    summarize(
        args,
        f"wrote classifier {args.out}: merge threshold {threshold:g} (lowest VOI on the training volume)",
        wrote=str(args.out),
        merge_threshold=float(threshold),
    )
    return 0
