"""``neuropil evaluate SEG... GT [--mask M] [--objects N] [--json]``.

The ground truth (and mask) are read and prepared once (:class:`neuropil.evaluate.GroundTruth`);
each segmentation is then read and scored in turn. Each segmentation gives one row of scores
(:data:`COLUMNS`); one segmentation named by an array address prints its scores one a line,
several (or the arrays of a group) one table or, with ``--json``, one JSON object a line.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neuropil.cli.data import add_missing_chunks_argument
from neuropil.errors import NeuropilError

if TYPE_CHECKING:
    from neuropil.evaluate import GroundTruth, ObjectErrors

COLUMNS: tuple[tuple[str, str], ...] = (
    ("VOI split", "voi_split"),
    ("VOI merge", "voi_merge"),
    ("ARAND", "arand"),
    ("CREMI", "cremi_score"),
)
"""The scores printed as text, in order: (header, key of :attr:`Row.scores`)."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score segmentations against ground truth (VOI split/merge, adapted Rand)",
        description="Score each SEG against GT, which is read once. Voxels where GT is 0, or outside --mask, "
        "are not scored: for partial labels (e.g. dendrites only) give unlabelled voxels 0, and a segment is "
        "a merge only for the labelled objects it joins. A SEG that names an HDF5 or zarr group scores every "
        "integer array in it of GT's shape, in the order of their names (GT and the mask left out). One "
        "segmentation prints its scores one a line; several print one table, one row each.",
    )
    parser.add_argument(
        "segmentations",
        metavar="SEG",
        nargs="+",
        help="segmentation address (file.h5:key, dir.zarr/key, ...) or the address of a group of them "
        "(file.h5, file.h5:group, dir.zarr, dir.zarr/group)",
    )
    parser.add_argument("ground_truth", metavar="GT", help="ground-truth address")
    parser.add_argument("--mask", metavar="M", help="address of a mask; only voxels where it is non-zero are scored")
    parser.add_argument(
        "--objects",
        metavar="N",
        type=int,
        help="also list the N ground-truth objects split most and the N segments merging most, "
        "with their shares of VOI split and merge in bits",
    )
    parser.add_argument(
        "--erl",
        action="store_true",
        help="also the expected run length (ERL, nm) and normalised ERL (NERL: ERL / ERL of GT itself) on skeletons "
        "of GT (kimimaro, at GT's voxel size, made once): a skeleton edge is wrong where its ends are in different "
        "segments or in 0, or its segment also covers another skeleton (a merge)",
    )
    parser.add_argument(
        "--voxel-size",
        type=float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="voxel size of GT in nm, z y x, where its file stores none (for --erl)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per segmentation, one a line")
    add_missing_chunks_argument(parser)
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Row:
    """The scores of one segmentation."""

    name: str
    """Its address."""
    scores: dict[str, Any]
    """Every score by name (those of :data:`COLUMNS` among them), as ``--json`` prints them."""
    errors: ObjectErrors | None = None
    """The objects it splits and the segments merging most, with ``--objects``."""


def run(args: argparse.Namespace) -> int:
    from neuropil.evaluate import GroundTruth
    from neuropil.io import read_volume

    if args.objects is not None and args.objects < 1:
        raise NeuropilError(f"--objects must be >= 1, got {args.objects}")
    allow = args.allow_missing_chunks
    found = [_array_or_group(address, allow) for address in args.segmentations]
    gt_shape = _shape(args.ground_truth, allow)
    names = _segmentation_names(args, found, gt_shape)
    several = len(args.segmentations) > 1 or not isinstance(found[0], tuple)

    labels = read_volume(args.ground_truth, allow_missing_chunks=allow)
    mask = read_volume(args.mask, allow_missing_chunks=allow) if args.mask else None
    truth = GroundTruth(labels, mask=mask)
    columns, skeletons = COLUMNS, None
    if args.erl:
        from neuropil.io import open_volume
        from neuropil.skeletons import skeletonize

        with open_volume(args.ground_truth, voxel_size=args.voxel_size, allow_missing_chunks=allow) as volume:
            voxel_size = volume.voxel_size
        if voxel_size is None:
            raise NeuropilError(f"{args.ground_truth}: the file stores no voxel size; give --voxel-size Z Y X (nm)")
        skeletons = skeletonize(labels, voxel_size=voxel_size[-3:], mask=mask)
        columns = COLUMNS + (("ERL nm", "erl"), ("NERL", "nerl"))
    rows = []
    width = max(len("segmentation"), *(len(name) for name in names))
    if several and not args.json:
        print(f"{'segmentation':<{width}}" + "".join(f"  {header:>9}" for header, _ in columns), flush=True)
    for name in names:
        row = _score(
            truth, name, read_volume(name, allow_missing_chunks=allow), objects=args.objects, skeletons=skeletons
        )
        rows.append(row)
        if args.json:
            print(json.dumps({"segmentation": name, **_json(row)} if several else _json(row)), flush=True)
        elif several:
            print(f"{name:<{width}}" + "".join(f"  {row.scores[key]:>9.4f}" for _, key in columns), flush=True)
    if args.json:
        return 0
    if not several:
        (row,) = rows
        for header, key in columns:
            print(f"{header:<11}{row.scores[key]:.4f}")
        if row.errors is not None:
            _print_errors(row.errors)
        return 0
    for row in rows:
        if row.errors is not None:
            print()
            print(row.name)
            _print_errors(row.errors)
    return 0


