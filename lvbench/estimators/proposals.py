"""Turn a ``proposal=`` option into a Distribution q(z|x) with batch shape [N]."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.distributions import Categorical, Distribution, Independent, Normal

from lvbench.core.protocol import ProposalName, enumerate_latents
from lvbench.core.validation import LvbenchInputError

__all__ = ["Proposal", "resolve_proposal", "sample_with_log_prob", "uniform_proposal"]

#: A proposal by name (the spec's only form), a Distribution with batch shape [N], or x -> Distribution.
Proposal = ProposalName | Distribution | Callable[[torch.Tensor], Distribution]


def _is_diagonal_normal(q: Distribution) -> bool:
    return isinstance(q, Independent) and q.reinterpreted_batch_ndims == 1 and type(q.base_dist) is Normal


def sample_with_log_prob(q: Distribution, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """c draws z ~ q and log q(z), [c, N, ...] and [c, N]. For a diagonal Gaussian, z = μ + σε and
    log q(z) = -½‖ε‖² - Σ log σ - (L/2) log 2π, which skips re-deriving ε from z."""
    if not _is_diagonal_normal(q):
        z = q.sample((c,))
        return z, q.log_prob(z)
    loc, scale = q.base_dist.loc, q.base_dist.scale
    eps = torch.randn((c, *loc.shape), dtype=loc.dtype, device=loc.device)
    const = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)
    return loc + scale * eps, -0.5 * eps.square().sum(-1) - const


def uniform_proposal(model, n: int) -> Distribution:
    """Uniform over the enumerable support of a discrete latent, batch shape [n]."""
    support = enumerate_latents(model)
    if support.dim() != 1:
        raise LvbenchInputError("a uniform proposal needs a single categorical latent, not a vector of them")
    size = support.shape[0]
    logits = model.prior().logits.new_zeros(n, size)
    return Categorical(logits=logits, validate_args=False)


def resolve_proposal(model, x: torch.Tensor, proposal: Proposal) -> Distribution:
    """q(z|x) for ``proposal`` in {"encoder", "posterior", "prior"}, a Distribution, or a callable x -> q.

    The result has batch shape [N] and the prior's event shape, or a clear error says what is wrong.
    """
    n = x.shape[0]
    prior = model.prior()
    if isinstance(proposal, str):
        if proposal == "encoder":
            if getattr(model, "encoder", None) is None:
                raise LvbenchInputError(f"proposal='encoder' but {type(model).__name__} has no encoder")
            q = model.encoder(x)
        elif proposal == "posterior":
            q = model.posterior(x)
        elif proposal == "prior":
            q = prior.expand(torch.Size([n]))
        elif proposal == "uniform":
            q = uniform_proposal(model, n)
        else:
            raise LvbenchInputError(
                f"unknown proposal {proposal!r}; expected 'encoder', 'posterior', 'prior', a Distribution or a callable"
            )
    elif isinstance(proposal, Distribution):
        q = proposal
    elif callable(proposal):
        q = proposal(x)
    else:
        raise LvbenchInputError(f"proposal must be a name, a Distribution or a callable, got {type(proposal).__name__}")
    if not isinstance(q, Distribution):
        raise LvbenchInputError(f"the proposal returned {type(q).__name__}, not a torch Distribution")
    if q.event_shape != prior.event_shape:
        raise LvbenchInputError(
            f"proposal event shape {tuple(q.event_shape)} does not match the latent's {tuple(prior.event_shape)}"
        )
    if q.batch_shape != (n,):
        try:
            q = q.expand(torch.Size([n]))
        except (ValueError, RuntimeError, NotImplementedError):
            raise LvbenchInputError(
                f"proposal batch shape {tuple(q.batch_shape)} does not match the {n} data points"
            ) from None
    return q
