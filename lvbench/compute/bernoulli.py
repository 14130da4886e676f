"""Bernoulli numerics: the one log-probability of independent Bernoulli variables every estimator and
model uses, and the fused forms of the Bernoulli VAE's log-likelihood (fast route).

log Bernoulli(b; σ(l)) = b·l - softplus(l) for b ∈ {0, 1} (and extended linearly for relaxed b), in log
space from the logits, never log(σ(l)).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from lvbench.compute.kernels import kernel
from lvbench.compute.matmul import inside_torch_func, linear_magnitude, mlp_forward
from lvbench.compute.routes import fast_route
from lvbench.compute.softplus import SoftplusSum, sum_log_in_blocks

__all__ = [
    "SoftplusSum",
    "bernoulli_log_likelihood",
    "bernoulli_log_prob",
    "bernoulli_log_prob_autograd",
    "bernoulli_mlp_log_joint",
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
    ``decoder`` (last layer W, b; h its last hidden layer). The layers run through ``mlp_forward`` (the
    calibrated CPU kernels). Without autograd, ``bernoulli_log_likelihood`` takes a fused route from |l|
    and (x - ½)W, computed once for all z, so no [.., N, D] tensor beyond the logits is formed; with
    autograd, ``bernoulli_log_prob_autograd`` from the logits."""
    body, last = decoder[:-1], decoder[-1]

    @functools.cache  # made on the first call without autograd, where alone it is used
    def centred() -> tuple[torch.Tensor, torch.Tensor]:  # (x - ½) W and (x - ½)·b
        return (x - 0.5) @ last.weight, (x - 0.5) @ last.bias

    def log_joint(z: torch.Tensor) -> torch.Tensor:
        prior = log_prior(z)
        h = mlp_forward(body, z)
        if torch.is_grad_enabled() or inside_torch_func():
            return prior + bernoulli_log_prob_autograd(x, mlp_forward([last], h))
        return prior + bernoulli_log_likelihood(h, linear_magnitude(last, h), *centred())

    return log_joint


def bernoulli_log_prob_autograd(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Σ_d x_d l_d - softplus(l_d) over the last dim, differentiable in the logits, by the kernel this
    machine's calibration chose (``lvbench.compute.kernels``, ``bernoulli_autograd``): torch's fused
    ``binary_cross_entropy_with_logits`` ("bce", also off the CPU) or ``SoftplusSum`` ("softplus_sum");
    inside ``torch.func`` transforms the plain sum of ``F.softplus``."""
    if inside_torch_func():
        return bernoulli_log_prob(x, logits)
    if (
        logits.requires_grad
        and logits.device.type == "cpu"
        and fast_route()
        and kernel("bernoulli_autograd") == "softplus_sum"
    ):
        return (x * logits).sum(-1) - SoftplusSum.apply(logits)
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


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
    log_sigmoid_abs = sum_log_in_blocks(abs_logits.sigmoid_())
    return (h * centred_weight).sum(-1) + centred_bias - half_l1 + log_sigmoid_abs
