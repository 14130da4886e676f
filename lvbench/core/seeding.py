"""Seeded blocks that leave the caller's random state as it was.

Every random draw lvbench makes in preparation (training, encoder fits, references, BDMC, control-variate
fits) runs inside ``seeded(seed)``, with a seed that the content address of what it produces covers: the
same spec gives the same bits whatever ran before in the process, and nothing after it is disturbed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's generators (the CPU's and every initialized CUDA device's) seeded with
    ``seed``, restoring their previous states after it."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
