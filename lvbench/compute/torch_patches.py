"""The two places lvbench changes torch's behaviour for a block, each restored on the way out, kept here
so that no estimator or analysis touches torch's private or global state itself.

- ``out_of_place_normal_sampling``: torch.distributions' private ``_standard_normal`` swapped for
  ``torch.randn`` while ``torch.func.vmap`` vectorizes gradient draws (its in-place ``normal_`` cannot
  give each vmapped draw its own randomness).
- ``unvalidated_distributions``: the default ``validate_args`` off while a distribution is built whose
  inner parts take no ``validate_args`` (``ExpRelaxedCategorical``); each check would read a device value
  on the host (a sync per call on CUDA).

``lvbench.compute.torch_state.guarded`` checks around every cell that such changes were undone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.distributions import Distribution

__all__ = ["out_of_place_normal_sampling", "unvalidated_distributions"]


@contextlib.contextmanager
def out_of_place_normal_sampling() -> Iterator[None]:
    """torch.distributions draws N(0, 1) noise with the in-place ``normal_``, which vmap cannot give
    independent randomness per draw; swap in the out-of-place ``torch.randn`` while vectorizing."""

    def standard_normal(shape, dtype, device):
        return torch.randn(shape, dtype=dtype, device=device)

    modules = [torch.distributions.normal, torch.distributions.multivariate_normal]
    saved = [m._standard_normal for m in modules]
    try:
        for m in modules:
            m._standard_normal = standard_normal
        yield
    finally:
        for m, f in zip(modules, saved, strict=True):
            m._standard_normal = f


@contextlib.contextmanager
def unvalidated_distributions() -> Iterator[None]:
    """Argument validation off while building: ExpRelaxedCategorical's inner Categorical does not take
    ``validate_args``, and each check reads a device value on the host (a sync per call on CUDA)."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)
