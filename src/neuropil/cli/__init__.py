"""Command line: ``neuropil <command> ...``. Thin: parses arguments, calls the library.

:func:`main` is the one boundary between the commands and the user. Expected failures
print one line, ``neuropil: error: <what> (<where>)``, on stderr and exit with code 2:
:class:`~neuropil.errors.NeuropilError` (bad input), an :class:`OSError` of reading or
writing a file (permission denied, read-only or full file system, a folder where a file
is needed, ...), a missing optional package (which extra to install), a pydantic
validation error (its first error, naming the key), and CUDA that is not available. Any
other exception is an internal error: one line ``neuropil: internal error: <type>:
<message> (run with -v for the traceback)`` and exit code 1; with ``-v`` the traceback.
Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
import traceback
from pathlib import Path

from neuropil.errors import NeuropilError
from neuropil.files import check_output_file, check_output_folder, final_name

EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 130

OPTIONAL_PACKAGES = {"distributed": "cluster", "tensorboard": "tensorboard"}
"""Importable name of each optional package -> the extra of pyproject.toml that installs it."""

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    from neuropil.cli import (
        agglomeration,
        augment,
        data,
        demo,
        evaluate,
        experiment,
        models,
        predict,
        segment,
        study,
        train,
        view,
    )

    parser = argparse.ArgumentParser(
        prog="neuropil",
        description="Neuron segmentation of 3-D EM volumes across domains.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages; show the traceback of an error"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        demo,
        experiment,
        study,
        data,
        train,
        augment,
        models,
        predict,
        segment,
        agglomeration,
        evaluate,
        view,
    ):
        module.add_parser(subparsers)
    _verbose_after_the_command(parser)
    return parser


def _verbose_after_the_command(parser: argparse.ArgumentParser) -> None:
    """Accept ``-v`` after a command's name too (``neuropil train CONFIG --out DIR -v``), at every level."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument(
                    "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="as neuropil -v"
                )
                _verbose_after_the_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (0, 2 for bad input, 1 for an internal error, 130 for Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False)
    if quiet and hasattr(args, "no_progress"):
        args.no_progress = True
    handler = _start_logging(verbose=args.verbose)
    if quiet and handler is not None and not args.verbose:
        handler.setLevel(logging.WARNING)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        _fail(handler, "neuropil: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of stdout went away (`neuropil data list | head -1`): nothing to say to anyone
        _mute(handler)
        try:  # Python flushes stdout again at exit, which would fail once more
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file (an embedding program's)
            pass
        return EXIT_INTERNAL_ERROR
    except Exception as error:
        line = expected_error(error)
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        if line is not None:
            _fail(handler, f"neuropil: error: {line}")
            return EXIT_BAD_INPUT
        message = _one_line(str(error))
        described = f"{type(error).__name__}: {message}" if message else type(error).__name__
        hint = "" if args.verbose else " (run with -v for the traceback)"
        _fail(handler, f"neuropil: internal error: {described}{hint}")
        return EXIT_INTERNAL_ERROR


def expected_error(error: BaseException) -> str | None:
    """The one line (without ``neuropil: error:``) for an expected failure, or None for an internal error."""
    if isinstance(error, NeuropilError):
        return _one_line(str(error))
    if isinstance(error, OSError):
        return os_error_line(error)
    if isinstance(error, ImportError):
        return import_error_line(error)
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(error, pydantic.ValidationError):
        return validation_error_line(error)
    if isinstance(error, (RuntimeError, AssertionError)):
        return device_error_line(error)
    return None


def os_error_line(error: OSError) -> str:
    """``<what> (<where>)`` of an error of the file system; the path is the output's, not its temporary's."""
    path = error.filename2 if error.filename2 is not None else error.filename
    if path is None:  # h5py puts the name in its message only
        named = re.search(r"name = '([^']*)'", str(error))
        path = named.group(1) if named else None
    where = final_name(os.fsdecode(path)) if isinstance(path, (str, bytes, os.PathLike)) else None
    code = error.errno
    if code == errno.EISDIR:
        what = "is a folder, where a file is needed"
    elif code in (errno.ENOTDIR, errno.EEXIST) and where is not None:
        blocker = next((p for p in (Path(where), *Path(where).parents) if p.exists() and not p.is_dir()), None)
        if blocker is None:
            what = "not a folder" if code == errno.ENOTDIR else "exists already"
        elif blocker == Path(where):
            what = "is a file, where a folder is needed"
        else:
            what = f"{blocker} is a file, where a folder is needed"
    elif code == errno.ENOENT:
        what = "no such file or folder"
    elif code is not None and code in errno.errorcode:
        what = os.strerror(code)
        what = what[:1].lower() + what[1:]
    else:
        what = _one_line(str(error)) or type(error).__name__
    return f"{what} ({where})" if where else what


def import_error_line(error: ImportError) -> str | None:
    """Which extra installs a missing optional package, or None for any other import error."""
    name = error.name or ""
    if not name:
        missing = re.search(r"No module named '([^']+)'", str(error))
        name = missing.group(1) if missing else ""
    package = name.split(".")[0]
    extra = OPTIONAL_PACKAGES.get(package)
    if extra is None:
        return None
    return f"the optional package {package} is not installed (pip install 'neuropil[{extra}]')"


def validation_error_line(error) -> str:
    """The first error of a pydantic ``ValidationError``, naming the key and the model it belongs to."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        what = f"missing key '{key}'"
    elif first["type"] == "extra_forbidden":
        what = f"unknown key '{key}'"
    elif key:
        what = f"bad value for '{key}': {message}"
    else:
        what = message
    return f"{_one_line(what)} ({error.title})"


CUDA_UNAVAILABLE = re.compile(
    r"not compiled with cuda|no nvidia driver|no cuda gpus|cuda\.is_available\(\) is false|cuda driver"
    r"|invalid device ordinal|cuda-capable device|cuda initialization|cuda unavailable|cuda is not available",
    flags=re.IGNORECASE,
)
"""What torch says (RuntimeError, AssertionError) when CUDA, a driver or the chosen GPU is missing."""


def device_error_line(error: BaseException) -> str | None:
    """torch's error about a device that does not exist, is not available or is out of memory; else None."""
    message = _one_line(str(error))
    unknown = re.search(r"device string: ?'?([^'\s]+)'?", message)
    if unknown and (message.startswith("Expected one of") or message.startswith("Invalid device string")):
        return f"unknown torch device '{unknown.group(1)}' (cpu, cuda, cuda:N, mps, ...)"
    first = message.split(". ")[0].rstrip(".")
    if CUDA_UNAVAILABLE.search(message):
        return f"CUDA is not available: {first} (use device cpu, or install a CUDA build of torch)"
    if "cuda out of memory" in message.lower():
        return f"out of GPU memory: {first} (use smaller tiles, blocks or patches)"
    return None


def check_output_volume(address: str) -> None:
    """Check that an output address can be written: a file for HDF5 and TIFF, a folder for a zarr or N5 array.

    Raises
    ------
    NeuropilError
        A folder where the file goes, a file where a folder goes (the container, a folder
        above it, or the array's key), or a location that cannot be written.
    """
    from neuropil.io import parse_address

    where = parse_address(address)
    if where.kind in ("hdf5", "tiff"):
        check_output_file(where.path)
    elif where.kind == "zarr":
        check_output_folder(where.path / where.key if where.key else where.path)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _CommandLogHandler(logging.StreamHandler):
    """The stderr handler :func:`main` installs when nothing else has configured logging."""


def _start_logging(*, verbose: bool) -> logging.Handler | None:
    """Log to stderr as :func:`logging.basicConfig` would; None when logging is configured already (embedded)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _CommandLogHandler):  # left by an earlier run in this process
            root.removeHandler(handler)
    if root.handlers:
        return None
    handler = _CommandLogHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler


def _mute(handler: logging.Handler | None) -> None:
    """Nothing more from the command's log: after the error line, late messages (e.g. of asyncio) are noise."""
    if handler is not None:
        handler.flush()
        handler.setLevel(logging.CRITICAL + 1)


def _fail(handler: logging.Handler | None, line: str) -> None:
    _mute(handler)
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
