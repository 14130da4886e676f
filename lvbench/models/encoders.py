"""Amortized proposals q(z|x): modules mapping x [N, D] to a Distribution with batch shape [N].

Any ``nn.Module`` with that contract can be assigned to ``model.encoder``; these are the built-ins.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from lvbench.models.base import mlp

__all__ = ["CategoricalMLPEncoder", "GaussianMLPEncoder", "LinearGaussianEncoder", "diagonal_normal"]


def diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> Distribution:
    """N(loc, diag(scale²)) with event shape [L]."""
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


class LinearGaussianEncoder(nn.Module):
    """q(z|x) = N(A x + c, diag(s²)); parameters ``weight`` (A, [L, D]), ``bias`` (c), ``log_scale`` (log s)."""

    has_rsample = True

    def __init__(self, data_dim: int, latent_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(latent_dim, data_dim))
        self.bias = nn.Parameter(torch.zeros(latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, x: torch.Tensor) -> Distribution:
        return diagonal_normal(x @ self.weight.T + self.bias, self.log_scale.exp().expand(x.shape[0], -1))


class GaussianMLPEncoder(nn.Module):
    """q(z|x) = N(μ(x), diag(σ²(x))); an MLP whose last layer outputs [μ, log σ²] (2L values)."""

    has_rsample = True

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (200, 200), activation: str = "tanh"):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = mlp([data_dim, *hidden, 2 * latent_dim], activation)

    def forward(self, x: torch.Tensor) -> Distribution:
        loc, log_var = self.net(x).split(self.latent_dim, dim=-1)
        return diagonal_normal(loc, (0.5 * log_var).exp())


class CategoricalMLPEncoder(nn.Module):
    """q(z|x) = Categorical(softmax(f(x))) for a discrete latent with C values."""

    has_rsample = False

    def __init__(self, data_dim: int, num_categories: int, hidden: Sequence[int] = (32,), activation: str = "tanh"):
        super().__init__()
        self.net = mlp([data_dim, *hidden, num_categories], activation)

    def forward(self, x: torch.Tensor) -> Distribution:
        return Categorical(logits=self.net(x), validate_args=False)
