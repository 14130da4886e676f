"""Jackknife variational inference (Nowozin 2018): IWAE with its leading bias terms cancelled.

IWAE_k's bias is a series in 1/k, E[IWAE_k] = log p(x) - a_1/k - a_2/k² - … . With L̄_j the mean of
IWAE_j over all size-j subsets of the k samples, the order-m jackknife

    JVI_m = Σ_{j=0}^{m} c_j L̄_{k-j},   c_j = (-1)^j (k-j)^m / (j! (m-j)!),   Σ_j c_j = 1,

cancels the terms in 1/k … 1/k^m, so its bias is O(1/k^{m+1}) instead of O(1/k) (m = 1 is
k·IWAE_k - (k-1)·L̄_{k-1}). It is neither a lower nor an upper bound, and its variance grows with m.
Numerically safe leave-out sums: with the weights sorted, removing a set T that holds a of the m
largest and b <= m - a others from the sum S, S_{-T} = R + log1p(-Σ_{T∖top} w / R) where R sums the
remaining large ones and all others, so the ratio is at most ½ and nothing cancels catastrophically.
Cost: C(k, j) leave-out sums per point for each j <= m (order 1: k; order 2: k²/2). The k log-weights
per point are drawn in chunks like IWAE's but then kept (8 bytes each, never the samples).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from lvbench.errors import LvbenchInputError
from lvbench.estimators.base import estimator
from lvbench.estimators.likelihood.weights import log_weight_sampler, proposal_log_weights, resolve_chunk_size
from lvbench.estimators.proposals import Proposal, resolve_proposal
from lvbench.estimators.streaming import chunks

__all__ = ["jackknife_coefficients", "jackknife_from_log_weights", "jvi"]

#: Leave-out sets evaluated at once (times N points): bounds the memory of orders >= 2.
SUBSETS_PER_BLOCK = 2**16


def jackknife_coefficients(k: int, order: int) -> list[float]:
    """c_j = (-1)^j (k-j)^m / (j! (m-j)!) for j = 0..m; they sum to 1."""
    return [(-1) ** j * (k - j) ** order / (math.factorial(j) * math.factorial(order - j)) for j in range(order + 1)]


def _combinations(n: int, size: int, offset: int):
    """Blocks [B, size] of all size-subsets of {offset, …, offset + n - 1}, in lexicographic order."""
    it = itertools.combinations(range(offset, offset + n), size)
    while True:
        block = np.fromiter(itertools.chain.from_iterable(itertools.islice(it, SUBSETS_PER_BLOCK)), dtype=np.int64)
        if block.size == 0:
            return
        yield torch.from_numpy(block.reshape(-1, size))


def _mean_log_sum_without(sorted_lw: torch.Tensor, size: int, order: int) -> torch.Tensor:
    """Mean over all size-``size`` sets T of log Σ_{i∉T} w_i, per point ([k, N] sorted descending in)."""
    k = sorted_lw.shape[0]
    top, others = sorted_lw[:order], sorted_lw[order:]
    rest = torch.logsumexp(others, dim=0)  # [N]
    total = torch.zeros_like(rest)
    for a in range(min(size, order) + 1):  # a of the removed are among the `order` largest
        b = size - a
        if b > others.shape[0]:
            continue
        for removed in itertools.combinations(range(order), a):
            kept = [i for i in range(order) if i not in removed]
            remaining = torch.logsumexp(torch.cat([top[kept], rest[None]]), dim=0)  # [N]
            if b == 0:
                total = total + remaining
                continue
            for block in _combinations(others.shape[0], b, 0):
                taken = torch.logsumexp(others[block.to(others.device)], dim=1)  # [B, N]
                ratio = torch.exp(taken - remaining)  # <= 1/2 by construction
                value = remaining + torch.log1p(-ratio)
                value = torch.where(torch.isneginf(remaining), remaining, value)
                total = total + value.sum(0)
    return total / math.comb(k, size)


def jackknife_from_log_weights(lw: torch.Tensor, order: int = 1) -> torch.Tensor:
    """JVI_m from k log-weights [k, N] (any order of the samples), in float64: [N]."""
    k = lw.shape[0]
    if not 1 <= order < k:
        raise LvbenchInputError(f"jvi: order must satisfy 1 <= order < k, got order={order} with k={k}")
    sorted_lw = lw.to(torch.float64).sort(dim=0, descending=True).values
    estimate = torch.zeros(lw.shape[1:], dtype=torch.float64, device=lw.device)
    for j, c in enumerate(jackknife_coefficients(k, order)):
        mean_iwae = _mean_log_sum_without(sorted_lw, j, order) - math.log(k - j)  # L̄_{k-j}
        estimate = estimate + c * mean_iwae
    return estimate


def _min_k_for_order(model, num_samples: int = 1, order: int = 1, **_: object) -> str | None:
    if isinstance(order, int) and order >= num_samples:
        return f"jvi of order {order} needs k > {order} samples, got k={num_samples}"
    return None


@estimator(
    "jvi",
    kind="likelihood",
    properties=("consistent",),
    log_weights=proposal_log_weights,
    check=_min_k_for_order,
    min_k=2,
)
def jvi(
    model,
    x: torch.Tensor,
    k: int,
    order: int = 1,
    proposal: Proposal = "encoder",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Jackknife IWAE of ``order`` m: Σ_j c_j · mean IWAE_{k-j} over subsets; bias O(k^-(m+1))."""
    if not isinstance(order, int) or order < 1:
        raise LvbenchInputError(f"jvi: order must be an integer >= 1, got {order!r}")
    if order >= k:
        raise LvbenchInputError(f"jvi: order must be < k, got order={order} with k={k}")
    draw = log_weight_sampler(model, x, resolve_proposal(model, x, proposal))
    lw = torch.empty(k, x.shape[0], dtype=torch.float64, device=x.device)
    start = 0
    for c in chunks(k, resolve_chunk_size(model, x, k, chunk_size)):
        lw[start : start + c] = draw(c)
        start += c
    return jackknife_from_log_weights(lw, order).to(x.dtype)
