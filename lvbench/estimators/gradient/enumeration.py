"""Exact gradients for discrete latents by enumeration: ∇ Σ_c q(c|x)[log p(x,c) - log q(c|x)] (ELBO),
or the IWAE-k objective as an expectation over all C^k sample tuples. Zero variance, no bias; cost
grows like C (ELBO) or C^k (IWAE). ``num_samples`` is the k of the objective.
"""

from __future__ import annotations

import itertools
import math

import torch

from lvbench.core.errors import LvbenchInputError, NoExactReference
from lvbench.core.protocol import enumerate_latents
from lvbench.estimators.base import estimator

__all__ = ["MAX_ENUMERATION", "enumerated_objective", "enumeration", "enumeration_fits"]

#: Most (count vectors × data points × categories) an enumerated IWAE objective may materialize.
MAX_ENUMERATION = 2**24


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
    if not enumeration_fits(categories, k, x.shape[0]):
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


@estimator(
    "enumeration",
    kind="gradient",
    needs=("enumerable", "encoder"),
    properties=("unbiased",),
    objectives=("elbo", "iwae"),
    surrogate_is_objective=True,
)
def enumeration(model, x: torch.Tensor, k: int, objective: str = "elbo") -> torch.Tensor:
    """Surrogate: the exact objective by enumeration, averaged over the batch."""
    return enumerated_objective(model, x, objective, k).mean()


def enumeration_fits(categories: float, k: int, n_points: int) -> bool:
    """Whether the IWAE-k objective over ``categories`` for ``n_points`` points fits ``MAX_ENUMERATION``."""
    if categories == math.inf:
        return False
    return _multisets(int(categories), k) * n_points * categories <= MAX_ENUMERATION
