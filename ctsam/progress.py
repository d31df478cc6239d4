"""Progress reporting: a bar on a terminal, periodic log lines otherwise (Snakemake logs, SLURM)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Progress:
    """Count ``total`` steps of ``what``; draw a bar on a TTY, else log every ~10 % (INFO)."""

    def __init__(self, total: int, what: str, *, logger: logging.Logger | None = None, stream=None) -> None:
        self.total = max(int(total), 0)
        self.what = what
        self.done = 0
        self.log = logger or logging.getLogger("ctsam.progress")
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self._next_log = 0.1

    def update(self, n: int = 1, *, item: str | None = None) -> None:
        self.done += n
        frac = self.done / self.total if self.total else 1.0
        elapsed = time.perf_counter() - self.t0
        if self.tty:
            width = 30
            filled = int(width * frac)
            label = f" {item}" if item else ""
            self.stream.write(
                f"\r{self.what}: [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{elapsed:6.1f}s{label[:40]:<41}"
            )
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif frac >= self._next_log or self.done >= self.total:
            self.log.info("%s: %d/%d (%.0f%%) in %.1f s", self.what, self.done, self.total, 100 * frac, elapsed)
            while self._next_log <= frac:
                self._next_log += 0.1


def track(items: Iterable[T], total: int, what: str) -> Iterator[T]:
    """Iterate ``items`` while reporting progress."""
    p = Progress(total, what)
    for item in items:
        yield item
        p.update(item=str(item) if isinstance(item, str) else None)
