"""The model protocol, for any object that follows it (no subclassing of ``LatentVariableModel`` needed).

Required: ``prior()`` -> Distribution over z; ``likelihood(z)`` -> Distribution over x; ``log_joint(x, z)``.
Optional: ``sample(n)``, ``encoder`` (x -> q(z|x)), ``log_marginal(x)``, ``posterior(x)``,
``capabilities()``, ``inference_parameters()`` / ``generative_parameters()``, ``enumerate_latents()``,
``relaxed_likelihood(z)``, ``floats_per_sample()``, ``data_support``. Where a model does not declare
its capabilities they are inferred from what it has; these helpers give each optional part a default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch.distributions import Bernoulli, Independent, constraints

from lvbench.core.errors import LvbenchInputError

__all__ = [
    "PROPOSAL_NEEDS",
    "REQUIRED_METHODS",
    "ProposalName",
    "capabilities_of",
    "conditioned_log_joint",
    "infer_capabilities",
    "offers",
    "placeholder",
    "check_protocol",
    "data_support",
    "enumerate_latents",
    "floats_per_sample",
    "inference_parameters",
]

REQUIRED_METHODS = ("prior", "likelihood", "log_joint")

#: The proposals q(z|x) a spec names, and the capability each needs of the model (None: every model).
ProposalName = Literal["encoder", "posterior", "prior"]
PROPOSAL_NEEDS: dict[str, str | None] = {"encoder": "encoder", "posterior": "exact_posterior", "prior": None}


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


def placeholder(method):
    """Mark a base class's stand-in for an optional protocol method (one that raises, or a generic
    default): having it offers nothing, so ``capabilities_of`` looks past it."""
    method.__lvbench_placeholder__ = True
    return method


def offers(model: object, name: str) -> bool:
    """Whether ``model`` has its own optional method ``name`` (not a base class's ``placeholder``)."""
    method = getattr(model, name, None)
    return callable(method) and not getattr(getattr(type(model), name, None), "__lvbench_placeholder__", False)


def capabilities_of(model: object) -> frozenset[str]:
    """What ``model`` offers estimators, by one rule for every model (``LatentVariableModel`` subclasses
    and protocol-only objects alike): its own ``capabilities()`` where it declares them, else inferred
    from what it has: the prior's support (discrete or continuous; Bernoulli: binary), ``rsample`` (of the
    prior, and of the encoder where it says ``has_rsample``), a finite support (the prior's
    ``enumerate_support`` or the model's own ``enumerate_latents``), an ``encoder``, and its own
    ``log_marginal``, ``posterior`` and ``relaxed_likelihood``."""
    if offers(model, "capabilities"):
        return frozenset(model.capabilities())
    return infer_capabilities(model)


def infer_capabilities(model: object) -> frozenset[str]:
    """The capabilities ``model`` has by what it is (see ``capabilities_of``)."""
    check_protocol(model)
    prior = model.prior()
    encoder = getattr(model, "encoder", None)
    caps = set()
    if _is_discrete(prior):
        caps.add("discrete_latent")
        base = prior.base_dist if isinstance(prior, Independent) else prior
        if isinstance(base, Bernoulli):
            caps.add("binary_latent")
        if prior.has_enumerate_support or offers(model, "enumerate_latents"):
            caps.add("enumerable")
        if offers(model, "relaxed_likelihood"):
            caps.add("relaxable")
    else:
        caps.add("continuous_latent")
        if prior.has_rsample and (encoder is None or getattr(encoder, "has_rsample", True)):
            caps.add("reparameterizable")
    if encoder is not None:
        caps.add("encoder")
    if offers(model, "log_marginal"):
        caps.add("exact_marginal")
    if offers(model, "posterior"):
        caps.add("exact_posterior")
    return frozenset(caps)


def conditioned_log_joint(model, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """z -> log p(x, z) for fixed x: the model's ``conditioned_log_joint`` where it has one (any
    protocol model may lack it), else a closure over ``log_joint``."""
    method = getattr(model, "conditioned_log_joint", None)
    return method(x) if method is not None else (lambda z: model.log_joint(x, z))


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
