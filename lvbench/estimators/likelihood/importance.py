"""Importance sampling: p̂(x) = (1/k) Σ_i p(x, z_i) / r(z_i), z_i ~ r, returned as log p̂(x).

p̂(x) is unbiased for p(x) (so log p̂ is a stochastic lower bound on log p(x), consistent in k).
The proposal r is q(z|x) or, with ``defensive=α``, the defensive mixture r = α p(z) + (1-α) q(z|x)
(Hesterberg 1995), whose weights are bounded by p(x|z)/α and so have finite variance.
"""

from __future__ import annotations

import math

import torch

from lvbench.compute.streaming import LogMeanExp, stream
from lvbench.core.options import Interval
from lvbench.estimators.base import estimator
from lvbench.estimators.likelihood.weights import log_weight_sampler, proposal_log_weights, resolve_chunk_size
from lvbench.estimators.proposals import Proposal, resolve_proposal

__all__ = ["importance"]


@estimator(
    "importance",
    kind="likelihood",
    properties=("lower_bound", "unbiased_p", "consistent"),
    log_weights=proposal_log_weights,
    constraints={"defensive": Interval(0.0, 1.0, high_open=True, why="the prior's share of the mixture proposal")},
)
def importance(
    model,
    x: torch.Tensor,
    k: int,
    proposal: Proposal = "encoder",
    defensive: float = 0.0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """log of the importance-sampling estimate of p(x) with proposal q or α·p(z) + (1-α)·q."""
    q = resolve_proposal(model, x, proposal)
    chunk = resolve_chunk_size(model, x, k, chunk_size)
    if defensive == 0.0:
        return stream(log_weight_sampler(model, x, q), k, chunk, LogMeanExp(), x.dtype)
    prior = model.prior()
    log_a, log_1ma = math.log(defensive), math.log1p(-defensive)

    def draw(c: int) -> torch.Tensor:
        z_q, z_p = q.sample((c,)), prior.sample((c, x.shape[0]))
        pick_prior = torch.rand(z_q.shape[:2], device=x.device) < defensive
        z = torch.where(pick_prior.view(*pick_prior.shape, *([1] * (z_q.dim() - 2))), z_p, z_q)
        log_r = torch.logaddexp(log_a + prior.log_prob(z), log_1ma + q.log_prob(z))
        return model.log_joint(x, z) - log_r

    return stream(draw, k, chunk, LogMeanExp(), x.dtype)
