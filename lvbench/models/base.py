"""The model protocol: a torch.nn.Module with a prior p(z), a likelihood p(x|z) and optional extras.

Every estimator in lvbench is written against this protocol only:

- ``prior()`` -> Distribution over z (event shape [L] for continuous z, [] for a categorical z);
- ``likelihood(z)`` -> Distribution over x with event shape [D], broadcasting over leading dims of z;
- ``log_joint(x, z)`` = log p(z) + log p(x|z), shape = z's sample/batch shape;
- ``sample(n)`` -> (x, z);
- ``generative_parameters()`` (θ) and ``inference_parameters()`` (φ, the encoder's);
- optional: ``encoder`` (x -> q(z|x)), ``log_marginal(x)``, ``posterior(x)``, declared through
  ``capabilities()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from lvbench.core.protocol import infer_capabilities, placeholder
from lvbench.core.validation import check_data

__all__ = ["LatentVariableModel", "mlp"]


class LatentVariableModel(nn.Module):
    """Base class implementing the protocol's generic parts from ``prior`` and ``likelihood``."""

    #: "continuous" or "discrete".
    latent_type: str = "continuous"
    data_dim: int
    latent_dim: int

    def __init__(self) -> None:
        super().__init__()
        #: The amortized proposal x -> q(z|x), or None. Replace it with any such nn.Module.
        self.encoder: nn.Module | None = None

    # -- the protocol ------------------------------------------------------------------------
    def prior(self) -> Distribution:
        raise NotImplementedError

    def likelihood(self, z: torch.Tensor) -> Distribution:
        raise NotImplementedError

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log p(z) + log p(x | z), broadcasting x [N, D] against z [..., N, *event]."""
        return self.prior().log_prob(z) + self.likelihood(z).log_prob(x)

    def conditioned_log_joint(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """z -> log p(x, z) for fixed x. Estimators that evaluate many z for the same x call this once,
        so a model can precompute what depends on x alone (the default just closes over x)."""
        return lambda z: self.log_joint(x, z)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log_joint``; makes the model usable with ``torch.func.functional_call``."""
        return self.log_joint(x, z)

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n points (x, z) from the joint p(z) p(x|z)."""
        z = self.prior().sample((n,))
        return self.likelihood(z).sample(), z

    @placeholder
    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) [N] (only on models with capability ``exact_marginal``)."""
        raise NotImplementedError(f"{type(self).__name__} has no exact log p(x)")

    @placeholder
    def posterior(self, x: torch.Tensor) -> Distribution:
        """Exact p(z | x) with batch shape [N] (only on models with capability ``exact_posterior``)."""
        raise NotImplementedError(f"{type(self).__name__} has no exact posterior")

    # -- parameters --------------------------------------------------------------------------
    def inference_parameters(self) -> list[nn.Parameter]:
        """φ: the parameters of the amortized proposal ``encoder`` (empty without one)."""
        return list(self.encoder.parameters()) if self.encoder is not None else []

    def generative_parameters(self) -> list[nn.Parameter]:
        """θ: every parameter that is not the encoder's."""
        phi = {id(p) for p in self.inference_parameters()}
        return [p for p in self.parameters() if id(p) not in phi]

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Named parameters split into {"theta": [...], "phi": [...]}."""
        phi = {id(p) for p in self.inference_parameters()}
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {"theta": [], "phi": []}
        for name, p in self.named_parameters():
            groups["phi" if id(p) in phi else "theta"].append((name, p))
        return groups

    # -- capabilities ------------------------------------------------------------------------
    @placeholder
    def capabilities(self) -> frozenset[str]:
        """What this model offers estimators (see ``lvbench.core.registry.CAPABILITIES``), inferred by
        ``lvbench.core.protocol.capabilities_of``'s one rule; a subclass may override it to declare them."""
        return infer_capabilities(self)

    @placeholder
    def relaxed_likelihood(self, z_soft: torch.Tensor) -> Distribution:
        """p(x | z̃) for a relaxed one-hot z̃ (only on discrete models with capability ``relaxable``)."""
        raise NotImplementedError(f"{type(self).__name__} has no relaxed likelihood")

    @placeholder
    def enumerate_latents(self) -> torch.Tensor:
        """The finite support of z (discrete models), shape [C, *event]."""
        return self.prior().enumerate_support(expand=False).reshape(-1)

    @property
    def data_support(self) -> constraints.Constraint:
        """Where x may lie under the likelihood (checked once per estimator call); real by default."""
        return constraints.real

    def floats_per_sample(self) -> int:
        """Rough count of floats live per (latent sample, data point) in ``log_joint``; sizes chunks."""
        return 4 * (self.latent_dim + self.data_dim)

    # -- input checks ------------------------------------------------------------------------
    def check_data(self, x: object) -> torch.Tensor:
        """``x`` validated against this model (shape [N, data_dim], dtype, device, finite)."""
        return check_data(x, self, self.data_dim)


def mlp(sizes: Iterable[int], activation: str | Callable[[], nn.Module]) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    sizes = list(sizes)
    act = ACTIVATIONS[activation] if isinstance(activation, str) else activation
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
}
