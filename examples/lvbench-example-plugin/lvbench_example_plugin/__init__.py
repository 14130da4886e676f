"""IWAE with antithetic samples: an lvbench estimator defined outside lvbench.

For a diagonal-Gaussian proposal q = N(μ, diag σ²), draw ε ~ N(0, I) and use both z = μ + σε and
z' = μ - σε. Each weight w = p(x, z)/q(z) still has expectation p(x), so (1/k) Σ w is unbiased for
p(x) and its log is a lower bound on log p(x) that is consistent in k, like IWAE; when w is monotone
along ε the paired weights are negatively correlated and the variance drops.

What a plugin author uses from lvbench, all public:
- ``lvbench.estimators.estimator``: registers the function; the decorator validates x, k and the
  options (against this signature and its ``Literal`` annotations) and checks the model's capabilities;
- ``resolve_proposal``: turns ``proposal="encoder" | "prior" | "posterior"`` into a Distribution [N];
- ``stream`` with ``LogMeanExp`` and ``resolve_chunk_size``: k streamed in chunks sized by the memory
  budget, so memory stays flat in k;
- ``conditioned_log_joint``: z -> log p(x, z) for fixed x (fast on models that precompute x terms);
- ``log_weights=``: a hook giving the k log-weights [k, N], so reports show Pareto k-hat and ESS.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Independent, Normal

from lvbench.compute.streaming import LogMeanExp, stream
from lvbench.core.errors import LvbenchInputError
from lvbench.core.protocol import conditioned_log_joint
from lvbench.estimators import estimator
from lvbench.estimators.likelihood.weights import resolve_chunk_size
from lvbench.estimators.proposals import Proposal, resolve_proposal

__all__ = ["antithetic_iwae"]


def _gaussian(model, x: torch.Tensor, proposal: Proposal) -> Normal:
    q = resolve_proposal(model, x, proposal)
    if not (isinstance(q, Independent) and type(q.base_dist) is Normal and q.reinterpreted_batch_ndims == 1):
        raise LvbenchInputError(f"antithetic_iwae needs a diagonal-Gaussian proposal, got {type(q).__name__}")
    return q.base_dist


def _sampler(model, x: torch.Tensor, proposal: Proposal):
    """c -> log w [c, N] for c samples in antithetic pairs (the last one unpaired when c is odd)."""
    q = _gaussian(model, x, proposal)
    log_joint = conditioned_log_joint(model, x)
    const = q.scale.log().sum(-1) + 0.5 * q.loc.shape[-1] * math.log(2 * math.pi)

    def draw(c: int) -> torch.Tensor:
        eps = torch.randn(((c + 1) // 2, *q.loc.shape), dtype=q.loc.dtype, device=q.loc.device)
        eps = torch.cat([eps, -eps])[:c]  # ε and -ε: both N(0, I), so each weight keeps mean p(x)
        log_q = -0.5 * eps.square().sum(-1) - const
        return log_joint(q.loc + q.scale * eps) - log_q

    return draw


def _log_weights(model, x: torch.Tensor, k: int, proposal: Proposal = "encoder", **_: object) -> torch.Tensor:
    return _sampler(model, x, proposal)(k)


@estimator(
    "antithetic_iwae",
    kind="likelihood",
    needs=("continuous_latent",),
    properties=("lower_bound", "unbiased_p", "consistent"),
    log_weights=_log_weights,
)
def antithetic_iwae(
    model, x: torch.Tensor, k: int, proposal: Proposal = "encoder", chunk_size: int | None = None
) -> torch.Tensor:
    """Antithetic IWAE-k: log (1/k) Σ_i w(μ ± σε_i), unbiased for p(x), a consistent lower bound on log p(x)."""
    chunk = resolve_chunk_size(model, x, k, chunk_size)
    chunk += chunk % 2  # whole pairs per chunk
    return stream(_sampler(model, x, proposal), k, min(chunk, k), LogMeanExp(), x.dtype)
