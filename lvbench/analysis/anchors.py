"""Known answers that training studies are judged against.

- Probabilistic PCA with a fixed noise σ (``LinearGaussian``): the maximum-likelihood solution in closed
  form (Tipping & Bishop 1999). With the sample mean x̄ and covariance S = U Λ Uᵀ (λ₁ ≥ … ≥ λ_D),
  b* = x̄ and W* = U_L diag(√max(λ_j − σ², 0)) (up to a rotation); the model's covariance C = W Wᵀ + σ² I
  then has eigenvalues max(λ_j, σ²) for j ≤ L and σ² beyond, and the mean log-likelihood is
  −½ [D log 2π + log |C| + tr(C⁻¹ S)].
- Gaussian mixture (``GaussianMixture``): expectation-maximization, an exact E-step (the posterior over
  components) and a closed-form M-step (weights, means, diagonal variances): each step never decreases
  the training log-likelihood (Dempster, Laird & Rubin 1977).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lvbench.core.errors import LvbenchInputError

__all__ = ["PPCAOptimum", "em_step", "ppca_optimum"]

#: Smallest variance the M-step assigns a component's coordinate (a component on one point collapses).
EM_MIN_VARIANCE = 1e-6


@dataclass(frozen=True)
class PPCAOptimum:
    """The maximum-likelihood PPCA parameters of a data set at a fixed noise σ, and what they attain."""

    weight: torch.Tensor  # [D, L]
    bias: torch.Tensor  # [D]
    mean_log_likelihood: float  # (1/N) Σ_n log p(x_n) at the optimum, nats per point


def ppca_optimum(x: torch.Tensor, latent_dim: int, noise_std: float) -> PPCAOptimum:
    """The closed-form maximum of the PPCA log-likelihood of ``x`` [N, D] over W [D, L] and b [D] at fixed σ."""
    if x.dim() != 2 or x.shape[0] < 2:
        raise LvbenchInputError(f"ppca_optimum needs data [N >= 2, D], got shape {tuple(x.shape)}")
    if not 1 <= latent_dim <= x.shape[1]:
        raise LvbenchInputError(f"latent_dim must lie in [1, D = {x.shape[1]}], got {latent_dim}")
    x = x.detach().double().cpu()
    n, d = x.shape
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / n
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    eigvals, eigvecs = eigvals.flip(0), eigvecs.flip(1)
    var = float(noise_std) ** 2
    top = eigvals[:latent_dim]
    weight = eigvecs[:, :latent_dim] * (top - var).clamp_min(0).sqrt()
    model_eig = torch.cat([top.clamp_min(var), torch.full((d - latent_dim,), var, dtype=torch.float64)])
    trace = (eigvals / model_eig).sum()  # tr(C⁻¹ S): C and S share their eigenvectors at the optimum
    mean_ll = -0.5 * (d * math.log(2 * math.pi) + model_eig.log().sum() + trace)
    return PPCAOptimum(weight=weight, bias=mean, mean_log_likelihood=float(mean_ll))


@torch.no_grad()
def em_step(model: torch.nn.Module, x: torch.Tensor) -> float:
    """One EM step on a ``GaussianMixture``'s θ (logits, means, log_stds), in place; returns the mean
    training log-likelihood (1/N) Σ log p(x_n) of the parameters before the step."""
    from lvbench.models.gaussian_mixture import GaussianMixture

    if not isinstance(model, GaussianMixture):
        raise LvbenchInputError(f"EM is defined here for a gaussian_mixture, not a {type(model).__name__}")
    log_joint = model.prior().logits + model.component_log_likelihoods(x)  # [N, C]
    log_px = torch.logsumexp(log_joint, dim=-1)
    resp = (log_joint - log_px[:, None]).exp()  # exact E-step: p(z = c | x_n)
    weight = resp.sum(0)  # [C]
    safe = weight.clamp_min(torch.finfo(x.dtype).tiny)
    means = resp.T @ x / safe[:, None]
    variances = (resp.T @ x.square() / safe[:, None] - means.square()).clamp_min(EM_MIN_VARIANCE)
    occupied = weight > 0  # a component no point chose keeps its parameters
    model.logits.copy_((weight / x.shape[0]).clamp_min(torch.finfo(x.dtype).tiny).log())
    model.means.copy_(torch.where(occupied[:, None], means, model.means))
    model.log_stds.copy_(torch.where(occupied[:, None], 0.5 * variances.log(), model.log_stds))
    return float(log_px.mean())
