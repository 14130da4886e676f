"""Concrete / Gumbel-softmax relaxation (Maddison et al. 2017; Jang et al. 2017) for categorical z.

The one-hot z is replaced by z̃ = softmax((log π + g) / τ), g ~ Gumbel, which is reparameterizable.
The relaxed objective uses lw = log p(x | z̃) + log p_τ(z̃) - log q_τ(z̃|x), with Concrete densities
for prior and posterior, evaluated in log-space (ExpConcrete) for stability; the ratio of densities is
the same in either space. The gradient is biased for the discrete objective (less so as τ -> 0, at the
price of variance).
"""

from __future__ import annotations

import torch
from torch.distributions import Categorical
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from lvbench.compute.torch_patches import unvalidated_distributions
from lvbench.core.options import Interval
from lvbench.core.validation import LvbenchInputError
from lvbench.estimators.base import estimator
from lvbench.estimators.gradient.common import batch_objective

__all__ = ["gumbel_softmax"]


@estimator(
    "gumbel_softmax",
    kind="gradient",
    needs=("relaxable", "encoder"),
    objectives=("elbo", "iwae"),
    constraints={"temperature": Interval(0.0, low_open=True), "prior_temperature": Interval(0.0, low_open=True)},
)
def gumbel_softmax(
    model,
    x: torch.Tensor,
    k: int,
    objective: str = "elbo",
    temperature: float = 0.5,
    prior_temperature: float | None = None,
) -> torch.Tensor:
    """Surrogate: mean_x objective(log p(x|z̃) + log p_τ(z̃) - log q_τ(z̃|x)), z̃ ~ Concrete(q, τ)."""
    q = model.encoder(x)
    if not isinstance(q, Categorical):
        raise LvbenchInputError(f"gumbel_softmax needs a Categorical encoder, got {type(q).__name__}")
    tau = torch.as_tensor(temperature, dtype=x.dtype, device=x.device)
    tau_p = tau if prior_temperature is None else torch.as_tensor(prior_temperature, dtype=x.dtype, device=x.device)
    with unvalidated_distributions():  # validate_args too: otherwise log_prob reads the default after the block
        q_relaxed = ExpRelaxedCategorical(tau, logits=q.logits, validate_args=False)
        p_relaxed = ExpRelaxedCategorical(tau_p, logits=model.prior().logits, validate_args=False)
    log_z = q_relaxed.rsample((k,))  # [k, N, C], log of a point on the simplex
    lw = model.relaxed_likelihood(log_z.exp()).log_prob(x) + p_relaxed.log_prob(log_z) - q_relaxed.log_prob(log_z)
    return batch_objective(lw, objective).mean()
