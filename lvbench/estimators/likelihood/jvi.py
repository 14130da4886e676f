"""Jackknife variational inference (Nowozin 2018): IWAE with its leading bias terms cancelled.

IWAE_k's bias is a series in 1/k, E[IWAE_k] = log p(x) - a_1/k - a_2/k² - … . With L̄_j the mean of
IWAE_j over all size-j subsets of the k samples, the order-m jackknife

    JVI_m = Σ_{j=0}^{m} c_j L̄_{k-j},   c_j = (-1)^j (k-j)^m / (j! (m-j)!),   Σ_j c_j = 1,

cancels the terms in 1/k … 1/k^m, so its bias is O(1/k^{m+1}) instead of O(1/k) (m = 1 is
k·IWAE_k - (k-1)·L̄_{k-1}). It is neither a lower nor an upper bound, and its variance grows with m.
Numerically safe leave-out sums: with the weights sorted, removing a set T that holds a of the m
largest and b <= m - a others from the sum S, S_{-T} = R + log1p(-Σ_{T∖top} w / R) where R sums the
remaining large ones and all others, so the ratio is at most ½ and nothing cancels catastrophically.
Order 1 streams over k in flat memory (``StreamingJackknife``: the largest weight and 50 power sums per
point). Higher orders cost C(k, j) leave-out sums per point for each j <= m (order 2: k²/2) and keep the
k log-weights per point (8 bytes each, never the samples).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from lvbench.compute.streaming import chunks, stream
from lvbench.core.errors import LvbenchInputError
from lvbench.core.options import Interval
from lvbench.estimators.base import estimator
from lvbench.estimators.likelihood.weights import log_weight_sampler, proposal_log_weights, resolve_chunk_size
from lvbench.estimators.proposals import Proposal, resolve_proposal

__all__ = ["StreamingJackknife", "jackknife_coefficients", "jackknife_from_log_weights", "jvi"]

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


#: Terms of the power series for the leave-one-out sums: every ratio is at most ½, so the remainder is
#: below 2^-POWER_TERMS · 2 / (POWER_TERMS + 1) of log p(x)'s scale, under float64's resolution.
POWER_TERMS = 50


class StreamingJackknife:
    """JVI of order 1 from log-weights fed in chunks [c, N], in flat memory, in float64.

    Keeps per point the largest weight w_top and the power sums P_n = Σ_{i ≠ top} w_i^n, n = 1…50 (in log
    space). With S = w_top + P_1, the leave-one-out sums are S − w_top = P_1 exactly for the largest and,
    for the others, Σ_i log(S − w_i) = (k−1) log S − Σ_n P_n / (n S^n) (the series of log1p, whose ratios
    w_i/S are all at most ½ because w_top ≥ w_i is still in the sum)."""

    def __init__(self) -> None:
        self.top: torch.Tensor | None = None
        self.powers: torch.Tensor | None = None  # log P_n, [POWER_TERMS, N]
        self.count = 0

    def update(self, values: torch.Tensor) -> None:
        v = values.to(torch.float64)
        if self.top is None:
            self.top = torch.full_like(v[0], -math.inf)
            self.powers = torch.full((POWER_TERMS, *v.shape[1:]), -math.inf, dtype=v.dtype, device=v.device)
        both = torch.cat([self.top[None], v])  # the old largest competes with the chunk
        largest = both.argmax(0, keepdim=True)
        self.top = both.gather(0, largest)[0]
        rest = both.scatter(0, largest, -math.inf)  # everything else joins the power sums
        n = torch.arange(1, POWER_TERMS + 1, dtype=v.dtype, device=v.device).reshape(-1, *([1] * v.dim()))
        self.powers = torch.logaddexp(self.powers, torch.logsumexp(n * rest, dim=1))
        self.count += values.shape[0]

    def result(self) -> torch.Tensor:
        k = self.count
        log_s = torch.logaddexp(self.top, self.powers[0])
        n = torch.arange(1, POWER_TERMS + 1, dtype=log_s.dtype, device=log_s.device)[:, None]
        series = (torch.exp(self.powers - n * log_s) / n).sum(0)  # Σ_{i ≠ top} -log1p(-w_i / S)
        leave_one_out = (self.powers[0] + (k - 1) * log_s - series) / k - math.log(k - 1)  # L̄_{k-1}
        estimate = k * (log_s - math.log(k)) - (k - 1) * leave_one_out
        return torch.where(torch.isneginf(log_s), log_s, estimate)


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
    constraints={"order": Interval(1, integer=True)},
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
    draw = log_weight_sampler(model, x, resolve_proposal(model, x, proposal))
    chunk = resolve_chunk_size(model, x, k, chunk_size)
    if order == 1:  # streamed in flat memory
        return stream(draw, k, chunk, StreamingJackknife(), x.dtype)
    lw = torch.empty(k, x.shape[0], dtype=torch.float64, device=x.device)
    start = 0
    for c in chunks(k, chunk):
        lw[start : start + c] = draw(c)
        start += c
    return jackknife_from_log_weights(lw, order).to(x.dtype)
