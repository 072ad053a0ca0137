"""Writing small output files whole or not at all: a temporary name, then a rename."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through ``path.partial``, so a reader never sees half a file."""
    path = Path(path)
    temporary = path.with_name(path.name + ".partial")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def save_figure_atomic(figure, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as ``path`` (format from its suffix) through a temporary name, and close it.

    A :class:`matplotlib.figure.Figure` made without pyplot is saved with the canvas of
    the file's format (Agg for PNG), whatever backend is in use.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".partial" + path.suffix)
    try:
        figure.savefig(temporary)
        os.replace(temporary, path)
    finally:
        # Only figures made by pyplot are kept alive by it until closed; importing pyplot here
        # just to close one that pyplot never saw would choose a backend for the caller.
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(figure)
        temporary.unlink(missing_ok=True)
    return path


def remove_path(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def swap_in(temporary: Path, final: Path) -> None:
    """Put the finished folder ``temporary`` at ``final``.

    Folders cannot be replaced in one rename, so the old one is first renamed aside: at every
    moment either the old or the new array is complete at a known name.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(final.name + ".old")
    remove_path(old)
    if final.exists():
        os.replace(final, old)
    os.replace(temporary, final)
    remove_path(old)
