"""``neuropil predict CHECKPOINT|MODEL RAW OUT [--voxel-size Z Y X] [--tile Z Y X] [--memory GIB] [--block Z Y X]``."""

from __future__ import annotations

import argparse

from neuropil.cli.summary import add_summary_options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict affinities of a volume with a trained checkpoint",
        description=(
            "Predict affinities (c, z, y, x; 1 = same object; one channel per model offset, the nearest "
            "neighbours first) of RAW with CHECKPOINT and "
            "write them as float32 to OUT at the model's voxel size (stored in OUT). RAW is rescaled to the "
            "model's voxel size when its own (from the file, the catalog or --voxel-size) differs. OUT's "
            "'neuropil' attribute holds the offsets and the merge threshold calibrated on the run's validation "
            "volumes (when the checkpoint carries one), which `neuropil segment` uses when given no --threshold."
        ),
    )
    parser.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="checkpoint.pt or best.pt from `neuropil train`, or a shipped model's name (`neuropil models`)",
    )
    parser.add_argument(
        "raw", metavar="RAW", help="raw volume address (file.h5:key, dir.zarr/key, .tif, folder) or catalog name"
    )
    parser.add_argument(
        "output",
        metavar="OUT",
        help="output address (file.h5:key, dir.zarr/key, .tif; name.ome.zarr or name.ome.zarr/key: a multiscale "
        "OME-Zarr image that viewers read)",
    )
    parser.add_argument(
        "--voxel-size",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="voxel size of RAW in nm, z y x, where its file and the catalog give none",
    )
    parser.add_argument(
        "--tile",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="voxels kept per prediction tile, z y x (default: chosen from --memory: one pass over the whole "
        "volume when it fits, else the tiles that compute the fewest voxels; each tile also reads the model's "
        "context around it)",
    )
    parser.add_argument(
        "--memory",
        type=float,
        metavar="GIB",
        help="GiB one prediction pass may use (default: a quarter of the available memory, at most 8, on the "
        "CPU; half the free memory on a GPU); larger passes waste less on context",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_blockwise_arguments(parser, workers_default="1")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_summary_options(parser)
    parser.set_defaults(run=run)


def add_blockwise_arguments(parser, *, workers_default: str) -> None:
    """The options of blockwise (larger than memory, resumable, Dask) processing."""
    parser.add_argument(
        "--block",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="process block by block (voxels z y x per block) with Dask into a zarr OUT (dir.zarr/key): volumes "
        "larger than memory; an interrupted run resumes when run again",
    )
    parser.add_argument(
        "--workers", type=int, metavar="N", help=f"Dask workers with --block (default: {workers_default})"
    )
    parser.add_argument(
        "--scheduler",
        choices=("threads", "processes", "synchronous"),
        help="Dask scheduler with --block (default: a running dask.distributed client, else the stage's own)",
    )


def refuse_blockwise_ome_zarr(output: str) -> None:
    """Raise for an OME-Zarr ``output`` with --block: blockwise jobs write one plain zarr array.

    Raises
    ------
    NeuropilError
        When ``output`` names OME-Zarr (``*.ome.zarr``).
    """
    from neuropil.errors import NeuropilError
    from neuropil.io import parse_address
    from neuropil.io.zarr import is_ome_zarr

    if is_ome_zarr(parse_address(output)):
        raise NeuropilError(
            f"{output}: --block writes a plain zarr array, not OME-Zarr; drop --block or write to dir.zarr/key"
        )


def run(args: argparse.Namespace) -> int:
    from neuropil.cli import check_output_volume
    from neuropil.model import check_device
    from neuropil.predict import predict_file

    check_device(args.device)
    if args.memory is not None and not args.memory > 0:
        from neuropil.errors import NeuropilError

        raise NeuropilError(f"--memory must be a positive number of GiB, not {args.memory:g}")
    if args.block:
        refuse_blockwise_ome_zarr(args.output)
    check_output_volume(args.output)
    if args.block:
        from neuropil.blockwise import predict_blockwise

        written = predict_blockwise(
            args.checkpoint,
            args.raw,
            args.output,
            block_shape=args.block,
            voxel_size=args.voxel_size,
            device=args.device,
            scheduler=args.scheduler,
            num_workers=args.workers or 1,
            progress=not args.no_progress,
        )
        report_prediction(args, written)
        return 0
    written = predict_file(
        args.checkpoint,
        args.raw,
        args.output,
        voxel_size=args.voxel_size,
        tile_shape=args.tile,
        memory=None if args.memory is None else int(args.memory * 2**30),
        device=args.device,
        progress=not args.no_progress,
    )
    report_prediction(args, written)
    return 0


def report_prediction(args: argparse.Namespace, written) -> None:
    from neuropil.cli.summary import summarize, volume_line, volume_record

    rescaled = tuple(written.input_voxel_size) != tuple(written.voxel_size)
    line = volume_line("affinities", written.address, written.shape, "float32", written.voxel_size)
    if rescaled:
        line += f" (the input's {'x'.join(f'{v:g}' for v in written.input_voxel_size)} nm rescaled)"
    summarize(
        args,
        line,
        **volume_record(
            written.address,
            written.shape,
            "float32",
            written.voxel_size,
            input_voxel_size=[float(v) for v in written.input_voxel_size],
        ),
    )
