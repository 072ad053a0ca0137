"""Writing output files whole or not at all (a temporary name, then a rename), and checking output paths first.

Every writer of neuropil puts its output under a temporary name beside the final one
(``NAME.partial``, ``STEM.partial.SUFFIX``) and renames it into place when complete: a
failure (a full or read-only file system, an interrupt) leaves the old output as it was
and no temporary behind. :func:`check_output_file` and :func:`check_output_folder` catch
an output path that cannot work (a folder where a file is needed, a file where a folder
is needed, a location that cannot be written) before any work is done.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
from pathlib import Path

from neuropil.errors import NeuropilError

TEMPORARY_MARK = re.compile(r"\.partial(?=\.[^./\\]+$|$)")
"""Where a temporary name differs from its final one: ``.partial`` at the end or before the suffix."""


def final_name(path: str | os.PathLike) -> str:
    """The name a temporary output (``x.h5.partial``, ``grid.partial.png``) will have when complete."""
    return TEMPORARY_MARK.sub("", os.fspath(path))


def _discard(temporary: Path) -> None:
    """Remove a temporary file; a failure to do so must not hide the error that made it a leftover."""
    with contextlib.suppress(OSError):
        temporary.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through ``path.partial``, so a reader never sees half a file."""
    path = Path(path)
    temporary = path.with_name(path.name + ".partial")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        _discard(temporary)
    return path


def save_figure_atomic(figure, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as ``path`` (format from its suffix) through a temporary name, and close it.

    A :class:`matplotlib.figure.Figure` made without pyplot is saved with the canvas of
    the file's format (Agg for PNG), whatever backend is in use. A path without a suffix
    gets matplotlib's default format (``savefig.format``, PNG).

    Raises
    ------
    NeuropilError
        The suffix names a format matplotlib cannot write (nothing is written).
    """
    import matplotlib

    path = Path(path)
    # the format is the final name's: the temporary one of a suffix-less path ends in ".partial"
    kind = path.suffix[1:].lower() or matplotlib.rcParams["savefig.format"]
    supported = figure.canvas.get_supported_filetypes()
    if kind not in supported:
        raise NeuropilError(f"{path}: cannot write a figure as .{kind} (formats: {', '.join(sorted(supported))})")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".partial" + path.suffix)
    try:
        figure.savefig(temporary, format=kind)
        os.replace(temporary, path)
    finally:
        # Only figures made by pyplot are kept alive by it until closed; importing pyplot here
        # just to close one that pyplot never saw would choose a backend for the caller.
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(figure)
        _discard(temporary)
    return path


def remove_path(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def swap_in(temporary: Path, final: Path) -> None:
    """Put the finished folder ``temporary`` at ``final``.

    Folders cannot be replaced in one rename, so the old one is first renamed aside: at every
    moment either the old or the new array is complete at a known name. A failure to move
    the new one in puts the old one back; an old one left aside by a crash between the two
    renames is put back before anything else.

    Raises
    ------
    NeuropilError
        ``final`` is a file, not a folder (it is left as it is).
    """
    old = final.with_name(final.name + ".old")
    if not final.exists() and old.is_dir():
        os.replace(old, final)  # the only complete copy
    if final.exists() and not final.is_dir():
        raise NeuropilError(f"{final}: is a file, where a folder is needed")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_path(old)
    if final.exists():
        os.replace(final, old)
        try:
            os.replace(temporary, final)
        except BaseException:
            os.replace(old, final)
            raise
    else:
        os.replace(temporary, final)
    remove_path(old)


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``.`` for a relative path whose every part is missing)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _cannot_write(folder: Path) -> str | None:
    """Why nothing can be created in the existing ``folder``, or None when it can (as far as the system says)."""
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: no statvfs on this platform
        read_only = False
    return os.strerror(errno.EROFS if read_only else errno.EACCES).lower()


def check_output_folder(path: str | os.PathLike) -> Path:
    """Check that ``path`` is, or can be made, a folder to write in.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    NeuropilError
        ``path`` or a folder above it is a file, or the nearest existing folder cannot be
        written (permission denied, read-only file system).
    """
    path = Path(path)
    existing = _first_existing(path)
    if not existing.is_dir():
        if existing == path:
            raise NeuropilError(f"{path}: is a file, where a folder is needed")
        raise NeuropilError(f"{path}: {existing} is a file, where a folder is needed")
    reason = _cannot_write(existing)
    if reason is not None:
        raise NeuropilError(f"{path}: cannot write in {existing}: {reason}")
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """Check that ``path`` can be written as a file (through a temporary beside it, then a rename).

    An existing file at ``path`` is fine (it is replaced whole when the new one is complete).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    NeuropilError
        ``path`` is a folder, a folder above it is a file, or the folder it goes in
        cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise NeuropilError(f"{path}: is a folder, where a file is needed")
    existing = _first_existing(path.parent)
    if not existing.is_dir():
        raise NeuropilError(f"{path}: {existing} is a file, where a folder is needed")
    reason = _cannot_write(existing)
    if reason is not None:
        raise NeuropilError(f"{path}: cannot write in {existing}: {reason}")
    return path
