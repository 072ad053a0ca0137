"""``neuropil segment AFFS_OR_BOUNDARIES OUT [--fragments F] --method M [--model M] [--threshold T ...] [--voxel-size Z Y X]``."""

from __future__ import annotations

import argparse

from neuropil.cli.predict import add_blockwise_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="agglomerate fragments into segments (mean, quantile, learned or mutex)",
        description=(
            "Segment a volume. A 3-D input is a boundary map (1 = boundary); a 4-D (c, z, y, x) input is "
            "nearest-neighbour affinities (1 = same object). Fragments come from --fragments or a watershed."
        ),
    )
    parser.add_argument("input", metavar="AFFS_OR_BOUNDARIES", help="address of affinities or a boundary map")
    parser.add_argument(
        "output",
        metavar="OUT",
        help="output address; with several thresholds, each goes to OUT with _t<threshold> added to the key or name",
    )
    parser.add_argument("--fragments", metavar="F", help="address of fragments (default: watershed of the input)")
    parser.add_argument("--method", default="mean", choices=("learned", "mean", "quantile", "mutex"))
    parser.add_argument("--model", metavar="M", help="merge classifier from `neuropil agglomeration train`")
    parser.add_argument("--image", metavar="I", help="address of the raw image, for a classifier trained with one")
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.5], metavar="T", help="merge thresholds")
    parser.add_argument("--quantile", type=int, default=50, help="percentile of the quantile method")
    parser.add_argument(
        "--flood-threshold",
        type=float,
        metavar="A",
        help="the watershed (without --fragments) floods only affinities above A "
        "(default: 0.5 for affinities, 0 = any positive affinity for a boundary map)",
    )
    parser.add_argument(
        "--voxel-size",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="voxel size of the input in nm, where its file stores none (it is written on every output)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (with --block)")
    add_blockwise_arguments(parser, workers_default="one per core")
    parser.set_defaults(run=run)


def output_addresses(output: str, thresholds: list[float]) -> list[str]:
    """One address per threshold: OUT itself for one, else OUT with ``_t<threshold>`` added."""
    if len(thresholds) == 1:
        return [output]
    from neuropil.io import parse_address

    address = parse_address(output)
    if address.key is not None:
        return [f"{output}_t{t:g}" for t in thresholds]
    stem, dot, suffix = str(address.path).rpartition(".")
    return [f"{stem}_t{t:g}.{suffix}" if dot else f"{output}_t{t:g}" for t in thresholds]


def run(args: argparse.Namespace) -> int:
    from neuropil.errors import NeuropilError
    from neuropil.io import open_volume, read_volume, write_volume
    from neuropil.segment import segment
    from neuropil.segment.learned import MergeClassifier

    model = None
    if args.method == "learned":
        if not args.model:
            raise NeuropilError("--method learned needs --model (from `neuropil agglomeration train`)")
        model = MergeClassifier.load(args.model)
    outputs = output_addresses(args.output, args.threshold)
    if args.block:
        from neuropil.blockwise import segment_blockwise

        segment_blockwise(
            args.input,
            outputs,
            thresholds=args.threshold,
            voxel_size=args.voxel_size,
            fragments=args.fragments,
            method=args.method,
            quantile=args.quantile,
            model=model,
            image=args.image,
            block_shape=args.block,
            flood_threshold=args.flood_threshold,
            scheduler=args.scheduler,
            num_workers=args.workers,
            progress=not args.no_progress,
        )
        return 0
    with open_volume(args.input, voxel_size=args.voxel_size) as volume:
        values = volume.read()
        voxel_size = volume.voxel_size
    if voxel_size is None and not args.fragments:
        raise NeuropilError(f"{args.input}: the file stores no voxel size; give --voxel-size Z Y X (nm)")
    if voxel_size is not None:
        voxel_size = voxel_size[-3:]
    result = segment(
        values,
        voxel_size=voxel_size,
        thresholds=args.threshold,
        method=args.method,
        fragment_ids=read_volume(args.fragments) if args.fragments else None,
        quantile=args.quantile,
        model=model,
        image=read_volume(args.image) if args.image else None,
        flood_threshold=args.flood_threshold,
    )
    for address, segmentation in zip(outputs, result.segmentations):
        write_volume(address, segmentation, voxel_size=voxel_size)
    return 0
