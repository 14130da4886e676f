"""Measuring cost: device synchronisation and peak memory of a block of work."""

from __future__ import annotations

import math
import os
import threading

import torch

__all__ = ["PeakMemory", "sync"]

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def sync(device: torch.device | str) -> None:
    """Wait for queued CUDA work (timings on GPU are meaningless without it); no-op on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> float:
    """Resident set size of this process (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return float(fh.read().split()[1]) * PAGE_SIZE
    except OSError:
        return math.nan


class PeakMemory:
    """Peak extra memory during a block. CUDA: max allocated minus allocated at entry. CPU: the highest
    resident set size sampled every millisecond by a background thread, minus the size at entry."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.mb = math.nan

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = float(torch.cuda.memory_allocated(self.device))
            return self
        self._start = self._peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self.mb = (max(self._peak, _rss_bytes()) - self._start) / 2**20
