"""Linear-Gaussian model (probabilistic PCA): every quantity of interest in closed form.

p(z) = N(0, I_L),  p(x|z) = N(W z + b, σ² I_D)  =>  p(x) = N(b, W Wᵀ + σ² I),
p(z|x) = N(Σ Wᵀ (x - b) / σ², Σ) with Σ = (I + Wᵀ W / σ²)⁻¹.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import (
    Distribution,
    LowRankMultivariateNormal,
    MultivariateNormal,
    kl_divergence,
)

from lvbench.core.errors import LvbenchInputError
from lvbench.core.registry import register_model
from lvbench.models.base import LatentVariableModel
from lvbench.models.encoders import LinearGaussianEncoder, diagonal_normal

__all__ = ["LinearGaussian", "linear_gaussian"]


class LinearGaussian(LatentVariableModel):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, σ²I); θ = (``weight`` W [D, L], ``bias`` b [D]), σ fixed.

    The encoder is a linear Gaussian q(z|x) = N(Ax + c, diag s²) (``LinearGaussianEncoder``),
    initialised to the prior; ``fit_encoder_to_posterior`` sets it to its ELBO-optimal value.
    """

    latent_type = "continuous"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, noise_std: float = 1.0):
        super().__init__()
        weight = torch.as_tensor(weight)
        if not weight.is_floating_point():
            weight = weight.to(torch.get_default_dtype())
        bias = torch.as_tensor(bias, dtype=weight.dtype)
        if weight.dim() != 2 or bias.shape != (weight.shape[0],):
            raise LvbenchInputError(
                f"weight must be [D, L] and bias [D]; got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        if not noise_std > 0:
            raise LvbenchInputError(f"noise_std must be > 0, got {noise_std}")
        self.data_dim, self.latent_dim = weight.shape
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone())
        self.register_buffer("noise_std", torch.tensor(float(noise_std), dtype=weight.dtype))
        self.register_buffer("_zero", torch.zeros((), dtype=weight.dtype))
        self.encoder = LinearGaussianEncoder(self.data_dim, self.latent_dim).to(weight.dtype)

    # -- protocol ----------------------------------------------------------------------------
    def prior(self) -> Distribution:
        zeros = self._zero.expand(self.latent_dim)
        return diagonal_normal(zeros, zeros + 1.0)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        loc = z @ self.weight.T + self.bias
        return diagonal_normal(loc, self.noise_std.expand_as(loc))

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log N(x; b, W Wᵀ + σ² I) [N]."""
        x = self.check_data(x)
        diag = (self.noise_std**2).expand(self.data_dim)
        return LowRankMultivariateNormal(self.bias, self.weight, diag, validate_args=False).log_prob(x)

    def posterior_precision(self) -> torch.Tensor:
        """Λ = I + Wᵀ W / σ² (the posterior precision, the same for every x)."""
        eye = torch.eye(self.latent_dim, dtype=self.weight.dtype, device=self.weight.device)
        return eye + self.weight.T @ self.weight / self.noise_std**2

    def posterior(self, x: torch.Tensor) -> Distribution:
        """Exact p(z|x) = N(Λ⁻¹ Wᵀ (x - b) / σ², Λ⁻¹), batch shape [N]."""
        x = self.check_data(x)
        cov = torch.linalg.inv(self.posterior_precision())
        cov = 0.5 * (cov + cov.T)
        loc = (x - self.bias) @ self.weight @ cov / self.noise_std**2
        return MultivariateNormal(loc, covariance_matrix=cov.expand(x.shape[0], -1, -1), validate_args=False)

    # -- closed forms used as ground truth ---------------------------------------------------
    def exact_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[log p(x|z)] - KL(q || p) in closed form for the Gaussian encoder q [N].

        E_q log N(x; Wz+b, σ²I) = -D/2 log(2πσ²) - (‖x - Wm - b‖² + Σ_j s_j² ‖W_j‖²) / (2σ²).
        """
        x = self.check_data(x)
        q = self.encoder(x)
        m, s2 = q.mean, q.variance
        var = self.noise_std**2
        resid = x - m @ self.weight.T - self.bias
        trace = s2 @ (self.weight**2).sum(0)
        expected_loglik = -0.5 * self.data_dim * torch.log(2 * math.pi * var) - (resid.pow(2).sum(-1) + trace) / (
            2 * var
        )
        return expected_loglik - kl_divergence(q, self.prior())

    @torch.no_grad()
    def fit_encoder_to_posterior(self) -> LinearGaussian:
        """Set q(z|x) to the ELBO-optimal diagonal Gaussian: the exact posterior mean map and variances
        1/diag(Λ) (mean-field optimum). When Wᵀ W is diagonal this is the exact posterior."""
        prec = self.posterior_precision()
        cov = torch.linalg.inv(prec)
        gain = cov @ self.weight.T / self.noise_std**2  # [L, D]
        self.encoder.weight.copy_(gain)
        self.encoder.bias.copy_(-gain @ self.bias)
        self.encoder.log_scale.copy_(-0.5 * torch.log(torch.diagonal(prec)))
        return self

    def floats_per_sample(self) -> int:
        return 6 * (self.latent_dim + self.data_dim)

    @classmethod
    def random(
        cls, data_dim: int = 10, latent_dim: int = 3, noise_std: float = 0.5, seed: int = 0, dtype=torch.float32
    ) -> LinearGaussian:
        """Ground-truth parameters drawn from ``seed``: W ~ N(0, 1), b ~ N(0, 1)."""
        if data_dim < 1 or latent_dim < 1:
            raise LvbenchInputError(f"data_dim and latent_dim must be >= 1, got {data_dim}, {latent_dim}")
        g = torch.Generator().manual_seed(seed)
        weight = torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64)
        bias = torch.randn(data_dim, generator=g, dtype=torch.float64)
        return cls(weight, bias, noise_std).to(dtype)


@register_model("linear_gaussian")
def linear_gaussian(data_dim: int = 10, latent_dim: int = 3, noise_std: float = 0.5, seed: int = 0) -> LinearGaussian:
    """Probabilistic PCA with W, b drawn from the seed; exact log p(x), posterior and ELBO."""
    return LinearGaussian.random(data_dim, latent_dim, noise_std, seed)
