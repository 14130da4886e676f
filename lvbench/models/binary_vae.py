"""A VAE with binary latents (a sigmoid belief net with an amortized encoder), exact by enumeration.

z ∈ {0,1}^L with p(z) = Π_l Bernoulli(z_l; σ(a_l)) (learned logits a); x | z ~ Bernoulli(σ(f_θ(z))) with
an MLP f_θ; q(z|x) = Π_l Bernoulli(z_l; σ(g_φ(x)_l)) with an MLP g_φ. For L ≤ ``MAX_EXACT_LATENTS`` the
2^L configurations can be enumerated: log p(x) = logsumexp_z [log p(z) + log p(x|z)] exactly (chunked
over configurations, so L = 20 over hundreds of points fits the memory budget), and the ELBO and its
gradients too (``lvbench.exact``). The standard benchmark of discrete gradient estimators, with the
exact answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, constraints

from lvbench.compute.bernoulli import bernoulli_log_prob
from lvbench.compute.streaming import chunks, items_within_budget, memory_budget
from lvbench.core.errors import LvbenchInputError
from lvbench.core.registry import register_model
from lvbench.core.seeding import seeded
from lvbench.models.base import ACTIVATIONS, LatentVariableModel, mlp

__all__ = ["MAX_EXACT_LATENTS", "BinaryVAE", "sigmoid_belief_net"]

#: Largest latent dimension whose 2^L configurations are enumerated for exact log p(x).
MAX_EXACT_LATENTS = 20


class BernoulliMLPEncoder(nn.Module):
    """x -> Π_l Bernoulli(σ(g_φ(x)_l)), batch [N], event [L]."""

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int], activation: str):
        super().__init__()
        self.net = mlp([data_dim, *hidden, latent_dim], activation)

    def forward(self, x: torch.Tensor) -> Distribution:
        return Independent(Bernoulli(logits=self.net(x), validate_args=False), 1, validate_args=False)


class BinaryVAE(LatentVariableModel):
    """θ = prior logits and decoder; φ = ``encoder``."""

    latent_type = "discrete"

    def __init__(self, data_dim: int, latent_dim: int = 10, hidden: Sequence[int] = (64,), activation: str = "tanh"):
        super().__init__()
        if data_dim < 1 or latent_dim < 1 or any(h < 1 for h in hidden):
            raise LvbenchInputError(f"dimensions must be >= 1: data_dim={data_dim}, latent_dim={latent_dim}")
        if activation not in ACTIVATIONS:
            raise LvbenchInputError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        self.data_dim, self.latent_dim = int(data_dim), int(latent_dim)
        self.prior_logits = nn.Parameter(torch.zeros(latent_dim))
        self.decoder = mlp([latent_dim, *hidden, data_dim], activation)
        self.encoder = BernoulliMLPEncoder(data_dim, latent_dim, hidden, activation)

    def prior(self) -> Distribution:
        return Independent(Bernoulli(logits=self.prior_logits, validate_args=False), 1, validate_args=False)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        return Independent(Bernoulli(logits=self.decoder(z), validate_args=False), 1, validate_args=False)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(z) + Σ_d [x_d l_d - softplus(l_d)] with decoder logits l = f_θ(z).

        Latents shared by every point (z [C, N, L] expanded from [C, 1, L], as enumeration makes them) are
        decoded once: Σ_d x_d l_d becomes one [C, D] × [D, N] product, C decoder passes instead of C·N."""
        if z.dim() == 3 and x.dim() == 2 and z.shape[1] == x.shape[0] > 1 and z.stride(1) == 0:
            logits = self.decoder(z[:, 0])  # [C, D]
            log_lik = logits @ x.T - F.softplus(logits).sum(-1, keepdim=True)  # [C, N]
            return bernoulli_log_prob(z[:, :1], self.prior_logits) + log_lik
        log_lik = bernoulli_log_prob(x, self.decoder(z))  # first: autograd's accumulation order, kept
        return bernoulli_log_prob(z, self.prior_logits) + log_lik

    @property
    def data_support(self) -> constraints.Constraint:
        return constraints.boolean

    def enumerate_latents(self) -> torch.Tensor:
        """All 2^L configurations, [2^L, L] (only for L <= MAX_EXACT_LATENTS)."""
        if self.latent_dim > MAX_EXACT_LATENTS:
            raise LvbenchInputError(f"2^{self.latent_dim} latent configurations are too many to enumerate")
        codes = torch.arange(2**self.latent_dim, device=self.prior_logits.device)
        bits = (codes[:, None] >> torch.arange(self.latent_dim, device=codes.device)) & 1
        return bits.to(self.prior_logits.dtype)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) [N] by enumerating the 2^L configurations in chunks within the memory budget."""
        x = self.check_data(x)
        support = self.enumerate_latents()
        per_config = x.shape[0] * self.floats_per_sample()
        chunk = items_within_budget(per_config * 8, support.shape[0], memory_budget(x.device))
        parts, start = [], 0
        for c in chunks(support.shape[0], chunk):
            z = support[start : start + c, None, :].expand(c, x.shape[0], self.latent_dim)
            parts.append(torch.logsumexp(self.log_joint(x, z), dim=0, keepdim=True))
            start += c
        return torch.logsumexp(torch.cat(parts), dim=0)

    def floats_per_sample(self) -> int:
        return 3 * (self.latent_dim + self.data_dim) + sum(
            m.out_features for m in self.decoder if hasattr(m, "out_features")
        )


@register_model("sigmoid_belief_net", dataset="optional")
def sigmoid_belief_net(
    data_dim: int = 64,
    latent_dim: int = 10,
    hidden: Sequence[int] = (64,),
    activation: Literal["tanh", "relu", "elu", "softplus", "gelu"] = "tanh",
    seed: int = 0,
) -> BinaryVAE:
    """An untrained binary-latent VAE (exact log p(x) by enumeration for latent_dim <= 20)."""
    with seeded(seed):
        return BinaryVAE(data_dim, latent_dim, hidden, activation)
