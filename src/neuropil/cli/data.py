"""``neuropil data list | info NAME|ADDRESS [--json] | fetch NAME``."""

from __future__ import annotations

import argparse
import json
import math

from neuropil.cli.summary import add_summary_options
from neuropil.errors import NeuropilError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="list, describe and download datasets of the catalog",
        description="The dataset catalog (built in, plus $NEUROPIL_CATALOG files). Data root: $NEUROPIL_DATA.",
    )
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    listing = commands.add_parser("list", help="the catalog's datasets, one a line")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(run=run_list)
    info = commands.add_parser("info", help="facts about a dataset or any volume address")
    info.add_argument("target", metavar="NAME|ADDRESS", help="catalog name (fib-gala) or address (file.h5:key, ...)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--no-count", action="store_true", help="skip counting label ids (reads whole label volumes)")
    add_missing_chunks_argument(info)
    info.set_defaults(run=run_info)
    fetch = commands.add_parser("fetch", help="download a dataset's files (checksums verified, resumable)")
    fetch.add_argument("name", metavar="NAME", help="catalog name of the dataset (`neuropil data list`)")
    fetch.add_argument("--dest", metavar="DIR", help="folder to download into (default: the download cache)")
    fetch.add_argument("--no-verify", action="store_true", help="download files the catalog has no checksum for")
    add_summary_options(fetch)
    fetch.set_defaults(run=run_fetch)


def add_missing_chunks_argument(parser) -> None:
    """``--allow-missing-chunks``: read zarr and N5 chunks that are not stored as the fill value."""
    parser.add_argument(
        "--allow-missing-chunks",
        action="store_true",
        help="read zarr and N5 chunks that are not stored as the array's fill value (by default a read "
        "that meets one is an error, unless neuropil wrote the array and recorded it complete)",
    )


def run_list(args: argparse.Namespace) -> int:
    from neuropil.data.catalog import load_catalog

    catalog = load_catalog()
    if args.json:
        print(
            json.dumps(
                {
                    name: {
                        "title": d.title,
                        "modality": d.modality,
                        "voxel_size": list(d.voxel_size),
                        "labels": d.labels.value,
                        "volumes": list(d.volumes),
                        "present": d.base_folder().exists(),
                    }
                    for name, d in catalog.items()
                }
            )
        )
        return 0
    print(f"{'name':<16} {'modality':<9} {'voxel size nm':<15} {'labels':<12} {'here':<5} title")
    for name, dataset in catalog.items():
        size = "x".join(f"{v:g}" for v in dataset.voxel_size)
        here = "yes" if dataset.base_folder().exists() else "no"
        print(f"{name:<16} {dataset.modality:<9} {size:<15} {dataset.labels.value:<12} {here:<5} {dataset.title}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from neuropil.data.catalog import load_catalog
    from neuropil.data.info import address_info, dataset_info
    from neuropil.io import parse_address
    from neuropil.io.volume import allowing_missing_chunks

    catalog = load_catalog()
    with allowing_missing_chunks(args.allow_missing_chunks):  # for every volume the info functions open
        if args.target in catalog:
            info = dataset_info(catalog[args.target], count_labels=not args.no_count)
        else:
            try:
                parse_address(args.target)
            except NeuropilError:
                raise NeuropilError(
                    f"'{args.target}' is neither a catalog dataset ({', '.join(sorted(catalog))}) nor a volume address"
                ) from None
            info = address_info(args.target, count_labels=not args.no_count)
    if args.json:
        print(_json(info, where=args.target))
    else:
        _print_tree(info)
    return 0


def _json(info: dict, *, where: str) -> str:
    """``info`` as JSON; a NaN or infinity (damaged metadata, which JSON cannot hold) is an error naming its key."""
    try:
        return json.dumps(info, allow_nan=False)
    except ValueError:
        found = _first_non_finite(info)
        if found is None:
            raise
        key, value = found
        raise NeuropilError(f"{where}: {key} = {value} is not finite (damaged metadata); JSON cannot hold it") from None


def _first_non_finite(value, key: str = "") -> tuple[str, object] | None:
    """The key of the first NaN or infinity in nested dicts and lists, and the value (the whole list) holding it."""
    if isinstance(value, dict):
        for name, item in value.items():
            found = _first_non_finite(item, f"{key}.{name}" if key else str(name))
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        return (key, value) if any(_first_non_finite(item, key) is not None for item in value) else None
    if isinstance(value, float) and not math.isfinite(value):
        return key, value
    return None


_SOURCE_KEYS = ("voxel_size_source", "offset_source", "voxel_size_from")
"""Keys that the voxel size and offset lines of the text output already say."""


def lengths_line(name: str, values: list | None, source: str | None) -> str:
    """``voxel size 40x4x4 nm (z y x, from the HDF5 attribute "resolution")``: a length vector and where it came from.

    ``name`` is ``voxel_size`` or ``offset``; a voxel size given to the reader (not
    stored) says ``given``; an unknown one says that the file stores none.
    """
    from neuropil.io.metadata import axis_names, lengths_text
    from neuropil.io.volume import GIVEN

    label = name.replace("_", " ")
    if not values:
        return f"{label} unknown (the file stores none)"
    origin = "given" if source == GIVEN else f"from {source}" if source else "source unknown"
    return f"{label} {lengths_text(values)} nm ({axis_names(len(values))}, {origin})"


def _print_tree(info: dict, indent: int = 0) -> None:
    for key, value in info.items():
        if key in _SOURCE_KEYS:
            continue
        if key in ("voxel_size", "offset") and (value is None or isinstance(value, list)):
            print(" " * indent + lengths_line(key, value, info.get(f"{key}_source")))
        elif isinstance(value, dict):
            print(" " * indent + f"{key}:")
            _print_tree(value, indent + 2)
        elif value not in (None, "", []):
            print(" " * indent + f"{key}: {value}")


def run_fetch(args: argparse.Namespace) -> int:
    from neuropil.data.fetch import fetch
    from neuropil.files import check_output_folder

    if args.dest is not None:
        check_output_folder(args.dest)
    from pathlib import Path

    from neuropil.cli.summary import summarize

    folder = Path(fetch(args.name, destination=args.dest, verify=not args.no_verify, progress=not args.quiet))
    files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    count = f"{len(files)} file" + ("" if len(files) == 1 else "s")
    summarize(args, f"wrote {args.name} {folder}: {count}", wrote=str(folder), files=files)
    return 0
