"""VIMCO (Mnih & Rezende 2016): multi-sample score-function gradient of IWAE_k with per-sample
leave-one-out baselines. With L = log (1/k) Σ_j w_j, the baseline of sample i replaces its weight by
the geometric mean of the others: b_i = log (1/k) (Σ_{j≠i} w_j + exp(mean_{j≠i} lw_j)).
∇_φ = Σ_i (L - b_i) ∇_φ log q(z_i) + Σ_i w̃_i ∇_φ lw_i; unbiased; needs k >= 2.
"""

from __future__ import annotations

import torch

from lvbench.estimators.base import estimator
from lvbench.estimators.gradient.common import leave_one_out_log_mean_exp, leave_one_out_mean
from lvbench.estimators.gradient.score_function import score_surrogate

__all__ = ["vimco"]


def geometric_mean_baseline(lw: torch.Tensor, objective: str) -> torch.Tensor:
    """b_i: log-mean-exp of the k log-weights with lw_i replaced by the mean of the others (the log of
    the geometric mean of w_{-i})."""
    return leave_one_out_log_mean_exp(lw, replace_with=leave_one_out_mean(lw))


@estimator("vimco", kind="gradient", needs=("encoder",), properties=("unbiased",), objectives=("iwae",), min_k=2)
def vimco(model, x: torch.Tensor, k: int, objective: str = "iwae") -> torch.Tensor:
    """Score-function IWAE gradient with VIMCO's geometric-mean leave-one-out baselines (k >= 2)."""
    return score_surrogate(model, x, k, objective, geometric_mean_baseline)
