"""Variational autoencoder: MLP decoder p(x|z) and MLP Gaussian encoder q(z|x), no exact log p(x).

p(z) = N(0, I_L);  p(x|z) = Bernoulli(σ(f_θ(z))) or N(f_θ(z), diag exp(2 log_scale));
q(z|x) = N(μ_φ(x), diag σ²_φ(x)). The default shape is the IWAE paper's 784-200-200-50.
Checkpoints are plain tensors and a config dict, loaded with ``weights_only=True`` (no pickled code).
"""

from __future__ import annotations

import functools
import math
import os
import pickle
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.distributions import Bernoulli, Distribution, Independent, constraints
from torch.nn import functional as F

from lvbench.errors import LvbenchInputError
from lvbench.models.base import ACTIVATIONS, LatentVariableModel, mlp
from lvbench.models.encoders import GaussianMLPEncoder, diagonal_normal
from lvbench.models.fused_mlp import inside_torch_func, linear_magnitude, mlp_forward
from lvbench.registry import register_model
from lvbench.seeding import seeded

__all__ = ["VAE", "bernoulli_log_likelihood", "load_vae", "vae"]

CHECKPOINT_FORMAT = "lvbench.vae/1"


class VAE(LatentVariableModel):
    """MLP VAE; θ = decoder (+ ``log_scale`` for a Gaussian likelihood), φ = ``encoder``."""

    latent_type = "continuous"

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 50,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
    ):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise LvbenchInputError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        if activation not in ACTIVATIONS:
            raise LvbenchInputError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        if data_dim < 1 or latent_dim < 1 or any(h < 1 for h in hidden):
            raise LvbenchInputError(
                f"dimensions must be >= 1: data_dim={data_dim}, latent_dim={latent_dim}, hidden={hidden}"
            )
        self.data_dim, self.latent_dim = int(data_dim), int(latent_dim)
        self.config: dict[str, Any] = {
            "data_dim": self.data_dim,
            "latent_dim": self.latent_dim,
            "hidden": [int(h) for h in hidden],
            "activation": activation,
            "likelihood": likelihood,
        }
        self.encoder = GaussianMLPEncoder(data_dim, latent_dim, hidden, activation)
        self.decoder = mlp([latent_dim, *reversed(list(hidden)), data_dim], activation)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(data_dim))
        self.register_buffer("_zero", torch.zeros(()))

    def prior(self) -> Distribution:
        zeros = self._zero.expand(self.latent_dim)
        return diagonal_normal(zeros, zeros + 1.0)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        out = self.decoder(z)
        if self.config["likelihood"] == "bernoulli":
            return Independent(Bernoulli(logits=out, validate_args=False), 1, validate_args=False)
        return diagonal_normal(out, self.log_scale.exp().expand_as(out))

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(z) + log p(x|z) (fused for the Bernoulli likelihood; see ``conditioned_log_joint``)."""
        return self.conditioned_log_joint(x)(z)

    def conditioned_log_joint(self, x: torch.Tensor):
        """z -> log p(x, z). Bernoulli, fused: with logits l = h Wᵀ + b from the last hidden layer h,
        log p(x|z) = Σ_d x_d l_d - softplus(l_d), and Σ_d x_d l_d = h·(x W) + x·b with x W and x·b
        computed once for all z, so no [.., N, D] tensor beyond the logits themselves is formed. The
        decoder runs through ``mlp_forward`` (oneDNN on the CPU); Σ softplus is ``softplus_sum`` where
        autograd records, and without autograd ``bernoulli_log_likelihood`` takes a faster route from |l|."""
        if self.config["likelihood"] != "bernoulli":
            return lambda z: LatentVariableModel.log_joint(self, x, z)
        body, last = self.decoder[:-1], self.decoder[-1]
        x_weight, x_bias = x @ last.weight, x @ last.bias
        prior_const = 0.5 * self.latent_dim * math.log(2 * math.pi)

        @functools.cache  # made on the first call without autograd, where alone it is used
        def centred() -> tuple[torch.Tensor, torch.Tensor]:  # (x - ½) W and (x - ½)·b
            return (x - 0.5) @ last.weight, (x - 0.5) @ last.bias

        def log_joint(z: torch.Tensor) -> torch.Tensor:
            log_prior = -0.5 * z.square().sum(-1) - prior_const  # log N(z; 0, I)
            h = mlp_forward(body, z)
            if torch.is_grad_enabled() or inside_torch_func():
                logits = mlp_forward([last], h)
                return log_prior + (h * x_weight).sum(-1) + x_bias - softplus_sum(logits)
            return log_prior + bernoulli_log_likelihood(h, linear_magnitude(last, h), *centred())

        return log_joint

    @property
    def data_support(self) -> constraints.Constraint:
        """x ∈ {0, 1}^D for the Bernoulli likelihood, real for the Gaussian one."""
        return constraints.boolean if self.config["likelihood"] == "bernoulli" else constraints.real

    def floats_per_sample(self) -> int:
        return 3 * (self.latent_dim + sum(self.config["hidden"]) + self.data_dim)

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], **metadata: Any) -> None:
        """Write config and weights as plain tensors (loadable with ``weights_only=True``)."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        torch.save(
            {"format": CHECKPOINT_FORMAT, "config": self.config, "state_dict": state, "metadata": metadata}, path
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> VAE:
        """Load a checkpoint written by ``save``; never unpickles arbitrary objects."""
        return load_vae(path, map_location)


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
    """Σ_d softplus(l_d) over the last dim, differentiable: ``SoftplusSum`` (the identity above) where
    autograd records outside ``torch.func`` transforms, else the plain sum of ``F.softplus``."""
    if logits.requires_grad and not inside_torch_func():
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


def load_vae(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> VAE:
    """Load a VAE checkpoint (``VAE.save``'s format or ``lvbench train``'s) weights-only and check it."""
    from lvbench.models.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path, what="VAE checkpoint")
    if ckpt.type != "vae":
        raise LvbenchInputError(f"{path} is not an lvbench VAE checkpoint (it holds a {ckpt.type!r})")
    return ckpt.build(map_location)


def load_weights_only(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors: a missing or corrupt file, or one holding
    pickled objects (refused: lvbench never unpickles code, and never suggests turning that off)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise LvbenchInputError(f"{what} {path} is a folder, not a file")
    if not os.path.isfile(path):
        raise LvbenchInputError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise LvbenchInputError(
            f"{path}: refused to load this {what}: it holds pickled Python objects, not only tensors and plain "
            "values (lvbench loads with weights_only=True and never runs code from a file)"
        ) from None
    except Exception as exc:  # noqa: BLE001 — zip, EOF, magic-number errors: all mean an unreadable file
        raise LvbenchInputError(f"{path}: not a readable {what} (truncated or corrupt: {type(exc).__name__})") from None


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """``model.load_state_dict(state)``, or one line naming the mismatched weights."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:4])
        raise LvbenchInputError(f"{path}: its weights do not match its config: {detail}") from None


@register_model("vae")
def vae(
    data_dim: int = 784,
    latent_dim: int = 50,
    hidden: Sequence[int] = (200, 200),
    activation: Literal["tanh", "relu", "elu", "softplus", "gelu"] = "tanh",
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli",
    seed: int = 0,
) -> VAE:
    """An untrained MLP VAE (train it with ``lvbench.training.train_vae`` or ``lvbench train``)."""
    with seeded(seed):
        return VAE(data_dim, latent_dim, hidden, activation, likelihood)