def _score(truth: GroundTruth, name: str, segmentation, *, objects: int | None, skeletons=None) -> Row:
    """One segmentation's row: every score, and the worst objects with ``objects``.

    Further scores of a segmentation (e.g. of skeletons) join ``scores`` here, and a column in
    :data:`COLUMNS` prints them.
    """
    scores = truth.evaluate(segmentation).as_dict()
    if skeletons is not None:
        from neuropil.skeletons import expected_run_length

        scores.update(expected_run_length(segmentation, skeletons).as_dict())
    errors = None if objects is None else truth.object_errors(segmentation, top=objects)
    return Row(name=name, scores=scores, errors=errors)


def _json(row: Row) -> dict[str, Any]:
    if row.errors is None:
        return row.scores
    listed = row.errors.as_dict()
    return {**row.scores, "worst_splits": listed["splits"], "worst_merges": listed["merges"]}


def _print_errors(errors: ObjectErrors) -> None:
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


def _shape(address: str, allow_missing_chunks: bool) -> tuple[int, ...]:
    """The shape of the array at ``address``, opened without reading it (so that a bad address fails first)."""
    from neuropil.io import open_volume

    with open_volume(address, allow_missing_chunks=allow_missing_chunks) as volume:
        return tuple(volume.shape)


def _array_or_group(address: str, allow_missing_chunks: bool):
    """The shape of the array at ``address``, or the arrays of the group there (see :func:`_group_arrays`)."""
    try:
        return _shape(address, allow_missing_chunks)
    except NeuropilError:
        members = _group_arrays(address)
        if members is None:
            raise
        return members


def _segmentation_names(args, found, gt_shape: tuple[int, ...]) -> list[str]:
    """The addresses to score: each array SEG, and the arrays of each group SEG of the ground truth's shape."""
    from neuropil.io import parse_address

    left_out = {_identity(parse_address(args.ground_truth))}
    if args.mask:
        left_out.add(_identity(parse_address(args.mask)))
    names: list[str] = []
    for address, shape_or_members in zip(args.segmentations, found):
        if isinstance(shape_or_members, tuple):
            if shape_or_members != gt_shape:
                raise NeuropilError(
                    f"segmentation shape {shape_or_members} does not match ground truth shape {gt_shape} ({address})"
                )
            names.append(address)
            continue
        members = shape_or_members
        matching = [
            str(where)
            for where, shape, dtype in members
            if shape == gt_shape
            and (np.issubdtype(dtype, np.integer) or dtype == np.bool_)
            and _identity(where) not in left_out
        ]
        if not matching:
            held = ", ".join(f"{where.key} {shape} {dtype}" for where, shape, dtype in members) or "no array"
            raise NeuropilError(
                f"{address}: group holds no integer array of the ground truth's shape {gt_shape}; it holds {held}"
            )
        names.extend(matching)
    return names


def _identity(where) -> tuple[Path, str | None]:
    return where.path.resolve(), where.key


def _group_arrays(address: str) -> list[tuple[Any, tuple[int, ...], np.dtype]] | None:
    """The arrays directly in the HDF5 or zarr group at ``address``, by name, with their shapes and dtypes.

    None when ``address`` names no readable HDF5 or zarr group. An HDF5 file named without a
    key is the group of its top-level datasets.
    """
    from neuropil.io import VolumeAddress, parse_address
    from neuropil.io.addresses import natural_key

    where = parse_address(address)
    members: list[tuple[str, tuple[int, ...], np.dtype]] | None = None
    if where.kind == "hdf5" and where.path.is_file():
        members = _hdf5_group_arrays(where)
    elif where.kind == "zarr" and where.path.is_dir() and not where.is_n5:
        members = _zarr_group_arrays(where)
    if members is None:
        return None
    prefix = f"{where.key}/" if where.key else ""
    return [
        (VolumeAddress(where.path, prefix + name, where.kind), shape, dtype)
        for name, shape, dtype in sorted(members, key=lambda member: natural_key(member[0]))
    ]


def _hdf5_group_arrays(where) -> list[tuple[str, tuple[int, ...], np.dtype]] | None:
    import h5py

    try:
        file = h5py.File(where.path, "r")
    except OSError:
        return None
    with file:
        if where.key is not None and where.key not in file:
            return None
        group = file[where.key] if where.key is not None else file
        if not isinstance(group, h5py.Group):
            return None
        return [(name, tuple(item.shape), item.dtype) for name, item in group.items() if isinstance(item, h5py.Dataset)]


def _zarr_group_arrays(where) -> list[tuple[str, tuple[int, ...], np.dtype]] | None:
    import zarr

    try:
        group: Any = zarr.open_group(str(where.path), mode="r")
        if where.key is not None:
            group = group[where.key]
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError):
        return None
    if not isinstance(group, zarr.Group):
        return None
    return [(name, tuple(array.shape), np.dtype(array.dtype)) for name, array in group.arrays()]
