"""Importance log-weights log w = log p(x, z) - log q(z|x), z ~ q, drawn in chunks."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributions import Distribution

from lvbench.compute.streaming import chunk_size_for
from lvbench.core.protocol import conditioned_log_joint
from lvbench.core.validation import check_data, check_num_samples
from lvbench.estimators.proposals import Proposal, resolve_proposal, sample_with_log_prob

__all__ = ["log_importance_weights", "log_weight_sampler", "proposal_log_weights", "resolve_chunk_size"]


def log_weight_sampler(model, x: torch.Tensor, q: Distribution) -> Callable[[int], torch.Tensor]:
    """c -> log w [c, N] for c fresh samples z ~ q."""
    log_joint = conditioned_log_joint(model, x)

    def draw(c: int) -> torch.Tensor:
        z, log_q = sample_with_log_prob(q, c)
        return log_joint(z) - log_q

    return draw


def resolve_chunk_size(model, x: torch.Tensor, k: int, chunk_size: int | None) -> int:
    """The user's ``chunk_size`` (checked) or one chosen from the memory budget."""
    if chunk_size is None:
        return chunk_size_for(model, x, k)
    return min(check_num_samples(chunk_size, "chunk_size"), k)


def proposal_log_weights(
    model, x: torch.Tensor, k: int, proposal: Proposal = "encoder", defensive: float = 0.0, **_: object
) -> torch.Tensor | None:
    """The registry hook ``log_weights`` of estimators that average importance weights w = p(x, z)/q(z)
    with z ~ ``proposal``: their k log-weights [k, N] for diagnostics (None for a defensive mixture,
    whose weights are not those of q)."""
    return None if defensive else log_importance_weights(model, x, k, proposal)


def log_importance_weights(model, x: torch.Tensor, num_samples: int, proposal: Proposal = "encoder") -> torch.Tensor:
    """All k log-weights [k, N] (materialized: for diagnostics such as Pareto k-hat and ESS)."""
    k = check_num_samples(num_samples)
    x = check_data(x, model, getattr(model, "data_dim", None))
    with torch.inference_mode():
        q = resolve_proposal(model, x, proposal)
        return log_weight_sampler(model, x, q)(k)
