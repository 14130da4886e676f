"""Variational autoencoder: MLP decoder p(x|z) and MLP Gaussian encoder q(z|x), no exact log p(x).

p(z) = N(0, I_L);  p(x|z) = Bernoulli(σ(f_θ(z))) or N(f_θ(z), diag exp(2 log_scale));
q(z|x) = N(μ_φ(x), diag σ²_φ(x)). The default shape is the IWAE paper's 784-200-200-50.
Checkpoints are plain tensors and a config dict, loaded with ``weights_only=True`` (no pickled code).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, constraints

from lvbench.compute.bernoulli import bernoulli_mlp_log_joint
from lvbench.compute.routes import fast_route
from lvbench.core.errors import LvbenchInputError
from lvbench.core.registry import register_model
from lvbench.core.seeding import seeded
from lvbench.models.base import ACTIVATIONS, LatentVariableModel, mlp
from lvbench.models.checkpoint import VAE_FORMAT, read_checkpoint
from lvbench.models.encoders import GaussianMLPEncoder, diagonal_normal

__all__ = ["VAE", "load_vae", "vae"]


class VAE(LatentVariableModel):
    """MLP VAE; θ = decoder (+ ``log_scale`` for a Gaussian likelihood), φ = ``encoder``."""

    latent_type = "continuous"

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 50,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
    ):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise LvbenchInputError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        if activation not in ACTIVATIONS:
            raise LvbenchInputError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        if data_dim < 1 or latent_dim < 1 or any(h < 1 for h in hidden):
            raise LvbenchInputError(
                f"dimensions must be >= 1: data_dim={data_dim}, latent_dim={latent_dim}, hidden={hidden}"
            )
        self.data_dim, self.latent_dim = int(data_dim), int(latent_dim)
        self.config: dict[str, Any] = {
            "data_dim": self.data_dim,
            "latent_dim": self.latent_dim,
            "hidden": [int(h) for h in hidden],
            "activation": activation,
            "likelihood": likelihood,
        }
        self.encoder = GaussianMLPEncoder(data_dim, latent_dim, hidden, activation)
        self.decoder = mlp([latent_dim, *reversed(list(hidden)), data_dim], activation)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(data_dim))
        self.register_buffer("_zero", torch.zeros(()))

    def prior(self) -> Distribution:
        zeros = self._zero.expand(self.latent_dim)
        return diagonal_normal(zeros, zeros + 1.0)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        out = self.decoder(z)
        if self.config["likelihood"] == "bernoulli":
            return Independent(Bernoulli(logits=out, validate_args=False), 1, validate_args=False)
        return diagonal_normal(out, self.log_scale.exp().expand_as(out))

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(z) + log p(x|z) (fused for the Bernoulli likelihood; see ``conditioned_log_joint``)."""
        return self.conditioned_log_joint(x)(z)

    def conditioned_log_joint(self, x: torch.Tensor):
        """z -> log p(x, z): for the Bernoulli likelihood on the fast route, the fused form of
        ``lvbench.compute.bernoulli.bernoulli_mlp_log_joint`` (no [.., N, D] tensor beyond the logits);
        otherwise (Gaussian likelihood, or the eager route of ``lvbench.compute.routes``) log p(z) +
        p(x|z).log_prob(x) by torch.distributions."""
        if self.config["likelihood"] != "bernoulli" or not fast_route():
            return lambda z: LatentVariableModel.log_joint(self, x, z)
        prior_const = 0.5 * self.latent_dim * math.log(2 * math.pi)
        return bernoulli_mlp_log_joint(self.decoder, x, lambda z: -0.5 * z.square().sum(-1) - prior_const)

    @property
    def data_support(self) -> constraints.Constraint:
        """x ∈ {0, 1}^D for the Bernoulli likelihood, real for the Gaussian one."""
        return constraints.boolean if self.config["likelihood"] == "bernoulli" else constraints.real

    def floats_per_sample(self) -> int:
        return 3 * (self.latent_dim + sum(self.config["hidden"]) + self.data_dim)

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], **metadata: Any) -> None:
        """Write config and weights as plain tensors (loadable with ``weights_only=True``)."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save({"format": VAE_FORMAT, "config": self.config, "state_dict": state, "metadata": metadata}, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> VAE:
        """Load a checkpoint written by ``save``; never unpickles arbitrary objects."""
        return load_vae(path, map_location)


def load_vae(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> VAE:
    """Load a VAE checkpoint (``VAE.save``'s format or ``lvbench train``'s) weights-only and check it."""
    ckpt = read_checkpoint(path, what="VAE checkpoint")
    if ckpt.type != "vae":
        raise LvbenchInputError(f"{path} is not an lvbench VAE checkpoint (it holds a {ckpt.type!r})")
    return ckpt.build(map_location)


@register_model("vae", dataset="required")
def vae(
    data_dim: int = 784,
    latent_dim: int = 50,
    hidden: Sequence[int] = (200, 200),
    activation: Literal["tanh", "relu", "elu", "softplus", "gelu"] = "tanh",
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli",
    seed: int = 0,
) -> VAE:
    """An untrained MLP VAE (train it with ``lvbench.training.train_vae`` or ``lvbench train``)."""
    with seeded(seed):
        return VAE(data_dim, latent_dim, hidden, activation, likelihood)
