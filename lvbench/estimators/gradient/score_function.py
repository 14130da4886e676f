"""Score-function (log-derivative, REINFORCE) gradient estimators: z ~ q_φ without reparameterization.

∇_φ E_q[f_φ(z)] = E_q[∇_φ f_φ(z) + (f_φ(z) - b) ∇_φ log q_φ(z)] for any baseline b independent of z
(Williams 1992). They need only q.sample and q.log_prob, so they work for discrete latents too.
- ``score_function``: b = 0. Unbiased, often very noisy.
- ``score_function_loo``: b_i from the other k-1 samples (Kool et al. 2019, "Buy 4 REINFORCE
  samples"): ELBO: b_i = mean_{j≠i} lw_j; IWAE: b_i = log mean_{j≠i} w_j. Unbiased, needs k >= 2.
For IWAE the learning signal of every sample is L = IWAE_k (a function of all k samples).
"""

from __future__ import annotations

import torch

from lvbench.estimators.base import estimator
from lvbench.estimators.gradient.common import batch_objective, leave_one_out_log_mean_exp, leave_one_out_mean

__all__ = ["score_function", "score_function_loo", "score_surrogate"]


def score_surrogate(model, x: torch.Tensor, k: int, objective: str, baseline, scale: float = 1.0) -> torch.Tensor:
    """mean_x [objective(lw) + Σ_i stopgrad(signal_i - b_i) log q(z_i) / scale], z_i ~ q without gradient."""
    q = model.encoder(x)
    z = q.sample((k,))
    log_q = q.log_prob(z)
    lw = model.log_joint(x, z) - log_q
    value = batch_objective(lw, objective)
    signal = lw if objective == "elbo" else value.expand_as(lw)
    advantage = (signal - baseline(lw.detach(), objective)).detach() / scale
    if objective == "elbo":
        advantage = advantage / k  # the ELBO averages over samples
    return (value + (advantage * log_q).sum(0)).mean()


def no_baseline(lw: torch.Tensor, objective: str) -> torch.Tensor:
    return torch.zeros_like(lw)


def leave_one_out(lw: torch.Tensor, objective: str) -> torch.Tensor:
    """b_i from samples j ≠ i: their mean log-weight (ELBO) or their log-mean-exp (IWAE)."""
    if objective == "elbo":
        return leave_one_out_mean(lw)
    return leave_one_out_log_mean_exp(lw)


@estimator("score_function", kind="gradient", needs=("encoder",), properties=("unbiased",), objectives=("elbo", "iwae"))
def score_function(model, x: torch.Tensor, k: int, objective: str = "elbo") -> torch.Tensor:
    """REINFORCE with no baseline."""
    return score_surrogate(model, x, k, objective, no_baseline)


@estimator(
    "score_function_loo",
    kind="gradient",
    needs=("encoder",),
    properties=("unbiased",),
    objectives=("elbo", "iwae"),
    min_k=2,
)
def score_function_loo(model, x: torch.Tensor, k: int, objective: str = "elbo") -> torch.Tensor:
    """REINFORCE with a leave-one-out baseline from the other k-1 samples (k >= 2)."""
    return score_surrogate(model, x, k, objective, leave_one_out)
