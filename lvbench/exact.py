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

import itertools
import math

import torch

from lvbench.protocol import capabilities_of, enumerate_latents
from lvbench.validation import LvbenchInputError, check_data, check_num_samples

__all__ = ["NoExactReference", "enumerated_objective", "exact_gradient", "exact_objective", "has_exact"]

#: Most (count vectors × data points × categories) an enumerated IWAE objective may materialize.
MAX_ENUMERATION = 2**24


class NoExactReference(LvbenchInputError):
    """No closed form or enumeration gives this objective on this model."""


def enumerated_objective(model, x: torch.Tensor, objective: str, k: int = 1) -> torch.Tensor:
    """ELBO or IWAE-k of a discrete-latent model's encoder by enumerating the support: [N], differentiable."""
    support = enumerate_latents(model)
    q = model.encoder(x)
    z = support[:, None].expand(support.shape[0], x.shape[0], *support.shape[1:])  # [C, N, *event]
    log_q = q.log_prob(z)  # [C, N]
    lw = model.log_joint(x, z) - log_q
    if objective == "elbo" or k == 1:
        return torch.where(log_q > -math.inf, log_q.exp() * lw, torch.zeros_like(lw)).sum(0)
    if objective != "iwae":
        raise LvbenchInputError(f"objective must be 'elbo' or 'iwae', got {objective!r}")
    categories = support.shape[0]
    if not _enumeration_fits(categories, k, x.shape[0]):
        raise NoExactReference(
            f"enumerating IWAE-{k} over the {_multisets(categories, k)} count vectors of {categories} categories "
            f"for {x.shape[0]} points is too large"
        )
    # IWAE-k depends on a sample tuple only through its counts n (Σ_c n_c = k), which are multinomial:
    # E[log (1/k) Σ_i w_i] = Σ_n Mult(n; k, q) log (Σ_c n_c w_c / k), over C(k+C-1, C-1) count vectors
    # instead of C^k tuples (5,151 instead of 3^100 for three components at k = 100).
    counts = _count_vectors(categories, k, x.device).to(lw.dtype)  # [M, C]
    log_mult = math.lgamma(k + 1) - torch.lgamma(counts + 1).sum(1)  # [M]
    finite_q = torch.where(log_q > -math.inf, log_q, torch.zeros_like(log_q))
    log_p_counts = log_mult[:, None] + counts @ finite_q  # [M, N]
    impossible = (counts[:, :, None] > 0) & (log_q[None] == -math.inf)  # a count on a zero-probability category
    log_p_counts = torch.where(impossible.any(1), torch.full_like(log_p_counts, -math.inf), log_p_counts)
    value = torch.logsumexp(counts.log()[:, :, None] + lw[None], dim=1) - math.log(k)  # [M, N]
    weight = log_p_counts.exp()
    return torch.where(weight > 0, weight * value, torch.zeros_like(value)).sum(0)


def _multisets(categories: int, k: int) -> int:
    return math.comb(k + categories - 1, categories - 1)


def _count_vectors(categories: int, k: int, device) -> torch.Tensor:
    """Every n in N^C with Σ n = k, [C(k+C-1, C-1), C]."""
    rows = [torch.bincount(torch.tensor(c), minlength=categories) for c in _combinations(categories, k)]
    return torch.stack(rows).to(device)


def _combinations(categories: int, k: int):
    return itertools.combinations_with_replacement(range(categories), k)


def _support_size(model) -> float:
    try:
        return enumerate_latents(model).shape[0]
    except LvbenchInputError:  # too many configurations to enumerate at all
        return math.inf


def _enumeration_fits(categories: float, k: int, n_points: int) -> bool:
    if categories == math.inf:
        return False
    return _multisets(int(categories), k) * n_points * categories <= MAX_ENUMERATION


def has_exact(model, objective: str, k: int = 1, n_points: int = 1) -> bool:
    """Whether ``exact_objective`` can compute ``objective`` at ``k`` on ``model`` for ``n_points`` points."""
    caps = capabilities_of(model)
    if objective == "log_marginal":
        return "exact_marginal" in caps
    enumerable = "enumerable" in caps and "encoder" in caps
    if objective == "elbo" or k == 1:
        return hasattr(model, "exact_elbo") or (enumerable and _support_size(model) * n_points <= MAX_ENUMERATION)
    if objective == "iwae" and enumerable:
        return _enumeration_fits(_support_size(model), k, n_points)
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
