"""Σ_d softplus(l_d) over the last dim in cheap passes, and the blocked sum of logs it rests on (also used
by ``lvbench.compute.bernoulli``'s likelihood without autograd)."""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

__all__ = ["SoftplusSum", "sum_log_in_blocks"]


class SoftplusSum(torch.autograd.Function):
    """Σ_d softplus(l_d) = ½Σ_d (l_d + |l_d|) - Σ_d log σ(|l_d|) (log-products in blocks, as in
    ``bernoulli_log_likelihood``); backward: ∂/∂l_d = σ(l_d). Cheap passes (abs, sums, sigmoid, products)
    in place of torch's softplus, whose per-pixel exp and log1p made it the slowest op of the gradient."""

    @staticmethod
    def forward(logits: torch.Tensor) -> torch.Tensor:
        magnitude = logits.abs()
        return 0.5 * (logits.sum(-1) + magnitude.sum(-1)) - sum_log_in_blocks(magnitude.sigmoid_())

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (logits,) = ctx.saved_tensors
        return torch.sigmoid(logits).mul_(grad.unsqueeze(-1))


def sum_log_in_blocks(s: torch.Tensor) -> torch.Tensor:
    """Σ_d log s_d over the last dim for s_d ∈ [½, 1], as Σ_blocks log Π_block s_d (see above)."""
    d = s.shape[-1]
    most = int(-math.log2(torch.finfo(s.dtype).tiny))  # 2^-most is the smallest normal number
    blocks = -(-d // most)
    size = -(-d // blocks)
    full = d // size
    total = s[..., : full * size].unflatten(-1, (full, size)).prod(-1).log_().sum(-1)
    if full * size < d:
        total = total + s[..., full * size :].prod(-1).log_()
    return total
