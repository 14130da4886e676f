"""Power-mean bounds on log p(x) from k importance weights w_i = p(x, z_i)/q(z_i|x), z_i ~ q:

- the variational Rényi bound (Li & Turner 2016), L_α = 1/(1-α) log E_q[w^(1-α)], estimated by
  1/(1-α) log (1/k) Σ_i w_i^(1-α). For α in [0, 1] it lies below log p(x) (Jensen), as does the
  estimate in expectation; α = 0 is IWAE-k (the same number on the same samples), α -> 1 the ELBO.
  Only α = 0 is consistent for log p(x): for α > 0 the estimate converges to L_α < log p(x).
- the χ upper bound CUBO_n (Dieng et al. 2017), (1/n) log E_q[w^n] >= log p(x) for n >= 1, estimated
  by (1/n) log (1/k) Σ_i w_i^n: the bound is above log p(x), the estimate is biased low at finite k
  (Jensen on the log, worse for larger n, whose w^n is heavier-tailed) and converges to CUBO_n as k
  grows. With a lower bound it brackets log p(x) from both sides.
Both stream over k in chunks with a float64 running log-mean-exp, like IWAE.
"""

from __future__ import annotations

import torch

from lvbench.compute.streaming import LogMeanExp, Mean, stream
from lvbench.core.options import Interval
from lvbench.estimators.base import estimator
from lvbench.estimators.likelihood.weights import log_weight_sampler, proposal_log_weights, resolve_chunk_size
from lvbench.estimators.proposals import Proposal, resolve_proposal

__all__ = ["cubo", "power_mean", "renyi"]


def power_mean(model, x: torch.Tensor, k: int, power: float, proposal: Proposal, chunk_size: int | None):
    """(1/p) log (1/k) Σ_i w_i^p for p != 0, and (1/k) Σ_i log w_i at p = 0 (its limit), in float64."""
    draw = log_weight_sampler(model, x, resolve_proposal(model, x, proposal))
    chunk = resolve_chunk_size(model, x, k, chunk_size)
    if power == 0:
        return stream(draw, k, chunk, Mean(), torch.float64)
    return stream(lambda c: power * draw(c), k, chunk, LogMeanExp(), torch.float64) / power


@estimator(
    "renyi",
    kind="likelihood",
    properties=("lower_bound",),
    log_weights=proposal_log_weights,
    constraints={"alpha": Interval(0.0, 1.0, why="where the bound is below log p(x)")},
)
def renyi(
    model,
    x: torch.Tensor,
    k: int,
    alpha: float = 0.5,
    proposal: Proposal = "encoder",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Variational Rényi bound, k samples: 1/(1-α) log (1/k) Σ w_i^(1-α); a lower bound for α in [0, 1]."""
    return power_mean(model, x, k, 1.0 - alpha, proposal, chunk_size).to(x.dtype)


@estimator(
    "cubo",
    kind="likelihood",
    properties=("upper_bound",),
    log_weights=proposal_log_weights,
    constraints={"n": Interval(1.0, why="where CUBO_n bounds log p(x) from above")},
)
def cubo(
    model,
    x: torch.Tensor,
    k: int,
    n: float = 2.0,
    proposal: Proposal = "encoder",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """χ upper bound CUBO_n, k samples: (1/n) log (1/k) Σ w_i^n; the bound is >= log p(x) for n >= 1."""
    return power_mean(model, x, k, float(n), proposal, chunk_size).to(x.dtype)
