"""Where the gap between log p(x) and the ELBO comes from (Cremer, Li & Duvenaud 2018).

Per data point, with q(z|x) the amortized encoder and q* the best member of the same family for that
point alone (found by optimizing its parameters, started from the encoder's output):

    log p(x) - ELBO(q) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q)]
                       =   approximation gap   +   amortization gap,

both non-negative. q* is found by Adam on a deterministic objective: the ELBO over a fixed set of
standard-normal draws, centred and whitened so that their mean is exactly 0 and their covariance
exactly I (for a model whose log p(x, z) is quadratic in z, such as the linear-Gaussian one, this
sample ELBO equals the true ELBO); the best iterate is kept. Both ELBOs are then evaluated on one
larger, likewise whitened set of draws, so their difference is paired. Families: diagonal Gaussian
(optimized: mean and log standard deviation), categorical (optimized: logits; its ELBO is exact by
enumeration) and independent Bernoulli (optimized: logits; its ELBO is exact by enumerating the
2^L configurations).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, Normal
from torch.nn import functional as F

from lvbench.core.errors import LvbenchInputError
from lvbench.core.protocol import capabilities_of, conditioned_log_joint, enumerate_latents
from lvbench.core.validation import check_data, check_num_samples

__all__ = ["FAMILIES", "Family", "inference_gaps"]


def _whitened_normal(n: int, shape: torch.Size, dtype, device, generator: torch.Generator) -> torch.Tensor:
    """n standard-normal draws of ``shape`` (one per point and latent dimension), centred and whitened
    across the n draws: exactly zero mean and identity covariance per point."""
    eps = torch.randn((n, *shape), dtype=torch.float64, generator=generator)
    eps = eps - eps.mean(0)
    flat = eps.reshape(n, shape[0], -1).transpose(0, 1)  # [N, n, L]
    cov = flat.transpose(1, 2) @ flat / n  # [N, L, L]
    chol = torch.linalg.cholesky(cov)
    white = torch.linalg.solve_triangular(chol, flat.transpose(1, 2), upper=False).transpose(1, 2)
    return white.transpose(0, 1).reshape(n, *shape).to(dtype=dtype, device=device)


def _gaussian_elbo(log_joint, loc, log_scale, eps) -> torch.Tensor:
    """Sample ELBO per point: mean over draws of log p(x, μ + σε) + entropy of N(μ, diag σ²)."""
    z = loc + log_scale.exp() * eps
    entropy = log_scale.sum(-1) + 0.5 * loc.shape[-1] * (1 + math.log(2 * math.pi))
    return log_joint(z).mean(0) + entropy


def _categorical_elbo(log_joint_by_category, logits) -> torch.Tensor:
    log_q = torch.log_softmax(logits, -1)  # [N, C]
    return (log_q.exp() * (log_joint_by_category - log_q)).sum(-1)


def _bernoulli_elbo(log_joint_by_config, support, logits) -> torch.Tensor:
    """Exact ELBO of independent Bernoulli q over the enumerated configurations [C, L]."""
    log_q = support @ logits.T - F.softplus(logits).sum(-1)  # [C, N]: Σ_l z_l a_l - softplus(a_l)
    return (log_q.T.exp() * (log_joint_by_config - log_q.T)).sum(-1)


def _optimize(objective, params: list[torch.Tensor], steps: int, lr: float) -> list[torch.Tensor]:
    """Adam ascent on objective(*params) -> [N] (summed over points, which are independent); the best
    iterate per point is kept."""
    params = [p.detach().clone().requires_grad_(True) for p in params]
    best = [p.detach().clone() for p in params]
    with torch.no_grad():
        best_value = objective(*params)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        value = objective(*params)
        (-value.sum()).backward()
        opt.step()
        with torch.no_grad():
            current = objective(*params)
            better = current > best_value
            best_value = torch.where(better, current, best_value)
            for b, p in zip(best, params, strict=True):
                b[better] = p[better]
    return best


@dataclass(frozen=True)
class _Options:
    steps: int
    lr: float
    samples: int
    eval_samples: int
    generator: torch.Generator


def _gaussian_gaps(model, x, q, log_joint, o: _Options) -> tuple[torch.Tensor, torch.Tensor]:
    """(ELBO(q), ELBO(q*)) for a diagonal Gaussian q: Adam on its mean and log standard deviation over
    whitened draws, both ELBOs on one larger whitened set."""
    loc, log_scale = q.base_dist.loc.detach(), q.base_dist.scale.detach().log()
    fit = _whitened_normal(o.samples, loc.shape, x.dtype, x.device, o.generator)
    evaluate = _whitened_normal(o.eval_samples, loc.shape, x.dtype, x.device, o.generator)
    best = _optimize(lambda m, s: _gaussian_elbo(log_joint, m, s, fit), [loc, log_scale], o.steps, o.lr)
    with torch.no_grad():
        return _gaussian_elbo(log_joint, loc, log_scale, evaluate), _gaussian_elbo(log_joint, *best, evaluate)


def _bernoulli_gaps(model, x, q, log_joint, o: _Options) -> tuple[torch.Tensor, torch.Tensor]:
    """(ELBO(q), ELBO(q*)) for independent Bernoulli q: Adam on its logits, ELBOs exact by enumeration."""
    support = enumerate_latents(model)  # [C, L] binary configurations
    with torch.no_grad():
        by_config = log_joint(support[:, None].expand(-1, x.shape[0], -1)).T  # [N, C]
    logits = q.base_dist.logits.detach()
    (best,) = _optimize(lambda a: _bernoulli_elbo(by_config, support, a), [logits], o.steps, o.lr)
    with torch.no_grad():
        return _bernoulli_elbo(by_config, support, logits), _bernoulli_elbo(by_config, support, best)


def _categorical_gaps(model, x, q, log_joint, o: _Options) -> tuple[torch.Tensor, torch.Tensor]:
    """(ELBO(q), ELBO(q*)) for categorical q: Adam on its logits, ELBOs exact by enumeration."""
    support = enumerate_latents(model)
    with torch.no_grad():
        by_category = log_joint(support[:, None].expand(support.shape[0], x.shape[0])).T  # [N, C]
    logits = q.logits.detach()
    (best,) = _optimize(lambda lg: _categorical_elbo(by_category, lg), [logits], o.steps, o.lr)
    with torch.no_grad():
        return _categorical_elbo(by_category, logits), _categorical_elbo(by_category, best)


@dataclass(frozen=True)
class Family:
    """A variational family inference gaps can optimize: which q it is, and how to find q* in it."""

    name: str
    matches: Callable[[Distribution], bool]
    gaps: Callable[..., tuple[torch.Tensor, torch.Tensor]]


#: The families, tried in order: the first whose ``matches(q)`` holds computes the gaps.
FAMILIES = [
    Family(
        "diagonal-Gaussian",
        lambda q: isinstance(q, Independent) and isinstance(q.base_dist, Normal),
        _gaussian_gaps,
    ),
    Family(
        "Bernoulli",
        lambda q: isinstance(q, Independent) and isinstance(q.base_dist, Bernoulli),
        _bernoulli_gaps,
    ),
    Family("categorical", lambda q: isinstance(q, Categorical), _categorical_gaps),
]


def inference_gaps(
    model,
    x: torch.Tensor,
    steps: int = 500,
    lr: float = 0.05,
    samples: int = 256,
    eval_samples: int = 4096,
    log_marginal: torch.Tensor | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Per point: log p(x) (the model's exact value, or ``log_marginal`` given, e.g. a strong reference),
    ELBO of the encoder's q, ELBO of the per-point optimized q* (``steps`` of Adam at ``lr`` on
    ``samples`` fixed draws), the approximation gap log p(x) - ELBO(q*) and the amortization gap
    ELBO(q*) - ELBO(q)."""
    steps, samples = check_num_samples(steps, "steps"), check_num_samples(samples, "samples")
    eval_samples = check_num_samples(eval_samples, "eval_samples")
    x = check_data(x, model, getattr(model, "data_dim", None))
    caps = capabilities_of(model)
    if "encoder" not in caps:
        raise LvbenchInputError(f"inference gaps need an amortized encoder; {type(model).__name__} has none")
    if log_marginal is None:
        if "exact_marginal" not in caps:
            raise LvbenchInputError("no exact log p(x) for this model: pass log_marginal= (e.g. a strong reference)")
        with torch.no_grad():
            log_marginal = model.log_marginal(x)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        q = model.encoder(x)
    family = next((f for f in FAMILIES if f.matches(q)), None)
    if family is None:
        raise LvbenchInputError(
            f"inference gaps support {', '.join(f.name for f in FAMILIES)} encoders, not {type(q).__name__}"
        )
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:  # before the closure: its x-only terms must not hold a graph to the weights
        p.requires_grad_(False)
    try:
        options = _Options(steps, lr, samples, eval_samples, generator)
        elbo_q, elbo_star = family.gaps(model, x, q, conditioned_log_joint(model, x), options)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    elbo_star = torch.maximum(elbo_star, elbo_q)  # q itself is in the family: never report worse
    log_p = log_marginal.detach().to(torch.float64).cpu()
    elbo_q, elbo_star = elbo_q.to(torch.float64).cpu(), elbo_star.to(torch.float64).cpu()
    return pd.DataFrame(
        {
            "point": range(x.shape[0]),
            "log_p": log_p.numpy(),
            "elbo_encoder": elbo_q.numpy(),
            "elbo_optimized": elbo_star.numpy(),
            "approximation_gap": (log_p - elbo_star).numpy(),
            "amortization_gap": (elbo_star - elbo_q).numpy(),
            "total_gap": (log_p - elbo_q).numpy(),
        }
    )
