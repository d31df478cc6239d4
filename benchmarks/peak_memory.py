"""Peak memory of a block of code, for the benchmarks (imported by the scripts beside it)."""

from __future__ import annotations

import os
import threading
import time

import torch


class PeakMemory:
    """Peak memory above the level at entry, MiB: the CUDA allocator's peak on a GPU, else the
    process RSS sampled every 5 ms (plus once at exit). Use as ``with PeakMemory(device) as mem: ...``,
    then read ``mem.peak_mib``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib = 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._rss()
            self._peak = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._rss())
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mib = (max(self._peak, self._rss()) - self._base) / 2**20
