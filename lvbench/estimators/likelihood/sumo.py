"""SUMO (Luo et al. 2020): an unbiased estimator of log p(x) itself, by randomized truncation of the
IWAE series.

With IWAE_j the IWAE estimate on the first j of a stream of samples z_1, z_2, … ~ q and a random
K >= 1 with tail probabilities T(j) = P(K >= j),

    SUMO = IWAE_m + Σ_{j=1}^{K} (IWAE_{m+j} - IWAE_{m+j-1}) / T(j),

whose expectation over K is the telescoping limit lim_j E[IWAE_j] = log p(x): unbiased for log p(x)
(the bounds only approach it), and consistent as m grows. Truncation here: T(j) = 1/j up to j =
``tail_start``, then a geometric tail T(j) = decay^(j - tail_start) / tail_start. The trade-off: a
heavier tail (larger ``tail_start``, ``decay`` nearer 1) costs more samples on average but divides
the late, small differences by larger probabilities, so the variance is lower; a light tail is cheap
and noisy (the variance is finite only while the squared differences, O(1/j²) for well-behaved
weights, shrink faster than T(j)). The expected number of samples is m + Σ_j T(j) (about m + 5.1 for
the defaults); ``expected_cost`` gives it. K is drawn per data point; the whole thing streams, one
sample per point after the first m, in flat memory.
"""

from __future__ import annotations

import math

import torch

from lvbench.compute.streaming import LogMeanExp, chunks
from lvbench.core.options import Interval
from lvbench.estimators.base import estimator
from lvbench.estimators.likelihood.weights import log_weight_sampler, resolve_chunk_size
from lvbench.estimators.proposals import Proposal, resolve_proposal

__all__ = ["expected_cost", "sumo", "tail_probability"]


def tail_probability(j: torch.Tensor, tail_start: int, decay: float) -> torch.Tensor:
    """T(j) = P(K >= j) for j >= 1: 1/j up to ``tail_start``, then geometric with ratio ``decay``."""
    j = j.to(torch.float64)
    geometric = decay ** (j - tail_start) / tail_start
    return torch.where(j <= tail_start, 1.0 / j, geometric)


def expected_cost(m: int, tail_start: int = 80, decay: float = 0.9) -> float:
    """Expected number of samples per point: m + E[K] = m + Σ_j T(j)."""
    harmonic = sum(1.0 / j for j in range(1, tail_start + 1))
    return m + harmonic + decay / (1.0 - decay) / tail_start


def _draw_truncation(n: int, tail_start: int, decay: float, device) -> torch.Tensor:
    """K per point by inversion: the largest j with T(j) >= U, U ~ Uniform(0, 1]."""
    u = 1.0 - torch.rand(n, dtype=torch.float64, device=device)  # (0, 1]
    head = torch.floor(1.0 / u)
    tail = tail_start + torch.floor(torch.log(u * tail_start) / math.log(decay))
    return torch.where(u >= 1.0 / tail_start, head, tail).long()


@estimator(
    "sumo",
    kind="likelihood",
    properties=("unbiased_log", "consistent"),
    constraints={"tail_start": Interval(1, integer=True), "decay": Interval(0.0, 1.0, low_open=True, high_open=True)},
)
def sumo(
    model,
    x: torch.Tensor,
    k: int,
    tail_start: int = 80,
    decay: float = 0.9,
    proposal: Proposal = "encoder",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """SUMO with m = k base samples: IWAE_m + Σ_{j<=K} ΔIWAE_j / P(K >= j); unbiased for log p(x)."""
    draw = log_weight_sampler(model, x, resolve_proposal(model, x, proposal))
    running = LogMeanExp()
    for c in chunks(k, resolve_chunk_size(model, x, k, chunk_size)):
        running.update(draw(c))
    previous = running.result()  # IWAE_m
    estimate = previous.clone()
    truncation = _draw_truncation(x.shape[0], tail_start, decay, x.device)
    for j in range(1, int(truncation.max()) + 1):  # the last K's length: one host read per call
        running.update(draw(1))
        current = running.result()
        weight = torch.where(truncation >= j, 1.0 / tail_probability(torch.tensor(j), tail_start, decay), 0.0)
        estimate = estimate + weight.to(estimate.device) * (current - previous)
        previous = current
    return estimate.to(x.dtype)
