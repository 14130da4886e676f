"""Exact objectives and their gradients, where a model allows: the ground truth estimators are judged by.

- ``log_marginal``: the model's closed-form log p(x).
- ``elbo``: closed form for models with ``exact_elbo`` (LinearGaussian with its Gaussian encoder), or
  Σ_c q(c|x) [log p(x, c) - log q(c|x)] by enumeration for discrete latents.
- ``iwae`` (k samples): for discrete latents, E over all C^k sample tuples, computed over their
  C(k+C-1, C-1) multinomial count vectors (the objective depends on a tuple only through its counts);
  for k = 1 it is the ELBO. No closed form otherwise: use a high-precision Monte Carlo reference instead.
Gradients are autograd through these exact values (batch mean, as for gradient estimators).
"""

from __future__ import annotations

import math

import torch

from lvbench.core.errors import NoExactReference
from lvbench.core.protocol import capabilities_of, enumerate_latents
from lvbench.core.validation import LvbenchInputError, check_data, check_num_samples
from lvbench.estimators.gradient.enumeration import (
    MAX_ENUMERATION,
    enumerated_objective,
    enumeration_fits,
)

__all__ = ["NoExactReference", "enumerated_objective", "exact_gradient", "exact_objective", "has_exact"]


def _support_size(model) -> float:
    try:
        return enumerate_latents(model).shape[0]
    except LvbenchInputError:  # too many configurations to enumerate at all
        return math.inf


def has_exact(model, objective: str, k: int = 1, n_points: int = 1) -> bool:
    """Whether ``exact_objective`` can compute ``objective`` at ``k`` on ``model`` for ``n_points`` points."""
    caps = capabilities_of(model)
    if objective == "log_marginal":
        return "exact_marginal" in caps
    enumerable = "enumerable" in caps and "encoder" in caps
    if objective == "elbo" or k == 1:
        return hasattr(model, "exact_elbo") or (enumerable and _support_size(model) * n_points <= MAX_ENUMERATION)
    if objective == "iwae" and enumerable:
        return enumeration_fits(_support_size(model), k, n_points)
    return False


def exact_objective(model, x: torch.Tensor, objective: str, k: int = 1) -> torch.Tensor:
    """The exact objective per data point [N] ("log_marginal", "elbo", or "iwae" with k samples)."""
    k = check_num_samples(k, "k")
    x = check_data(x, model, getattr(model, "data_dim", None))
    if not has_exact(model, objective, k, x.shape[0]):
        raise NoExactReference(f"no exact {objective} (k={k}) for {type(model).__name__}; use a Monte Carlo reference")
    if objective == "log_marginal":
        return model.log_marginal(x)
    if hasattr(model, "exact_elbo") and (objective == "elbo" or k == 1):
        return model.exact_elbo(x)
    return enumerated_objective(model, x, objective, k)


def exact_gradient(model, x: torch.Tensor, objective: str, k: int = 1) -> dict[str, torch.Tensor]:
    """∇ of the exact objective averaged over the batch, per named parameter (zeros where unused)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    with torch.enable_grad():
        value = exact_objective(model, x, objective, k).mean()
        grads = torch.autograd.grad(value, [p for _, p in named], allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)).detach() for (n, p), g in zip(named, grads, strict=True)}
