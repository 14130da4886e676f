"""IWAE bound (Burda et al. 2016): log (1/k) Σ_i p(x, z_i) / q(z_i|x), z_i ~ q.

A stochastic lower bound on log p(x) that increases with k and is consistent; its bias shrinks like
Var[w] / (2 k p(x)²). Identical in value to importance sampling with k samples: listed separately
because researchers report it as a bound.
"""

from __future__ import annotations

import torch

from lvbench.compute.streaming import LogMeanExp, stream
from lvbench.estimators.base import estimator
from lvbench.estimators.likelihood.weights import log_weight_sampler, proposal_log_weights, resolve_chunk_size
from lvbench.estimators.proposals import Proposal, resolve_proposal

__all__ = ["iwae"]


@estimator(
    "iwae",
    kind="likelihood",
    properties=("lower_bound", "unbiased_p", "consistent"),
    log_weights=proposal_log_weights,
)
def iwae(model, x: torch.Tensor, k: int, proposal: Proposal = "encoder", chunk_size: int | None = None) -> torch.Tensor:
    """IWAE-k: logsumexp_i(log p(x, z_i) - log q(z_i|x)) - log k, z_i ~ q, streamed over k."""
    q = resolve_proposal(model, x, proposal)
    return stream(
        log_weight_sampler(model, x, q), k, resolve_chunk_size(model, x, k, chunk_size), LogMeanExp(), x.dtype
    )
