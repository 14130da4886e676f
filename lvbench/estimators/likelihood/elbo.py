"""ELBO: (1/k) Σ_i [log p(x, z_i) - log q(z_i|x)], z_i ~ q — an unbiased estimate of the evidence
lower bound E_q[log p(x,z) - log q(z|x)] = log p(x) - KL(q || p(z|x)), so biased low for log p(x) by
that KL whatever k is (not consistent). ``analytic_kl=True`` uses E_q[log p(x|z)] - KL(q || p(z)) with
the KL in closed form (lower variance), where torch.distributions has it.
"""

from __future__ import annotations

import torch
from torch.distributions import kl_divergence

from lvbench.compute.streaming import Mean, stream
from lvbench.core.validation import LvbenchInputError
from lvbench.estimators.base import estimator
from lvbench.estimators.likelihood.weights import log_weight_sampler, resolve_chunk_size
from lvbench.estimators.proposals import Proposal, resolve_proposal

__all__ = ["elbo"]


@estimator("elbo", kind="likelihood", properties=("lower_bound",))
def elbo(
    model,
    x: torch.Tensor,
    k: int,
    proposal: Proposal = "encoder",
    analytic_kl: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """k-sample average of log weights (or expected log-likelihood minus closed-form KL)."""
    q = resolve_proposal(model, x, proposal)
    chunk = resolve_chunk_size(model, x, k, chunk_size)
    if not analytic_kl:
        return stream(log_weight_sampler(model, x, q), k, chunk, Mean(), x.dtype)
    try:
        kl = kl_divergence(q, model.prior())
    except NotImplementedError:
        raise LvbenchInputError(
            f"analytic_kl=True: no closed-form KL between {type(q).__name__} and {type(model.prior()).__name__}"
        ) from None
    expected_loglik = stream(lambda c: model.likelihood(q.sample((c,))).log_prob(x), k, chunk, Mean(), x.dtype)
    return expected_loglik - kl
