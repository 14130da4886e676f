"""Naive Monte Carlo: p̂(x) = (1/k) Σ_i p(x | z_i), z_i ~ p(z), returned as log p̂(x).

Unbiased for p(x), consistent, but its variance explodes when the posterior is far narrower than the
prior (high-dimensional z): the baseline every proposal-based estimator is measured against.
For a discrete latent, ``uniform=True`` samples z uniformly over its support instead (weights p(z)p(x|z)·C).
"""

from __future__ import annotations

import torch

from lvbench.compute.streaming import LogMeanExp, stream
from lvbench.core.protocol import capabilities_of
from lvbench.core.validation import LvbenchInputError
from lvbench.estimators.base import estimator
from lvbench.estimators.likelihood.weights import log_importance_weights, log_weight_sampler, resolve_chunk_size
from lvbench.estimators.proposals import resolve_proposal, uniform_proposal

__all__ = ["naive_mc"]


def _naive_log_weights(model, x: torch.Tensor, k: int, uniform: bool = False, **_: object) -> torch.Tensor:
    """Its importance weights: p(x, z)/p(z) = p(x|z) with z from the prior (or uniform)."""
    return log_importance_weights(model, x, k, "uniform" if uniform else "prior")


@estimator(
    "naive_mc",
    kind="likelihood",
    properties=("lower_bound", "unbiased_p", "consistent"),
    log_weights=_naive_log_weights,
)
def naive_mc(model, x: torch.Tensor, k: int, uniform: bool = False, chunk_size: int | None = None) -> torch.Tensor:
    """log (1/k) Σ_i p(x|z_i) with z_i from the prior (or uniform over a discrete support)."""
    chunk = resolve_chunk_size(model, x, k, chunk_size)
    if uniform:
        if "enumerable" not in capabilities_of(model):
            raise LvbenchInputError("naive_mc(uniform=True) needs an enumerable (discrete) latent")
        draw = log_weight_sampler(model, x, uniform_proposal(model, x.shape[0]))
    else:  # log w = log p(x, z) - log p(z) = log p(x|z): the model's fused log joint, not p(x|z)'s generic log_prob
        draw = log_weight_sampler(model, x, resolve_proposal(model, x, "prior"))
    return stream(draw, k, chunk, LogMeanExp(), x.dtype)
