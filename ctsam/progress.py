"""Progress reporting: a bar on a terminal, a log line every ~10 s otherwise (Snakemake logs, SLURM).

Long loops (refine's prompt sets and patches, evaluate's cases, train's steps, convert's slices and
files, weight downloads) report through :class:`Progress`, so a job that runs for minutes is never
silent: on a TTY a bar redraws in place; in a log file one INFO line appears at most every
``interval_s`` seconds (and one at the end), so logs stay short whatever the loop's length.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: seconds between progress lines in logs (non-TTY)
LOG_INTERVAL_S = 10.0


class Progress:
    """Count ``total`` steps of ``what``; draw a bar on a TTY, else log a line every ``interval_s`` (INFO)."""

    def __init__(
        self,
        total: int,
        what: str,
        *,
        logger: logging.Logger | None = None,
        stream=None,
        interval_s: float = LOG_INTERVAL_S,
        clock=time.perf_counter,
    ) -> None:
        self.total = max(int(total), 0)
        self.what = what
        self.done = 0
        self.log = logger or logging.getLogger("ctsam.progress")
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = float(interval_s)
        self._clock = clock
        self.t0 = clock()
        self._last_log = self.t0
        self.lines_logged = 0

    def _eta(self, elapsed: float) -> str:
        if not self.done or self.done >= self.total:
            return ""
        return f", about {elapsed / self.done * (self.total - self.done):.0f} s left"

    def update(self, n: int = 1, *, item: str | None = None) -> None:
        self.done += n
        frac = self.done / self.total if self.total else 1.0
        now = self._clock()
        elapsed = now - self.t0
        finished = self.done >= self.total
        if self.tty:
            width = 30
            filled = int(width * min(frac, 1.0))
            label = f" {item}" if item else ""
            self.stream.write(
                f"\r{self.what}: [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{elapsed:6.1f}s{label[:40]:<41}"
            )
            if finished:
                self.stream.write("\n")
            self.stream.flush()
        elif finished or now - self._last_log >= self.interval_s:
            self._last_log = now
            self.lines_logged += 1
            self.log.info(
                "%s: %d/%d (%.0f%%) in %.1f s%s",
                self.what,
                self.done,
                self.total,
                100 * frac,
                elapsed,
                self._eta(elapsed),
            )


def track(items: Iterable[T], total: int, what: str) -> Iterator[T]:
    """Iterate ``items`` while reporting progress."""
    p = Progress(total, what)
    for item in items:
        yield item
        p.update(item=str(item) if isinstance(item, str) else None)
