"""``neuropil segment AFFS_OR_BOUNDARIES OUT [--fragments F] --method M [--model M] [--threshold T ...] [--voxel-size Z Y X]``."""

from __future__ import annotations

import argparse
import logging

from neuropil.cli.data import add_missing_chunks_argument
from neuropil.cli.predict import add_blockwise_arguments, refuse_blockwise_ome_zarr
from neuropil.cli.summary import add_summary_options

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
"""The merge threshold without --threshold when neither the input nor the classifier carries one."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="agglomerate fragments into segments (mean, quantile, learned or mutex)",
        description=(
            "Segment a volume. A 3-D input is a boundary map (1 = boundary); a 4-D (c, z, y, x) input is "
            "affinities (1 = same object), channels 0-2 the nearest neighbours (the watershed and the greedy "
            "methods use these; mutex also the long-range channels whose offsets are stored on the input). "
            "Fragments come from --fragments or a watershed."
        ),
    )
    parser.add_argument("input", metavar="AFFS_OR_BOUNDARIES", help="address of affinities or a boundary map")
    parser.add_argument(
        "output",
        metavar="OUT",
        help="output address (name.ome.zarr or name.ome.zarr/key: a multiscale OME-Zarr label image that viewers "
        "read); with several thresholds, each goes to OUT with _t<threshold> added to the key or name",
    )
    parser.add_argument("--fragments", metavar="F", help="address of fragments (default: watershed of the input)")
    parser.add_argument(
        "--method",
        default="mean",
        choices=("learned", "mean", "quantile", "mutex"),
        help="agglomeration: mean or a quantile of the affinities between fragments, a learned classifier "
        "(--model), or the mutex watershed (default: mean)",
    )
    parser.add_argument("--model", metavar="M", help="merge classifier from `neuropil agglomeration train`")
    parser.add_argument("--image", metavar="I", help="address of the raw image, for a classifier trained with one")
    parser.add_argument(
        "--threshold",
        type=float,
        nargs="+",
        metavar="T",
        help="merge thresholds in [0, 1]; a higher threshold merges more (two segments merge while their score, "
        "1 - mean affinity for mean, is below it), so 0.9 gives few large segments and 0.1 many small ones "
        "(default: the classifier's with --method learned, else the calibrated one stored on affinities from "
        "`neuropil predict` with --method mean, else 0.5)",
    )
    parser.add_argument("--quantile", type=int, default=50, help="percentile of the quantile method (default: 50)")
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
        help="voxel size of the input in nm, z y x, where its file stores none (it is written on every output)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (with --block)")
    add_blockwise_arguments(parser, workers_default="one per core")
    add_missing_chunks_argument(parser)
    add_summary_options(parser)
    parser.set_defaults(run=run)


def output_addresses(output: str, thresholds: list[float]) -> list[str]:
    """One address per threshold: OUT itself for one, else OUT with ``_t<threshold>`` added."""
    if len(thresholds) == 1:
        return [output]
    from neuropil.io import parse_address
    from neuropil.io.zarr import OME_ZARR_SUFFIX

    address = parse_address(output)
    if address.key is not None:
        return [f"{output}_t{t:g}" for t in thresholds]
    path = str(address.path)
    if path.lower().endswith(OME_ZARR_SUFFIX):  # name_t0.5.ome.zarr: still OME-Zarr
        stem, suffix = path[: -len(OME_ZARR_SUFFIX)], path[-len(OME_ZARR_SUFFIX) + 1 :]
        return [f"{stem}_t{t:g}.{suffix}" for t in thresholds]
    stem, dot, suffix = path.rpartition(".")
    return [f"{stem}_t{t:g}.{suffix}" if dot else f"{output}_t{t:g}" for t in thresholds]


def default_threshold(method: str, model, attributes: dict, source: str) -> float:
    """The merge threshold without --threshold: the classifier's (learned), the input's calibrated one (mean), or 0.5.

    ``attributes`` are the input's (:attr:`neuropil.io.Volume.attributes`); ``neuropil
    predict`` stores the checkpoint's calibrated threshold there
    (:func:`neuropil.predict.prediction_attributes`). Each choice is logged.
    """
    if method == "learned":
        if model.merge_threshold is not None:
            logger.info("merge threshold %g: the classifier's, chosen on its training volume", model.merge_threshold)
            return float(model.merge_threshold)
        logger.info("merge threshold %g (default): the classifier carries none", DEFAULT_THRESHOLD)
        return DEFAULT_THRESHOLD
    described = attributes.get("neuropil")
    stored = described.get("merge_threshold") if isinstance(described, dict) else None
    if stored is None:
        logger.info("merge threshold %g (default): %s stores no calibrated threshold", DEFAULT_THRESHOLD, source)
        return DEFAULT_THRESHOLD
    if method != "mean":
        logger.info(
            "merge threshold %g (default): the threshold stored on %s (%g) is calibrated for --method mean, not %s",
            DEFAULT_THRESHOLD,
            source,
            stored,
            method,
        )
        return DEFAULT_THRESHOLD
    logger.info("merge threshold %g: calibrated on the model's validation volumes, stored on %s", stored, source)
    return float(stored)


def run(args: argparse.Namespace) -> int:
    import numpy

    from neuropil.cli import check_output_volume
    from neuropil.errors import NeuropilError
    from neuropil.io import open_volume, parse_address, read_volume, write_volume
    from neuropil.io.zarr import is_ome_zarr
    from neuropil.segment import segment
    from neuropil.segment.learned import MergeClassifier

    # before any work: OUT itself without --threshold (one threshold, chosen below)
    if args.block:
        refuse_blockwise_ome_zarr(args.output)
    for output in output_addresses(args.output, args.threshold or [DEFAULT_THRESHOLD]):
        check_output_volume(output)
    model = None
    if args.method == "learned":
        if not args.model:
            raise NeuropilError("--method learned needs --model (from `neuropil agglomeration train`)")
        model = MergeClassifier.load(args.model)
    allow = args.allow_missing_chunks
    thresholds = args.threshold
    if thresholds is None:
        with open_volume(args.input) as volume:
            attributes = volume.attributes
        thresholds = [default_threshold(args.method, model, attributes, args.input)]
    outputs = output_addresses(args.output, thresholds)
    if args.block:
        from neuropil.blockwise import segment_blockwise

        addresses = segment_blockwise(
            args.input,
            outputs,
            thresholds=thresholds,
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
            allow_missing_chunks=allow,
        )
        for address, threshold in zip(addresses, thresholds):
            with open_volume(address) as volume:
                count = (volume.attributes.get("neuropil") or {}).get("segments")
                report_segmentation(args, address, threshold, count, volume.shape, volume.voxel_size)
        return 0
    with open_volume(args.input, voxel_size=args.voxel_size, allow_missing_chunks=allow) as volume:
        values = volume.read()
        voxel_size = volume.voxel_size
        attributes = volume.attributes
    if voxel_size is None and not args.fragments:
        raise NeuropilError(f"{args.input}: the file stores no voxel size; give --voxel-size Z Y X (nm)")
    if voxel_size is None and is_ome_zarr(parse_address(args.output)):
        raise NeuropilError(
            f"{args.input}: the file stores no voxel size, which OME-Zarr output needs; give --voxel-size"
        )
    if voxel_size is not None:
        voxel_size = voxel_size[-3:]
    result = segment(
        values,
        voxel_size=voxel_size,
        thresholds=thresholds,
        method=args.method,
        fragment_ids=read_volume(args.fragments, allow_missing_chunks=allow) if args.fragments else None,
        quantile=args.quantile,
        model=model,
        image=read_volume(args.image, allow_missing_chunks=allow) if args.image else None,
        offsets=long_range_offsets(args.method, values, attributes, args.input),
        flood_threshold=args.flood_threshold,
    )
    for address, threshold, segmentation in zip(outputs, thresholds, result.segmentations):
        written = write_volume(address, segmentation, voxel_size=voxel_size, labels=True)
        count = len(numpy.unique(segmentation[segmentation > 0]))
        report_segmentation(args, str(written), threshold, count, segmentation.shape, voxel_size)
    return 0


def report_segmentation(args: argparse.Namespace, address: str, threshold: float, count, shape, voxel_size) -> None:
    """The summary line of one written segmentation: its segments, threshold, address, shape and voxel size."""
    from neuropil.cli.summary import summarize, volume_line, volume_record

    segments = "" if count is None else f"{count} segments at "
    summarize(
        args,
        f"{segments}threshold {threshold:g}: " + volume_line("segmentation", address, shape, "uint64", voxel_size),
        **volume_record(address, shape, "uint64", voxel_size, threshold=float(threshold), segments=count),
    )


def long_range_offsets(method: str, values, attributes: dict, where: str) -> list | None:
    """The offsets of every channel, stored by ``neuropil predict``, for the mutex method's long-range repulsion.

    None (the nearest neighbours alone) for other methods, for three channels, or when the
    input stores no offsets.
    """
    if method != "mutex" or values.ndim != 4 or values.shape[0] <= 3:
        return None
    stored = (attributes.get("neuropil") or {}).get("offsets") if isinstance(attributes, dict) else None
    if stored is None:
        logger.info(
            "%s: %d channels but no offsets stored; the mutex uses the nearest neighbours", where, values.shape[0]
        )
        return None
    logger.info("%s: the mutex uses all %d channels (offsets %s)", where, values.shape[0], stored)
    return [tuple(int(v) for v in offset) for offset in stored]
