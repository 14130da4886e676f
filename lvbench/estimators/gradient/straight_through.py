"""Straight-through gradients for Bernoulli latents (Bengio, Léonard & Courville 2013): biased, cheap.

- ``straight_through``: the forward pass uses b ~ Bernoulli(σ(α)); the backward pass treats b as if it
  were σ(α) (z = b + σ(α) - stopgrad σ(α)), so ∇_α flows through the objective evaluated at the
  discrete sample. Biased wherever the objective is not linear in z.
- ``straight_through_gumbel``: the forward pass uses the hard threshold of a binary Concrete sample
  z̃ = σ((α + log u - log(1-u)) / τ), the backward pass its soft value (Jang et al. 2017's
  straight-through Gumbel-softmax for two classes). Biased; the bias depends on ``temperature``.
Both need the objective's log p(x, z) and log q(z|x) to accept z in [0, 1] (true for the binary VAE:
its prior, decoder and encoder log-probabilities are written for real-valued z).
"""

from __future__ import annotations

import torch

from lvbench.compute.bernoulli import bernoulli_log_prob
from lvbench.core.errors import LvbenchInputError
from lvbench.estimators.base import estimator
from lvbench.estimators.gradient.arm import _logits
from lvbench.estimators.gradient.common import batch_objective

__all__ = ["straight_through", "straight_through_gumbel"]


def _objective_at(model, x: torch.Tensor, alpha: torch.Tensor, z: torch.Tensor, objective: str) -> torch.Tensor:
    log_q = bernoulli_log_prob(z, alpha)  # log q(z|x) for z in {0, 1}, extended linearly
    return batch_objective(model.log_joint(x, z) - log_q, objective).mean()


@estimator("straight_through", kind="gradient", needs=("binary_latent", "encoder"), objectives=("elbo", "iwae"))
def straight_through(model, x: torch.Tensor, k: int, objective: str = "elbo") -> torch.Tensor:
    """Surrogate: the objective at z = b + σ(α) - stopgrad σ(α), b ~ Bernoulli(σ(α)); biased."""
    alpha = _logits(model, x)
    p = torch.sigmoid(alpha)
    b = (torch.rand((k, *alpha.shape), dtype=alpha.dtype, device=alpha.device) < p.detach()).to(alpha.dtype)
    return _objective_at(model, x, alpha, b + p - p.detach(), objective)


@estimator("straight_through_gumbel", kind="gradient", needs=("binary_latent", "encoder"), objectives=("elbo", "iwae"))
def straight_through_gumbel(
    model, x: torch.Tensor, k: int, objective: str = "elbo", temperature: float = 0.5
) -> torch.Tensor:
    """Surrogate: the objective at the hard binary Concrete sample, gradients through the soft one; biased."""
    if not temperature > 0:
        raise LvbenchInputError(f"temperature must be > 0, got {temperature}")
    alpha = _logits(model, x)
    u = torch.rand((k, *alpha.shape), dtype=alpha.dtype, device=alpha.device).clamp(1e-12, 1 - 1e-12)
    soft = torch.sigmoid((alpha + torch.log(u) - torch.log1p(-u)) / temperature)
    hard = (soft > 0.5).to(alpha.dtype)
    return _objective_at(model, x, alpha, hard + soft - soft.detach(), objective)
