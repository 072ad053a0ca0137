"""``neuropil view ADDRESS... [--voxel-size Z Y X] [--port P] [--bind ADDRESS]``."""

from __future__ import annotations

import argparse

from neuropil.cli.data import add_missing_chunks_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "view",
        help="show volumes in a local neuroglancer viewer (raw, segmentations, affinities)",
        description=(
            "Serve a neuroglancer viewer of the volumes on this machine and print its URL; open it in a "
            "browser. Each volume is a layer named by its key (or file name): 3-D uint8, uint16 or float "
            "volumes as images, 3-D uint32, uint64 or signed integer volumes as segmentations, 4-D (c, z, y, x) "
            "volumes as affinities in RGB (channels 0-2), each at its voxel size. Chunks are read from the "
            "files as the viewer asks for them, so volumes larger than memory can be shown. Serves until Ctrl-C."
        ),
    )
    parser.add_argument(
        "addresses", metavar="ADDRESS", nargs="+", help="volume addresses (file.h5:key, dir.zarr/key, ...)"
    )
    parser.add_argument(
        "--voxel-size",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="voxel size in nm, z y x, of the volumes whose file stores none",
    )
    parser.add_argument("--port", type=int, default=0, metavar="P", help="port to serve on (default: a free one)")
    parser.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 serves every network)",
    )
    add_missing_chunks_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from neuropil.errors import NeuropilError
    from neuropil.view import serve

    if not 0 <= args.port <= 65535:
        raise NeuropilError(f"--port must be in 0-65535, got {args.port}")

    def announce(viewer) -> None:
        print(viewer.get_viewer_url(), flush=True)

    serve(
        args.addresses,
        voxel_size=args.voxel_size,
        bind_address=args.bind,
        port=args.port,
        allow_missing_chunks=args.allow_missing_chunks,
        started=announce,
    )
    return 0
