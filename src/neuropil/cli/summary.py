"""The one line a command ends with: what it wrote; ``--quiet`` silences it, ``--json`` makes it JSON."""

from __future__ import annotations

import argparse
import json


def add_summary_options(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--json`` of a command that ends with a summary of what it wrote (:func:`summarize`)."""
    parser.add_argument(
        "--quiet", action="store_true", help="print nothing on success (no summary line, no progress, warnings only)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as JSON (one object per line) instead of text"
    )


def summarize(args: argparse.Namespace, line: str, **record) -> None:
    """End a command with one line of what it wrote; ``--json``: ``record`` as one JSON object; ``--quiet``: nothing.

    ``record`` holds plain values (tuples become lists, paths strings); by convention
    ``wrote`` (the address), ``shape``, ``dtype`` and ``voxel_size`` (z, y, x nm) for a volume.
    """
    if getattr(args, "json", False):
        print(json.dumps(record, default=str), flush=True)
    elif not getattr(args, "quiet", False):
        print(line, flush=True)


def talking(args: argparse.Namespace) -> bool:
    """Whether a command may print more than its summary (tables, findings): not with ``--quiet`` or ``--json``."""
    return not (getattr(args, "quiet", False) or getattr(args, "json", False))


def volume_line(what: str, address: str, shape, dtype, voxel_size) -> str:
    """``wrote affinities OUT: 3x40x362x362 float32, 25x13x13 nm (z y x)``: the summary of a written volume."""
    size = "unknown voxel size" if voxel_size is None else "x".join(f"{float(v):g}" for v in voxel_size) + " nm (z y x)"
    return f"wrote {what} {address}: {'x'.join(str(int(n)) for n in shape)} {dtype}, {size}"


def volume_record(address: str, shape, dtype, voxel_size, **more) -> dict:
    """The JSON record of :func:`summarize` for a written volume."""
    return {
        "wrote": str(address),
        "shape": [int(n) for n in shape],
        "dtype": str(dtype),
        "voxel_size": None if voxel_size is None else [float(v) for v in voxel_size],
        **more,
    }
