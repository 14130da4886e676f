"""Stream over k samples in chunks so that peak memory is set by the chunk, not by k.

Chunk sizes come from a memory budget: chunk = budget / (N · floats per sample · bytes per float).
Running reductions accumulate in float64 so that k in the millions loses no precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Protocol

import torch

from lvbench.core.errors import LvbenchInputError
from lvbench.core.protocol import floats_per_sample

__all__ = [
    "CPU_DRAW_BUDGET",
    "CPU_MEMORY_BUDGET",
    "LogMeanExp",
    "Mean",
    "Reducer",
    "bytes_per_sample",
    "chunk_size_for",
    "chunks",
    "draw_budget",
    "items_within_budget",
    "memory_budget",
]

#: Bytes of intermediate tensors one chunk may use on the CPU: small enough to stay cache-friendly
#: (how it was chosen, and on what machine: docs/performance.md).
CPU_MEMORY_BUDGET = 64 * 2**20
#: Bytes of intermediates one vmap batch of gradient draws may use on the CPU: half the chunks' budget,
#: since vmapped backward passes run on torch.mm and the loop's on the calibrated kernels (docs/performance.md).
CPU_DRAW_BUDGET = 32 * 2**20
#: On CUDA a chunk may use 1/16 of the device's memory, at most this: large chunks amortize the fixed
#: kernel-launch and Python cost of each chunk, which a 32 MiB chunk of a small model would not.
CUDA_MEMORY_BUDGET_CAP = 2 * 2**30


def memory_budget(device: torch.device | str) -> int:
    """Bytes of intermediates one chunk may use on ``device`` (a function of the device type and size
    alone, so chunking, and with it the random stream, is the same on every run on that hardware)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(min(CUDA_MEMORY_BUDGET_CAP, torch.cuda.get_device_properties(device).total_memory // 16))
    return CPU_MEMORY_BUDGET


def draw_budget(device: torch.device | str) -> int:
    """Bytes one vmap batch of gradient draws may use on ``device``."""
    return CPU_DRAW_BUDGET if torch.device(device).type == "cpu" else memory_budget(device)


def items_within_budget(bytes_per_item: int, total: int, budget_bytes: int) -> int:
    """How many of ``total`` items of ``bytes_per_item`` fit in ``budget_bytes`` (at least 1)."""
    return int(min(total, max(1, budget_bytes // max(1, bytes_per_item))))


def bytes_per_sample(model, x: torch.Tensor) -> int:
    """Bytes of intermediates one latent sample per point of ``x`` takes in ``log_joint`` (generously)."""
    return x.shape[0] * floats_per_sample(model, x.shape[-1]) * 8


def chunk_size_for(model, x: torch.Tensor, num_samples: int, budget_bytes: int | None = None) -> int:
    """Samples per chunk so that one chunk of ``log_joint`` over ``x`` stays within ``budget_bytes``
    (default: ``memory_budget(x.device)``)."""
    budget = memory_budget(x.device) if budget_bytes is None else budget_bytes
    return items_within_budget(bytes_per_sample(model, x), num_samples, budget)


def chunks(total: int, size: int) -> Iterator[int]:
    """Sizes of consecutive chunks covering ``total`` items."""
    if size < 1:
        raise LvbenchInputError(f"chunk_size must be >= 1, got {size}")
    full, rest = divmod(total, size)
    yield from [size] * full
    if rest:
        yield rest


class Reducer(Protocol):
    """A running reduction over chunks [c, N] of a stream: ``update`` each chunk, then ``result`` [N]."""

    def update(self, values: torch.Tensor) -> None: ...

    def result(self) -> torch.Tensor: ...


class LogMeanExp:
    """Running log((1/k) Σ exp(a_i)) over chunks [c, N], stable via a running max."""

    def __init__(self) -> None:
        self.max: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None
        self.count = 0

    def update(self, values: torch.Tensor) -> None:
        v = values.to(torch.float64)
        chunk_max = v.amax(dim=0)
        if self.max is None:
            new_max = chunk_max
            self.sum = torch.zeros_like(chunk_max)
        else:
            new_max = torch.maximum(self.max, chunk_max)
        safe = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        if self.max is not None:
            self.sum = self.sum * torch.exp(self.max - safe)
        self.sum = self.sum + torch.exp(v - safe).sum(dim=0)
        self.max = new_max
        self.count += values.shape[0]

    def result(self) -> torch.Tensor:
        safe = torch.where(torch.isfinite(self.max), self.max, torch.zeros_like(self.max))
        return safe + torch.log(self.sum) - math.log(self.count)


class Mean:
    """Running mean over chunks [c, N] in float64."""

    def __init__(self) -> None:
        self.sum: torch.Tensor | float = 0.0
        self.count = 0

    def update(self, values: torch.Tensor) -> None:
        self.sum = self.sum + values.to(torch.float64).sum(dim=0)
        self.count += values.shape[0]

    def result(self) -> torch.Tensor:
        return self.sum / self.count


def stream(
    draw: Callable[[int], torch.Tensor],
    num_samples: int,
    chunk_size: int,
    reducer: Reducer,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Feed ``draw(c)`` -> [c, N] for chunks of ``num_samples`` into ``reducer``; the result as ``out_dtype``."""
    for c in chunks(num_samples, chunk_size):
        reducer.update(draw(c))
    return reducer.result().to(out_dtype)
