"""Bernoulli numerics: the one log-probability of independent Bernoulli variables every estimator and
model uses, and the fused forms of the Bernoulli VAE's log-likelihood (fast route).

log Bernoulli(b; σ(l)) = b·l - softplus(l) for b ∈ {0, 1} (and extended linearly for relaxed b), in log
space from the logits, never log(σ(l)).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from lvbench.compute.matmul import inside_torch_func, linear_magnitude, mlp_forward
from lvbench.compute.routes import fast_route

__all__ = [
    "SoftplusSum",
    "bernoulli_log_likelihood",
    "bernoulli_log_prob",
    "bernoulli_mlp_log_joint",
    "softplus_sum",
]


def bernoulli_log_prob(value: torch.Tensor, logits: torch.Tensor, summed: bool = True) -> torch.Tensor:
    """log Π_l Bernoulli(value_l; σ(logits_l)) = Σ_l value_l·logits_l - softplus(logits_l) over the last
    dim (``summed=False``: the terms per variable)."""
    terms = value * logits - F.softplus(logits)
    return terms.sum(-1) if summed else terms


def bernoulli_mlp_log_joint(
    decoder: nn.Sequential, x: torch.Tensor, log_prior: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """z -> log_prior(z) + Σ_d log Bernoulli(x_d; σ(l_d)) for the logits l = h Wᵀ + b of an MLP
    ``decoder`` (last layer W, b; h its last hidden layer), fused for fixed x: Σ_d x_d l_d = h·(x W) + x·b
    with x W and x·b computed once for all z, so no [.., N, D] tensor beyond the logits is formed. The
    layers run through ``mlp_forward`` (oneDNN on the CPU); Σ softplus is ``softplus_sum`` where autograd
    records, and without autograd ``bernoulli_log_likelihood`` takes a faster route from |l|."""
    body, last = decoder[:-1], decoder[-1]
    x_weight, x_bias = x @ last.weight, x @ last.bias

    @functools.cache  # made on the first call without autograd, where alone it is used
    def centred() -> tuple[torch.Tensor, torch.Tensor]:  # (x - ½) W and (x - ½)·b
        return (x - 0.5) @ last.weight, (x - 0.5) @ last.bias

    def log_joint(z: torch.Tensor) -> torch.Tensor:
        prior = log_prior(z)
        h = mlp_forward(body, z)
        if torch.is_grad_enabled() or inside_torch_func():
            logits = mlp_forward([last], h)
            return prior + (h * x_weight).sum(-1) + x_bias - softplus_sum(logits)
        return prior + bernoulli_log_likelihood(h, linear_magnitude(last, h), *centred())

    return log_joint


def bernoulli_log_likelihood(
    h: torch.Tensor, abs_logits: torch.Tensor, centred_weight: torch.Tensor, centred_bias: torch.Tensor
) -> torch.Tensor:
    """Σ_d log Bernoulli(x_d; σ(l_d)) for logits l = h Wᵀ + b, from h and |l|, without autograd,
    overwriting ``abs_logits``.

    x_d l_d - softplus(l_d) = (x_d - ½) l_d - ½|l_d| + log σ(|l_d|), and Σ_d (x_d - ½) l_d = h·((x - ½)W)
    + (x - ½)·b from ``centred_weight`` [N, H] and ``centred_bias`` [N]. Every σ(|l|) lies in [½, 1], so a
    product of B of them is at least 2^-B: Σ_d log σ(|l_d|) is taken as the log of products over blocks of
    B ≤ -log2(smallest normal) pixels (112 for D = 784 in float32), which cannot underflow and replaces a
    log per pixel by one per block (relative rounding of a product ≤ B·u, u the unit roundoff).
    """
    half_l1 = 0.5 * abs_logits.sum(-1)
    log_sigmoid_abs = _sum_log_in_blocks(abs_logits.sigmoid_())
    return (h * centred_weight).sum(-1) + centred_bias - half_l1 + log_sigmoid_abs


def softplus_sum(logits: torch.Tensor) -> torch.Tensor:
    """Σ_d softplus(l_d) over the last dim, differentiable: ``SoftplusSum`` (the identity of
    ``bernoulli_log_likelihood``) where autograd records outside ``torch.func`` transforms on the fast
    route, else the plain sum of ``F.softplus``."""
    if logits.requires_grad and not inside_torch_func() and fast_route():
        return SoftplusSum.apply(logits)
    return F.softplus(logits).sum(-1)


class SoftplusSum(torch.autograd.Function):
    """Σ_d softplus(l_d) = ½Σ_d (l_d + |l_d|) - Σ_d log σ(|l_d|) (log-products in blocks, as in
    ``bernoulli_log_likelihood``); backward: ∂/∂l_d = σ(l_d). Cheap passes (abs, sums, sigmoid, products)
    in place of torch's softplus, whose per-pixel exp and log1p made it the slowest op of the gradient."""

    @staticmethod
    def forward(logits: torch.Tensor) -> torch.Tensor:
        magnitude = logits.abs()
        return 0.5 * (logits.sum(-1) + magnitude.sum(-1)) - _sum_log_in_blocks(magnitude.sigmoid_())

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (logits,) = ctx.saved_tensors
        return torch.sigmoid(logits).mul_(grad.unsqueeze(-1))


def _sum_log_in_blocks(s: torch.Tensor) -> torch.Tensor:
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
