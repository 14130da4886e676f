"""The model protocol, for any object that follows it (no subclassing of ``LatentVariableModel`` needed).

Required: ``prior()`` -> Distribution over z; ``likelihood(z)`` -> Distribution over x; ``log_joint(x, z)``.
Optional: ``sample(n)``, ``encoder`` (x -> q(z|x)), ``log_marginal(x)``, ``posterior(x)``,
``capabilities()``, ``inference_parameters()`` / ``generative_parameters()``, ``enumerate_latents()``,
``relaxed_likelihood(z)``, ``floats_per_sample()``, ``data_support``. Where a model does not declare
its capabilities they are inferred from what it has; these helpers give each optional part a default.
"""

from __future__ import annotations

import torch
from torch.distributions import Bernoulli, Independent, constraints

from lvbench.errors import LvbenchInputError

__all__ = [
    "REQUIRED_METHODS",
    "capabilities_of",
    "check_protocol",
    "data_support",
    "enumerate_latents",
    "floats_per_sample",
    "inference_parameters",
]

REQUIRED_METHODS = ("prior", "likelihood", "log_joint")


def check_protocol(model: object) -> None:
    """Refuse an object lacking a required method of the model protocol, naming what is missing."""
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(model, m, None))]
    if missing:
        raise LvbenchInputError(
            f"{type(model).__name__} does not follow the lvbench model protocol: it lacks {', '.join(missing)} "
            f"(required: {', '.join(REQUIRED_METHODS)}; see 'The model protocol' in the README)"
        )


def _is_discrete(prior) -> bool:
    return bool(getattr(prior.support, "is_discrete", False))


def capabilities_of(model: object) -> frozenset[str]:
    """What ``model`` offers estimators: its own ``capabilities()`` where it declares them, else inferred
    from what it has (the prior's support, ``rsample`` and ``enumerate_support``; an ``encoder``;
    ``log_marginal``; ``posterior``; ``relaxed_likelihood``)."""
    declared = getattr(model, "capabilities", None)
    if callable(declared):
        return frozenset(declared())
    check_protocol(model)
    prior = model.prior()
    caps = set()
    if _is_discrete(prior):
        caps.add("discrete_latent")
        base = prior.base_dist if isinstance(prior, Independent) else prior
        if isinstance(base, Bernoulli):
            caps.add("binary_latent")
        if prior.has_enumerate_support:
            caps.add("enumerable")
        if callable(getattr(model, "relaxed_likelihood", None)):
            caps.add("relaxable")
    else:
        caps.add("continuous_latent")
        if prior.has_rsample:
            caps.add("reparameterizable")
    if getattr(model, "encoder", None) is not None:
        caps.add("encoder")
    if callable(getattr(model, "log_marginal", None)):
        caps.add("exact_marginal")
    if callable(getattr(model, "posterior", None)):
        caps.add("exact_posterior")
    return frozenset(caps)


def enumerate_latents(model) -> torch.Tensor:
    """The finite support of a discrete z, [C, *event]."""
    method = getattr(model, "enumerate_latents", None)
    if callable(method):
        return method()
    return model.prior().enumerate_support(expand=False).reshape(-1)


def inference_parameters(model) -> list[torch.nn.Parameter]:
    """φ: the model's ``inference_parameters()``, else its encoder's parameters."""
    method = getattr(model, "inference_parameters", None)
    if callable(method):
        return list(method())
    encoder = getattr(model, "encoder", None)
    return list(encoder.parameters()) if isinstance(encoder, torch.nn.Module) else []


def floats_per_sample(model, data_dim: int) -> int:
    """Floats live per (latent sample, data point) in ``log_joint``: the model's own count, else a
    generous guess from the latent and data sizes."""
    method = getattr(model, "floats_per_sample", None)
    if callable(method):
        return int(method())
    latent = int(torch.Size(model.prior().event_shape).numel())
    return 4 * (latent + data_dim)


def data_support(model) -> constraints.Constraint | None:
    """Where x may lie under the likelihood: the model's ``data_support`` where it declares one, else
    None (not checked)."""
    support = getattr(model, "data_support", None)
    return support() if callable(support) else support
