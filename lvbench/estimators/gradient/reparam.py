"""Pathwise (reparameterization) gradient estimators for continuous latents: z = g_φ(ε), ε ~ p(ε).

- ``reparam``: ∇ of the objective at z = g_φ(ε) (Kingma & Welling 2014; Burda et al. 2016). Unbiased.
- ``stl``: "sticking the landing" (Roeder et al. 2017): the score term ∇_φ log q_φ(z) (zero mean) is
  dropped by stopping φ inside log q. Unbiased for the ELBO; for IWAE with k > 1 it is biased.
  With q = p(z|x) its φ-gradient is exactly zero.
- ``dreg``: doubly reparameterized IWAE gradient (Tucker et al. 2018):
  ∇_φ IWAE_k = E[Σ_i w̃_i² ∂lw_i/∂z_i ∂z_i/∂φ], unbiased, zero variance at q = p(z|x);
  θ gets the plain IWAE gradient Σ_i w̃_i ∇_θ log p(x, z_i).
"""

from __future__ import annotations

import torch

from lvbench.estimators.base import estimator
from lvbench.estimators.gradient.common import batch_objective, detached_encoder, normalized_weights, scale_gradient

__all__ = ["dreg", "reparam", "stl"]

NEEDS = ("reparameterizable", "encoder")


@estimator(
    "reparam",
    kind="gradient",
    needs=NEEDS,
    properties=("unbiased",),
    objectives=("elbo", "iwae"),
    surrogate_is_objective=True,
)
def reparam(model, x: torch.Tensor, k: int, objective: str = "elbo") -> torch.Tensor:
    """Surrogate: mean_x objective(lw), lw_i = log p(x, z_i) - log q_φ(z_i|x), z_i = rsample."""
    q = model.encoder(x)
    z = q.rsample((k,))
    return batch_objective(model.log_joint(x, z) - q.log_prob(z), objective).mean()


@estimator(
    "stl",
    kind="gradient",
    needs=NEEDS,
    objectives=("elbo", "iwae"),
    unbiased_for=("elbo",),
    surrogate_is_objective=True,
)
def stl(model, x: torch.Tensor, k: int, objective: str = "elbo") -> torch.Tensor:
    """Surrogate: mean_x objective(log p(x, z) - log q_{stop φ}(z)), z = rsample (φ only through z)."""
    z = model.encoder(x).rsample((k,))
    return batch_objective(model.log_joint(x, z) - detached_encoder(model, x).log_prob(z), objective).mean()


@estimator("dreg", kind="gradient", needs=NEEDS, properties=("unbiased",), objectives=("iwae",))
def dreg(model, x: torch.Tensor, k: int, objective: str = "iwae") -> torch.Tensor:
    """Surrogate: mean_x Σ_i w̃_i lw_i, log q's φ stopped, with the gradient reaching z_i (lw's φ-path)
    scaled by w̃_i (so weighted w̃_i²); one pass through the model."""
    z = model.encoder(x).rsample((k,))
    lw = model.log_joint(x, z) - detached_encoder(model, x).log_prob(z)
    w = normalized_weights(lw)
    scale_gradient(z, w)
    return (w * lw).sum(0).mean()
