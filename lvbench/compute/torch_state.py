"""Torch's process-wide settings, snapshotted before a cell and restored after it.

Cells share worker processes, so a plugin that flips a global switch (oneDNN off, another default dtype,
grad mode off, argument validation...) would change the numbers of every later cell in that process while
its own cell passed. The runner restores every setting listed here after each cell, and fails the cell
that changed one, naming it: its own numbers were computed under settings its id does not name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.distributions import Distribution

__all__ = ["GLOBAL_SETTINGS", "changed_settings", "guarded", "restore", "snapshot", "torch_threads"]


def _set_validate_args(value: bool) -> None:
    Distribution.set_default_validate_args(value)


#: name -> (read, write)
GLOBAL_SETTINGS: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {
    "torch.backends.mkldnn.enabled": (torch._C._get_mkldnn_enabled, torch._C._set_mkldnn_enabled),
    "torch.get_default_dtype()": (torch.get_default_dtype, torch.set_default_dtype),
    "torch.is_grad_enabled()": (torch.is_grad_enabled, torch.set_grad_enabled),
    "torch.are_deterministic_algorithms_enabled()": (
        torch.are_deterministic_algorithms_enabled,
        torch.use_deterministic_algorithms,
    ),
    "torch.is_anomaly_enabled()": (torch.is_anomaly_enabled, torch.set_anomaly_enabled),
    "torch.get_float32_matmul_precision()": (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
    "Distribution default validate_args": (lambda: Distribution._validate_args, _set_validate_args),
    "torch.backends.cudnn.enabled": (
        lambda: torch.backends.cudnn.enabled,
        lambda v: setattr(torch.backends.cudnn, "enabled", v),
    ),
    "torch.backends.cudnn.benchmark": (
        lambda: torch.backends.cudnn.benchmark,
        lambda v: setattr(torch.backends.cudnn, "benchmark", v),
    ),
    "torch.backends.cudnn.deterministic": (
        lambda: torch.backends.cudnn.deterministic,
        lambda v: setattr(torch.backends.cudnn, "deterministic", v),
    ),
}


def snapshot() -> dict[str, Any]:
    """The current value of every global setting."""
    return {name: read() for name, (read, _) in GLOBAL_SETTINGS.items()}


def changed_settings(before: dict[str, Any]) -> list[str]:
    """'name: before -> now' for each setting that differs from ``before``."""
    now = snapshot()
    return [f"{name}: {before[name]!r} -> {now[name]!r}" for name in before if now[name] != before[name]]


def restore(before: dict[str, Any]) -> None:
    """Set every global setting back to ``before``."""
    for name, value in before.items():
        read, write = GLOBAL_SETTINGS[name]
        if read() != value:
            write(value)


@contextlib.contextmanager
def guarded() -> Iterator[list[str]]:
    """Run a block and restore torch's global settings after it; the yielded list is filled with the
    settings the block changed."""
    before = snapshot()
    changes: list[str] = []
    try:
        yield changes
    finally:
        changes += changed_settings(before)
        restore(before)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads, restoring the previous count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
