"""Gaussian mixture: a discrete latent whose every quantity is exact by enumeration.

z ~ Categorical(π),  x | z ~ N(μ_z, diag σ_z²)  =>  log p(x) = logsumexp_c [log π_c + log N(x; μ_c, σ_c²)],
p(z = c | x) ∝ π_c N(x; μ_c, σ_c²).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Categorical, Distribution

from lvbench.core.errors import LvbenchInputError
from lvbench.core.registry import register_model
from lvbench.core.seeding import seeded
from lvbench.models.base import LatentVariableModel
from lvbench.models.encoders import CategoricalMLPEncoder, diagonal_normal

__all__ = ["GaussianMixture", "gaussian_mixture"]


class GaussianMixture(LatentVariableModel):
    """θ = (``logits`` [C], ``means`` [C, D], ``log_stds`` [C, D]); optional MLP categorical encoder.

    The relaxed likelihood for a soft one-hot z̃ is N(z̃ᵀμ, diag (z̃ᵀσ)²), which equals the exact
    likelihood at the vertices of the simplex (used by the Concrete/Gumbel-softmax estimator).
    """

    latent_type = "discrete"

    def __init__(self, logits: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, encoder: bool = True):
        super().__init__()
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.to(torch.get_default_dtype())
        logits = torch.as_tensor(logits, dtype=means.dtype)
        stds = torch.as_tensor(stds, dtype=means.dtype)
        if means.dim() != 2 or logits.shape != means.shape[:1] or stds.shape != means.shape:
            raise LvbenchInputError(
                f"expected logits [C], means [C, D], stds [C, D]; got {tuple(logits.shape)}, "
                f"{tuple(means.shape)}, {tuple(stds.shape)}"
            )
        if not (stds > 0).all():
            raise LvbenchInputError("stds must be > 0")
        self.num_components, self.data_dim = means.shape
        self.latent_dim = 1
        self.logits = nn.Parameter(logits.clone())
        self.means = nn.Parameter(means.clone())
        self.log_stds = nn.Parameter(stds.log())
        self.encoder = CategoricalMLPEncoder(self.data_dim, self.num_components).to(means.dtype) if encoder else None

    def prior(self) -> Distribution:
        return Categorical(logits=self.logits, validate_args=False)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        return diagonal_normal(self.means[z], self.log_stds.exp()[z])

    def component_log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; μ_c, σ_c²) for every component: [N, C]."""
        return self.likelihood(torch.arange(self.num_components, device=x.device)[:, None]).log_prob(x).T

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) by enumerating the C components [N]."""
        x = self.check_data(x)
        return torch.logsumexp(self.prior().logits + self.component_log_likelihoods(x), dim=-1)

    def posterior(self, x: torch.Tensor) -> Distribution:
        """Exact p(z | x) as a Categorical with batch shape [N]."""
        x = self.check_data(x)
        return Categorical(logits=self.prior().logits + self.component_log_likelihoods(x), validate_args=False)

    def relaxed_likelihood(self, z_soft: torch.Tensor) -> Distribution:
        return diagonal_normal(z_soft @ self.means, z_soft @ self.log_stds.exp())

    def floats_per_sample(self) -> int:
        return 4 * (self.data_dim + self.num_components)

    @classmethod
    def random(
        cls, data_dim: int = 2, components: int = 3, separation: float = 3.0, seed: int = 0, dtype=torch.float32
    ) -> GaussianMixture:
        """Ground truth drawn from ``seed``: μ_c ~ N(0, separation²), σ ~ U(0.5, 1.5), logits ~ N(0, 0.5²)."""
        if data_dim < 1 or components < 1:
            raise LvbenchInputError(f"data_dim and components must be >= 1, got {data_dim}, {components}")
        g = torch.Generator().manual_seed(seed)
        logits = 0.5 * torch.randn(components, generator=g, dtype=torch.float64)
        means = separation * torch.randn(components, data_dim, generator=g, dtype=torch.float64)
        stds = 0.5 + torch.rand(components, data_dim, generator=g, dtype=torch.float64)
        with seeded(seed):  # the encoder's initial weights, too, come from the seed
            return cls(logits, means, stds).to(dtype)


@register_model("gaussian_mixture")
def gaussian_mixture(data_dim: int = 2, components: int = 3, separation: float = 3.0, seed: int = 0) -> GaussianMixture:
    """Diagonal Gaussian mixture with parameters drawn from the seed; exact log p(x) and posterior."""
    return GaussianMixture.random(data_dim, components, separation, seed)
