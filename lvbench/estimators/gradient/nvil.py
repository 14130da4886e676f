"""NVIL (Mnih & Gregor 2014): the score-function gradient with a learned input-dependent baseline.

∇_φ ≈ Σ_i (l_i - b_ψ(x)) ∇_φ log q(z_i|x) / s, with the learning signal l_i = log w_i for the ELBO
(IWAE_k, shared by the k samples, for the IWAE objective) and b_ψ(x) = c + MLP_ψ(x) a baseline that
does not depend on z, so the estimator is unbiased for any ψ. ψ is fitted before the study by
regressing the signal on x (minimizing E[(l - b_ψ(x))²], NVIL's own objective) for ``fit_steps`` Adam
steps. NVIL's variance normalization divides the centred signal by s = max(1, σ̂), σ̂ the residual's
standard deviation at the end of the fit; it rescales φ's gradient (an adaptive step size in training),
so with ``normalize=True`` the estimate is biased by that factor; the default leaves it off.
Without a fitted ``control`` the baseline is zero (plain REINFORCE).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lvbench.estimators.base import estimator
from lvbench.estimators.gradient.common import batch_objective
from lvbench.estimators.gradient.fitted import FittedControl, fit_by_adam
from lvbench.estimators.gradient.score_function import score_surrogate
from lvbench.models.base import mlp

__all__ = ["InputBaseline", "nvil"]


class InputBaseline(nn.Module):
    """b_ψ(x) = c + MLP_ψ(x) (one tanh hidden layer), zero at initialization; ``residual_std`` σ̂."""

    def __init__(self, data_dim: int, hidden: int = 100):
        super().__init__()
        self.constant = nn.Parameter(torch.zeros(()))
        self.net = mlp([data_dim, hidden, 1], "tanh")
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("residual_std", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.constant + self.net(x).squeeze(-1)


def _signal(model, x: torch.Tensor, k: int, objective: str) -> torch.Tensor:
    """The learning signal without gradient: log w [k, N] (ELBO) or IWAE_k [N] (IWAE)."""
    with torch.no_grad():
        q = model.encoder(x)
        z = q.sample((k,))
        lw = model.log_joint(x, z) - q.log_prob(z)
        return lw if objective == "elbo" else batch_objective(lw, objective)


def fit_nvil(
    model, x: torch.Tensor, k: int, objective: str, fit_steps: int, fit_lr: float, hidden: int, **_
) -> FittedControl:
    """Regress the learning signal on x: min_ψ E[(l - b_ψ(x))²], from c = the signal's mean."""
    baseline = InputBaseline(x.shape[-1], hidden).to(device=x.device, dtype=x.dtype)
    with torch.no_grad():
        baseline.constant.fill_(_signal(model, x, k, objective).mean())

    def residual_loss() -> torch.Tensor:
        return ((_signal(model, x, k, objective) - baseline(x)) ** 2).mean()

    fitted = fit_by_adam(baseline, residual_loss, fit_steps, fit_lr, {"objective": "mean squared residual"})
    with torch.no_grad():
        residual = torch.cat([(_signal(model, x, k, objective) - baseline(x)).reshape(-1) for _ in range(8)])
        baseline.residual_std.fill_(residual.std())
    fitted.record.update(residual_std=float(baseline.residual_std), constant=float(baseline.constant))
    return fitted


@estimator(
    "nvil",
    kind="gradient",
    needs=("encoder",),
    properties=("unbiased",),
    objectives=("elbo", "iwae"),
    fit=fit_nvil,
)
def nvil(
    model,
    x: torch.Tensor,
    k: int,
    objective: str = "elbo",
    fit_steps: int = 300,
    fit_lr: float = 0.01,
    hidden: int = 100,
    normalize: bool = False,
    control: FittedControl | None = None,
) -> torch.Tensor:
    """REINFORCE with a fitted input-dependent baseline b_ψ(x) (and optional variance normalization)."""
    baseline = control.module if control is not None else InputBaseline(x.shape[-1], hidden).to(x)
    scale = max(1.0, float(baseline.residual_std)) if normalize else 1.0
    with torch.no_grad():
        b = baseline(x)

    def input_baseline(lw: torch.Tensor, objective: str) -> torch.Tensor:
        return b.expand_as(lw)

    return score_surrogate(model, x, k, objective, input_baseline, scale=scale if math.isfinite(scale) else 1.0)
