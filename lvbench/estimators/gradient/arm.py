"""ARM (Yin & Zhou 2019) and DisARM (Dong, Mnih & Tucker 2020): unbiased gradients for Bernoulli latents.

With q(z|x) = Π Bernoulli(σ(α)) over all k·L binary latents of the k samples, and f(z) the objective
(ELBO_k = mean_i log w_i or IWAE_k = log mean_i w_i) of a k-tuple, the gradient through the
distribution's logits α is, with u ~ U(0, 1)^{k×L},

    ARM:     E_u[(f(1[u > σ(-α)]) - f(1[u < σ(α)])) (u - 1/2)]
    DisARM:  E_u[½ (f(b) - f(b̃)) (-1)^b̃ 1[b ≠ b̃] σ(|α|)],  b = 1[u < σ(α)], b̃ = 1[1 - u < σ(α)],

both unbiased, and DisARM's variance is never above ARM's (it integrates out the uniform noise given
the antithetic pair). The ELBO splits over samples, ELBO_k = Σ_i log w_i / k, so sample i's bits are
credited with log w_i / k alone (the per-sample form: its variance falls like 1/k); IWAE_k does not
split, so the pair differences are those of the whole k-tuple's objective. θ's gradient is ∇_θ f(b)
at b ~ q; for the IWAE objective f also depends on φ
through log q(b|x), whose expected gradient is not zero, so that direct term is kept (for the ELBO its
expectation is zero and it is dropped, as it would only add variance).
"""

from __future__ import annotations

import torch
from torch.distributions import Bernoulli, Independent

from lvbench.compute.bernoulli import bernoulli_log_prob
from lvbench.core.errors import LvbenchInputError
from lvbench.estimators.base import estimator
from lvbench.estimators.gradient.common import batch_objective

__all__ = ["arm", "disarm"]


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    q = model.encoder(x)
    if not (isinstance(q, Independent) and isinstance(q.base_dist, Bernoulli)):
        raise LvbenchInputError(f"ARM and DisARM need independent Bernoulli latents, got q = {type(q).__name__}")
    return q.base_dist.logits  # [N, L]


def _objective(model, x, z, log_q, objective: str) -> torch.Tensor:
    return batch_objective(model.log_joint(x, z) - log_q, objective)  # [N]


def _learning_signals(model, x, z, log_q, objective: str) -> torch.Tensor:
    """What each sample's bits are credited with, [k, N] or [1, N]: the ELBO is a sum over samples,
    ELBO_k = Σ_i lw_i / k, and sample i's bits change only lw_i, so each gets its own term (the
    antithetic difference of the others' terms is zero in expectation and only adds variance); the
    IWAE objective does not split, so every sample gets the whole of it."""
    lw = model.log_joint(x, z) - log_q
    return lw / lw.shape[0] if objective == "elbo" else batch_objective(lw, objective)[None]


def _surrogate(model, x: torch.Tensor, k: int, objective: str, coefficients) -> torch.Tensor:
    alpha = _logits(model, x)
    u = torch.rand((k, *alpha.shape), dtype=alpha.dtype, device=alpha.device)
    p = torch.sigmoid(alpha.detach())
    b = (u < p).to(alpha.dtype)

    def log_q(z: torch.Tensor, attached: bool) -> torch.Tensor:
        logits = alpha if attached else alpha.detach()
        return bernoulli_log_prob(z, logits)  # [k, N]

    with torch.no_grad():
        coef = coefficients(
            lambda z: _learning_signals(model, x, z, log_q(z, False), objective), u, p, b, alpha.detach()
        )
    direct = _objective(model, x, b, log_q(b, attached=objective == "iwae"), objective)  # θ (and IWAE's φ) path
    through_distribution = (coef.sum(0) * alpha).sum(-1)  # ∇_α of this is the estimator's coefficient
    return (direct + through_distribution).mean()


def _arm_coefficients(f, u, p, b, alpha):
    b_swap = (u > 1 - p).to(u.dtype)  # 1[u > σ(-α)]
    return (f(b_swap) - f(b))[..., None] * (u - 0.5)


def _disarm_coefficients(f, u, p, b, alpha):
    b_anti = (1 - u < p).to(u.dtype)
    sign = 1 - 2 * b_anti  # (-1)^b̃
    return 0.5 * (f(b) - f(b_anti))[..., None] * sign * (b != b_anti).to(u.dtype) * torch.sigmoid(alpha.abs())


NEEDS = ("binary_latent", "encoder")


@estimator("arm", kind="gradient", needs=NEEDS, properties=("unbiased",), objectives=("elbo", "iwae"))
def arm(model, x: torch.Tensor, k: int, objective: str = "elbo") -> torch.Tensor:
    """Surrogate: f(b) + Σ stopgrad[(f(b') - f(b))(u - ½)]·α with antithetic ARM pairs; unbiased."""
    return _surrogate(model, x, k, objective, _arm_coefficients)


@estimator("disarm", kind="gradient", needs=NEEDS, properties=("unbiased",), objectives=("elbo", "iwae"))
def disarm(model, x: torch.Tensor, k: int, objective: str = "elbo") -> torch.Tensor:
    """Surrogate: f(b) + Σ stopgrad[½(f(b) - f(b̃))(-1)^b̃ 1[b≠b̃] σ(|α|)]·α; unbiased, variance <= ARM's."""
    return _surrogate(model, x, k, objective, _disarm_coefficients)
