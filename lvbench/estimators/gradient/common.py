"""Pieces shared by gradient estimators: objectives from log-weights, stop-gradient calls, checks.

With log-weights lw_i = log p(x, z_i) - log q(z_i|x), i = 1..k, per data point:
  ELBO_k = (1/k) Σ_i lw_i,         IWAE_k = log (1/k) Σ_i exp(lw_i),
and every surrogate returns the batch mean, so its gradient estimates ∇ of the objective averaged over x.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution
from torch.func import functional_call

from lvbench.core.validation import LvbenchInputError

__all__ = [
    "OBJECTIVES",
    "batch_objective",
    "leave_one_out_log_mean_exp",
    "leave_one_out_mean",
    "detached_encoder",
    "detached_log_joint",
    "log_mean_exp",
    "normalized_weights",
    "scale_gradient",
]

OBJECTIVES = ("elbo", "iwae")


def log_mean_exp(lw: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/k) Σ exp(lw) over ``dim``."""
    return torch.logsumexp(lw, dim=dim) - math.log(lw.shape[dim])


def batch_objective(lw: torch.Tensor, objective: str) -> torch.Tensor:
    """The objective per data point from log-weights [k, N]: ELBO_k or IWAE_k, shape [N]."""
    if objective == "elbo":
        return lw.mean(0)
    if objective == "iwae":
        return log_mean_exp(lw)
    raise LvbenchInputError(f"objective must be one of {OBJECTIVES}, got {objective!r}")


def normalized_weights(lw: torch.Tensor) -> torch.Tensor:
    """w̃_i = w_i / Σ_j w_j over samples (dim 0), without gradient."""
    return torch.softmax(lw.detach(), dim=0)


def detached_encoder(model, x: torch.Tensor) -> Distribution:
    """q(z|x) with the encoder's parameters φ treated as constants (gradients flow only through z)."""
    params = {name: p.detach() for name, p in model.encoder.named_parameters()}
    return functional_call(model.encoder, params, (x,))


class _LogJoint(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.model.log_joint(x, z)


def detached_log_joint(model, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(x, z) with the model's parameters treated as constants (gradients flow only through z)."""
    params = {f"model.{name}": p.detach() for name, p in model.named_parameters()}
    return functional_call(_LogJoint(model), params, (x, z))


def scale_gradient(z: torch.Tensor, scale: torch.Tensor) -> None:
    """Multiply the gradient that reaches z (and through it z's inputs) by ``scale`` (broadcast [k, N]),
    leaving z's value and every other path untouched: a hook, so ``scale`` may come from z's own use."""
    if z.requires_grad:
        scale = scale.detach().reshape(*scale.shape, *([1] * (z.dim() - scale.dim())))
        z.register_hook(lambda grad: grad * scale)


def leave_one_out_mean(lw: torch.Tensor) -> torch.Tensor:
    """mean_{j≠i} lw_j for each sample i, [k, N] (k >= 2)."""
    return (lw.sum(0) - lw) / (lw.shape[0] - 1)


def leave_one_out_log_mean_exp(lw: torch.Tensor, replace_with: torch.Tensor | None = None) -> torch.Tensor:
    """For each sample i, [k, N]: log (1/(k-1)) Σ_{j≠i} w_j (``replace_with`` None: sample i left out), or
    log (1/k) (Σ_{j≠i} w_j + exp(replace_with_i)) (sample i's log-weight replaced, as VIMCO does)."""
    k = lw.shape[0]
    vectors = lw.unsqueeze(0).expand(k, *lw.shape).clone()  # [k (which one is out), k, N]
    idx = torch.arange(k, device=lw.device)
    vectors[idx, idx] = -math.inf if replace_with is None else replace_with
    return torch.logsumexp(vectors, dim=1) - math.log(k - 1 if replace_with is None else k)
