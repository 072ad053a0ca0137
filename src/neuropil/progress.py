"""Progress of long work that reads well wherever it runs.

On a terminal (or in a Jupyter notebook) :func:`progress` shows a tqdm bar. Anywhere else
(output redirected to a file: a cluster job, CI, ``nohup``) a bar would write a line per
update, so it logs a plain line instead, through the ``neuropil.progress`` logger at INFO,
at most every :data:`DEFAULT_INTERVAL` seconds (:data:`INTERVAL_VARIABLE` sets another
interval) and once more when it closes::

    2026-05-01T12:01:05Z training: 120/400 it (30%), elapsed 0:01:02, 1.93 it/s, ETA 0:02:25, loss=0.3012

The time is UTC (ISO 8601), as in a training run's ``log.csv``. The rate counts the work
of this run only (not ``initial``, the work a resumed run found done).
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from neuropil.errors import NeuropilError

logger = logging.getLogger(__name__)

INTERVAL_VARIABLE = "NEUROPIL_PROGRESS_INTERVAL"
"""Environment variable: seconds between two progress lines away from a terminal."""
DEFAULT_INTERVAL = 10.0
"""Seconds between two progress lines away from a terminal, unless :data:`INTERVAL_VARIABLE` says otherwise."""


def timestamp() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-05-01T12:01:05Z``)."""
    now = datetime.datetime.now(datetime.UTC)
    return now.isoformat(timespec="seconds").replace("+00:00", "Z")


def log_interval() -> float:
    """Seconds between two progress lines: :data:`INTERVAL_VARIABLE`, else :data:`DEFAULT_INTERVAL`."""
    text = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0 or math.isinf(seconds):  # NaN fails too
        raise NeuropilError(f"{INTERVAL_VARIABLE}={text!r}: needs a number of seconds, 0 or more")
    return seconds


def is_interactive(stream: TextIO) -> bool:
    """Whether ``stream`` is shown live: a terminal, or standard error in a Jupyter kernel."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
    return stream is sys.stderr and _in_notebook()


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class Progress:
    """Counts done work and shows it (a tqdm bar or log lines); made by :func:`progress`.

    Supports ``with``; :meth:`close` is called at its end.
    """

    def __init__(
        self,
        *,
        total: float | None,
        desc: str,
        unit: str,
        initial: float,
        unit_scale: bool,
        disable: bool,
        stream: TextIO,
        interval: float | None,
        clock: Callable[[], float],
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.initial = initial
        self.n = initial
        """Work done so far (``initial`` included)."""
        self.unit_scale = unit_scale
        self.postfix: dict[str, Any] = {}
        self.disable = disable
        self.closed = False
        self._clock = clock
        self._lock = threading.Lock()
        self._bar = None
        self._interval = 0.0
        self._start = self._last_line = clock()
        if disable:
            return
        if is_interactive(stream):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, unit_scale=unit_scale, file=stream)
        else:
            self._interval = log_interval() if interval is None else interval

    @property
    def writes_lines(self) -> bool:
        """Whether it writes log lines (not a bar, not disabled)."""
        return not self.disable and self._bar is None

    def update(self, n: float = 1) -> None:
        """Count ``n`` more done; log a line when the interval has passed since the last one."""
        if self.disable:
            return
        if self._bar is not None:
            self._bar.update(n)
            self.n = self._bar.n
            return
        with self._lock:
            self.n += n
            now = self._clock()
            if now - self._last_line >= self._interval:
                self._write(now, final=False)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """Values shown after the counts (``loss=0.3012``); a log line shows them from its next line on."""
        self.postfix = dict(values)
        if self._bar is not None:
            self._bar.set_postfix(refresh=refresh, **values)

    def close(self) -> None:
        """Stop: close the bar, or log the last line (when this run did any work)."""
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.writes_lines:
            with self._lock:
                if self.n != self.initial:
                    self._write(self._clock(), final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    def line(self, now: float, *, final: bool = False) -> str:
        """The log line at monotonic time ``now`` (the ``clock``'s), without the timestamp."""
        elapsed = max(now - self._start, 0.0)
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else math.inf
        done = self._count(self.n)
        if self.total is not None:
            done += f"/{self._count(self.total)}"
            if not self.unit_scale:
                done += f" {self.unit}"
            if self.total > 0:
                done += f" ({100 * self.n / self.total:.0f}%)"
        elif not self.unit_scale:
            done += f" {self.unit}"
        if not final:
            said = "elapsed"
        elif self.total is None or self.n >= self.total:
            said = "done in"
        else:  # stopped early: an error, an interrupt, a time budget
            said = "stopped after"
        parts = [f"{said} {_duration(elapsed)}", self._rate(rate)]
        if not final:
            left = None if self.total is None or not 0 < rate < math.inf else (self.total - self.n) / rate
            parts.append(f"ETA {_duration(left)}")
        parts.extend(f"{key}={_value(value)}" for key, value in self.postfix.items())
        prefix = f"{self.desc}: " if self.desc else ""
        return prefix + done + ", " + ", ".join(parts)

    def _write(self, now: float, *, final: bool) -> None:
        logger.info("%s %s", timestamp(), self.line(now, final=final))
        self._last_line = now

    def _count(self, value: float) -> str:
        if self.unit_scale:
            return _scaled(value) + self.unit
        return f"{value:g}" if isinstance(value, float) else str(value)

    def _rate(self, rate: float) -> str:
        if not 0 < rate < math.inf:
            return f"? {self.unit}/s"
        if self.unit_scale:
            return f"{_scaled(rate)}{self.unit}/s"
        if rate >= 1:
            return f"{rate:.2f} {self.unit}/s"
        return f"{1 / rate:.2f} s/{self.unit}"


def progress(
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    initial: float = 0,
    unit_scale: bool = False,
    disable: bool = False,
    stream: TextIO | None = None,
    interval: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Progress:
    """Progress of ``total`` units of work: a bar on a terminal, log lines elsewhere.

    Takes the arguments of ``tqdm(total=..., desc=..., unit=..., initial=..., unit_scale=...,
    disable=...)`` and answers ``update``, ``set_postfix`` and ``close`` as it does.

    Parameters
    ----------
    total : number, optional
        The work to do (None: unknown, then no percentage or ETA).
    desc : str
        What is being done (``"training"``), the start of every line.
    unit : str
        What is counted (``"it"``, ``"block"``, ``"B"``).
    initial : number
        Work already done when it starts (a resumed run's); not counted in the rate.
    unit_scale : bool
        Show counts with SI prefixes (``12.3MB``), as for bytes.
    disable : bool
        Show nothing.
    stream : file, optional
        Where a bar would go (default: standard error); a bar only when it is a terminal.
    interval : float, optional
        Seconds between two log lines (default: :func:`log_interval`).
    clock : callable
        Monotonic seconds (for tests).

    Returns
    -------
    Progress
    """
    return Progress(
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        unit_scale=unit_scale,
        disable=disable,
        stream=sys.stderr if stream is None else stream,
        interval=interval,
        clock=clock,
    )


def _duration(seconds: float | None) -> str:
    """``h:mm:ss`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}"


def _scaled(value: float) -> str:
    """``value`` with an SI prefix and three significant digits: ``12.3M``."""
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < 999.5:
            return f"{value:.3g}{prefix}"
        value /= 1000
    return f"{value:.3g}P"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
