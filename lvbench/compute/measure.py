"""Measuring cost: device synchronisation and peak memory of a block of work."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
import threading
import warnings
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

from lvbench.core.errors import LvbenchInputError

__all__ = ["SYNCING_CALLS", "HostSyncs", "PeakMemory", "sync"]

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def sync(device: torch.device | str) -> None:
    """Wait for queued CUDA work (timings on GPU are meaningless without it); no-op on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: Tensor methods and torch functions that need a device value on the host, so on CUDA block until the
#: queue catches up: conversions to Python, copies to the CPU, and ops whose output size depends on data.
SYNCING_CALLS = frozenset(
    {
        "__bool__", "__int__", "__float__", "__index__", "__complex__", "item", "tolist", "numpy", "cpu",
        "nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "equal", "allclose",
    }
)  # fmt: skip


class HostSyncs(TorchFunctionMode):
    """Counts the host synchronisations a block of torch code asks for: ``.counts`` by call, ``.total``.

    On every device, the calls in ``SYNCING_CALLS`` and boolean-mask indexing, seen through a
    ``TorchFunctionMode``: the count is the same on the CPU, where they are free, as on CUDA, where each
    stalls the launch queue, so a test on a CPU-only machine proves a hot loop free of them. On CUDA it
    also records in ``.cuda_runtime`` the synchronisations the runtime itself reports
    (``torch.cuda.set_sync_debug_mode("warn")``), which include those made inside C++ operators.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.cuda_runtime = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCING_CALLS:
            self.counts[name] += 1
        elif name in ("__getitem__", "__setitem__") and any(_is_mask(a) for a in _flat(args[1:2])):
            self.counts[f"{name}[bool mask]"] += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self) -> HostSyncs:
        self._cuda = torch.cuda.is_available()
        if self._cuda:
            self._mode = torch.cuda.get_sync_debug_mode()
            self._warnings = warnings.catch_warnings(record=True)
            self._caught = self._warnings.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        if self._cuda:
            torch.cuda.set_sync_debug_mode(self._mode)
            self._warnings.__exit__(*exc)
            self.cuda_runtime = sum("synchronizing" in str(w.message) for w in self._caught)


def _flat(items) -> list:
    out = []
    for item in items:
        out.extend(_flat(item) if isinstance(item, (tuple, list)) else [item])
    return out


def _is_mask(index: object) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype == torch.bool


def _rss_bytes() -> float:
    """Resident set size of this process (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return float(fh.read().split()[1]) * PAGE_SIZE
    except OSError:
        return math.nan


class PeakMemory:
    """Peak memory allocated by torch during a block, beyond what was live at entry, in MiB (``.mb``).

    CUDA: ``torch.cuda.max_memory_allocated``. CPU, ``method="rss"`` (default): freed heap pages are
    first returned to the OS (glibc ``malloc_trim``), then the resident set size is sampled every
    millisecond; the peak minus the size at entry (page granularity; includes non-torch allocations).
    CPU, ``method="profiler"``: the running sum of the bytes each operator allocates and frees, in time
    order, from ``torch.profiler`` (exact for torch at operator granularity, but many times slower for
    estimators made of many small operators, such as AIS). Measure an untimed run either way.
    """

    def __init__(self, device: torch.device | str = "cpu", method: str = "rss"):
        if method not in ("profiler", "rss"):
            raise LvbenchInputError(f"method must be 'profiler' or 'rss', got {method!r}")
        self.device = torch.device(device)
        self.method = method
        self.mb = math.nan

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = float(torch.cuda.memory_allocated(self.device))
        elif self.method == "profiler":
            from torch.profiler import ProfilerActivity, profile

            self._profile = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            with _muted_stderr():  # the profiler logs a line to fd 2 as it starts and stops
                self._profile.__enter__()
        else:
            _trim_heap()
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
        elif self.method == "profiler":
            with _muted_stderr():
                self._profile.__exit__(None, None, None)
            self.mb = _peak_live_bytes(self._profile.events()) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.mb = (max(self._peak, _rss_bytes()) - self._start) / 2**20


def _trim_heap() -> None:
    """Return freed heap memory to the OS so that the resident set tracks live memory (glibc only)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _muted_stderr():
    """Silence file descriptor 2 (C++ logging included) for the duration of the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _peak_live_bytes(events) -> float:
    """Peak of the running sum of bytes allocated (+) and freed (-) by operators, in time order."""
    changes = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in events if e.self_cpu_memory_usage)
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return float(peak)
