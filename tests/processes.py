"""The processes a test starts: finding them by a token in their environment (they outlive a killed parent),
and running a command that serves until Ctrl-C."""

import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import NamedTuple


def processes_with(token: str) -> list[int]:
    """Live processes whose environment holds ``NEUROPIL_TEST_RUN=token`` (a command and what it started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                status = (entry / "status").read_text()
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if "State:\tZ" not in status and f"NEUROPIL_TEST_RUN={token}".encode() in environ:
                found.append(int(entry.name))
    return found


class Served(NamedTuple):
    """What :func:`serve_then_interrupt` saw."""

    url: str
    """The first line the command printed."""
    page: str
    """The page at that URL."""
    stderr: str
    returncode: int


def serve_then_interrupt(argv: list[str], *, env: dict[str, str], cwd=None, url: re.Pattern) -> Served:
    """Start a command that prints its URL and serves until Ctrl-C, fetch the URL, send SIGINT, wait for it.

    SIGINT starts at its default action in the command, even when the tests run in a
    background job that ignores it. A command still alive at the end is killed.
    """
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        line = process.stdout.readline().strip()
        assert url.match(line), (argv, line, process.stderr.read() if process.poll() is not None else "")
        with urllib.request.urlopen(line, timeout=30) as response:
            page = response.read().decode()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return Served(line, page, err, process.returncode)
