"""Annealed importance sampling (Neal 2001) with HMC transitions, and BDMC sandwich bounds.

Geometric path from π₀ (the prior, or the encoder's q(z|x)) to the posterior:
    log f_β(z) = log π₀(z) + β [log p(x, z) - log π₀(z)],   0 = β₀ < β₁ < … < β_T = 1.
Forward AIS: z ~ π₀, then for t = 1..T: log w += (β_t - β_{t-1}) h(z) with h = log p(x,z) - log π₀(z),
and z <- HMC_t(z) leaving f_{β_t} invariant. mean(w) over chains is unbiased for p(x), so the
log-mean-exp is a stochastic lower bound on log p(x), consistent in chains and in steps.
Reverse AIS from an exact posterior sample (Grosse et al. 2015; Wu et al. 2017): z_T = z*, then for
t = T..1: z <- HMC_t(z), log w += (β_{t-1} - β_t) h(z); mean(w) is unbiased for 1/p(x), so minus its
log-mean-exp is a stochastic upper bound. Step sizes are adapted per point and per step in a pilot
run toward a target acceptance rate, then frozen for the estimate (so it stays unbiased).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch.distributions import Distribution

from lvbench.compute.streaming import LogMeanExp, chunk_size_for, chunks
from lvbench.core.options import Interval, check_constraints
from lvbench.core.protocol import conditioned_log_joint
from lvbench.core.registry import incompatibility
from lvbench.core.validation import LvbenchInputError, check_data, check_num_samples
from lvbench.estimators.base import IncompatibleError, estimator
from lvbench.estimators.proposals import resolve_proposal

Schedule = Literal["sigmoid", "linear", "geometric"]
Start = Literal["prior", "encoder"]

__all__ = ["AISConfig", "ais", "ais_log_weights", "annealing_schedule", "bdmc", "pilot_step_sizes"]


def annealing_schedule(steps: int, kind: Schedule = "sigmoid", dtype=torch.float64, scale: float = 4.0) -> torch.Tensor:
    """β_0 = 0 < … < β_T = 1: "linear"; "sigmoid" (dense near both ends; Grosse et al. 2015); or
    "geometric" (β_t log-spaced from 1e-4: dense near 0, where a narrow posterior makes h vary most)."""
    steps = check_num_samples(steps, "steps")
    t = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    if kind == "linear":
        beta = t
    elif kind == "geometric":
        beta = torch.cat([t[:1], torch.logspace(-4, 0, steps, dtype=torch.float64)]) if steps > 1 else t
    elif kind == "sigmoid":
        s = torch.sigmoid(scale * (2 * t - 1))
        beta = (s - s[0]) / (s[-1] - s[0])
    else:
        raise LvbenchInputError(f"schedule must be 'linear', 'sigmoid' or 'geometric', got {kind!r}")
    return beta.to(dtype)


@dataclass
class AISConfig:
    steps: int = 200
    schedule: str = "sigmoid"
    start: str = "prior"
    leapfrog_steps: int = 5
    initial_step_size: float = 0.1
    target_accept: float = 0.65
    pilot_chains: int = 4


class _Path:
    """The annealing path for a batch of points: h(z) = log p(x, z) - log π₀(z) and its z-gradient."""

    def __init__(self, model, x: torch.Tensor, base: Distribution):
        self.log_joint, self.base = conditioned_log_joint(model, x), base

    def terms(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log π₀(z), h(z)) [C, N]."""
        log_base = self.base.log_prob(z)
        return log_base, self.log_joint(z) - log_base

    def log_target_and_grad(self, z: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_base, h = self.terms(z)
            log_f = log_base + beta * h
            (g,) = torch.autograd.grad(log_f.sum(), z)
        return log_f.detach(), g


def _hmc(path: _Path, z: torch.Tensor, beta: torch.Tensor, eps: torch.Tensor, leapfrog: int):
    """One HMC transition leaving f_β invariant; eps [N] per point. Returns (z, acceptance [C, N])."""
    eps_z = eps.view(1, -1, *([1] * (z.dim() - 2)))
    log_f0, g = path.log_target_and_grad(z, beta)
    p0 = torch.randn_like(z)
    zz, p = z, p0 + 0.5 * eps_z * g
    for i in range(leapfrog):
        zz = zz + eps_z * p
        log_f1, g = path.log_target_and_grad(zz, beta)
        p = p + (eps_z if i < leapfrog - 1 else 0.5 * eps_z) * g
    sum_dims = tuple(range(2, z.dim()))
    kinetic0 = 0.5 * p0.pow(2).sum(sum_dims) if sum_dims else 0.5 * p0.pow(2)
    kinetic1 = 0.5 * p.pow(2).sum(sum_dims) if sum_dims else 0.5 * p.pow(2)
    log_accept = (log_f1 - kinetic1) - (log_f0 - kinetic0)
    log_accept = torch.where(torch.isfinite(log_accept), log_accept, torch.full_like(log_accept, -math.inf))
    accept = torch.rand_like(log_accept).log() < log_accept
    mask = accept.view(*accept.shape, *([1] * (z.dim() - 2)))
    return torch.where(mask, zz, z), log_accept.clamp(max=0).exp()


def pilot_step_sizes(model, x: torch.Tensor, cfg: AISConfig) -> torch.Tensor:
    """Run a short forward AIS with ``cfg.pilot_chains`` chains, adapting ε per point toward the target
    acceptance after every transition; return the trajectory ε [T, N], to be frozen for the estimate."""
    betas = annealing_schedule(cfg.steps, cfg.schedule, dtype=x.dtype).to(x.device)
    path = _Path(model, x, resolve_proposal(model, x, cfg.start))
    z = path.base.sample((cfg.pilot_chains,))
    eps = torch.full((x.shape[0],), cfg.initial_step_size, dtype=x.dtype, device=x.device)
    trajectory = []
    for t in range(1, len(betas)):
        trajectory.append(eps.clone())
        z, acc = _hmc(path, z, betas[t], eps, cfg.leapfrog_steps)
        eps = eps * torch.where(acc.mean(0) > cfg.target_accept, 1.05, 1 / 1.05)
    return torch.stack(trajectory)


def ais_log_weights(
    model,
    x: torch.Tensor,
    chains: int,
    cfg: AISConfig,
    step_sizes: torch.Tensor,
    reverse_from: torch.Tensor | None = None,
    trace: bool = False,
):
    """Log-weights [chains, N] of forward AIS (or reverse AIS started at ``reverse_from`` [N, ...]).

    With ``trace``, also the running log-weights at every step [T+1, chains, N] (for checks against
    the closed-form normalizers of the intermediate targets). ``step_sizes`` [T, N] come from
    ``pilot_step_sizes``. Returns (log_w, trace or None).
    """
    betas = annealing_schedule(cfg.steps, cfg.schedule, dtype=x.dtype).to(x.device)
    path = _Path(model, x, resolve_proposal(model, x, cfg.start))
    if reverse_from is None:
        z = path.base.sample((chains,))
    else:
        z = reverse_from.unsqueeze(0).expand(chains, *reverse_from.shape).clone()
    log_w = torch.zeros(chains, x.shape[0], dtype=x.dtype, device=x.device)
    history = [log_w.clone()] if trace else None
    steps = range(1, len(betas)) if reverse_from is None else range(len(betas) - 1, 0, -1)
    for t in steps:
        if reverse_from is None:
            with torch.no_grad():
                log_w = log_w + (betas[t] - betas[t - 1]) * path.terms(z)[1]
            z, _ = _hmc(path, z, betas[t], step_sizes[t - 1], cfg.leapfrog_steps)
        else:
            z, _ = _hmc(path, z, betas[t], step_sizes[t - 1], cfg.leapfrog_steps)
            with torch.no_grad():
                log_w = log_w + (betas[t - 1] - betas[t]) * path.terms(z)[1]
        if trace:
            history.append(log_w.clone())
    return log_w, (torch.stack(history) if trace else None)


#: The ranges of AIS's options (``ais`` and ``bdmc`` alike), declared once.
AIS_CONSTRAINTS = {
    "steps": Interval(1, integer=True),
    "leapfrog_steps": Interval(1, integer=True),
    "step_size": Interval(0.0, low_open=True),
    "target_accept": Interval(0.0, 1.0, low_open=True, high_open=True),
}


def _config(steps, schedule, start, leapfrog_steps, step_size, target_accept) -> AISConfig:
    if start not in ("prior", "encoder"):
        raise LvbenchInputError(f"start must be 'prior' or 'encoder', got {start!r}")
    given = {"steps": steps, "leapfrog_steps": leapfrog_steps, "step_size": step_size, "target_accept": target_accept}
    check_constraints(AIS_CONSTRAINTS, given, "")
    return AISConfig(
        check_num_samples(steps, "steps"),
        schedule,
        start,
        check_num_samples(leapfrog_steps, "leapfrog_steps"),
        float(step_size),
        float(target_accept),
    )


def _chain_batch(model, x: torch.Tensor, chains: int, chain_batch: int | None) -> int:
    if chain_batch is not None:
        return min(check_num_samples(chain_batch, "chain_batch"), chains)
    # each leapfrog step keeps a graph of one log_joint: budget as for the IS estimators
    return chunk_size_for(model, x, chains)


@estimator(
    "ais",
    kind="likelihood",
    needs=("continuous_latent",),
    properties=("lower_bound", "unbiased_p", "consistent"),
    no_grad=False,
    constraints=AIS_CONSTRAINTS,
)
def ais(
    model,
    x: torch.Tensor,
    k: int,
    steps: int = 200,
    schedule: Schedule = "sigmoid",
    start: Start = "prior",
    leapfrog_steps: int = 5,
    step_size: float = 0.1,
    target_accept: float = 0.65,
    chain_batch: int | None = None,
) -> torch.Tensor:
    """AIS with k chains and T = ``steps`` HMC-annealed steps: log (1/k) Σ_c w_c, unbiased for p(x)."""
    cfg = _config(steps, schedule, start, leapfrog_steps, step_size, target_accept)
    eps = pilot_step_sizes(model, x, cfg)
    reducer = LogMeanExp()
    for c in chunks(k, _chain_batch(model, x, k, chain_batch)):
        log_w, _ = ais_log_weights(model, x, c, cfg, eps)
        reducer.update(log_w)
    return reducer.result().to(x.dtype)


def bdmc(
    model,
    x: torch.Tensor,
    z: torch.Tensor,
    steps: int = 200,
    chains: int = 4,
    schedule: Schedule = "sigmoid",
    start: Start = "prior",
    leapfrog_steps: int = 5,
    step_size: float = 0.1,
    target_accept: float = 0.65,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bidirectional Monte Carlo sandwich: (lower [N], upper [N]) stochastic bounds on log p(x) for data
    simulated from the model, where ``z`` [N, ...] are the latents that generated ``x``."""
    cfg = _config(steps, schedule, start, leapfrog_steps, step_size, target_accept)
    chains = check_num_samples(chains, "chains")
    x = check_data(x, model, getattr(model, "data_dim", None))
    if not isinstance(z, torch.Tensor) or z.shape[0] != x.shape[0] or z.shape[1:] != model.prior().event_shape:
        raise LvbenchInputError(
            f"z must be a tensor of shape [N={x.shape[0]}, *{tuple(model.prior().event_shape)}], "
            f"got {tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}"
        )
    reason = incompatibility("ais", model)  # bdmc runs AIS both ways: the same needs
    if reason is not None:
        raise IncompatibleError(f"bdmc: {reason}")
    z = z.to(dtype=x.dtype, device=x.device)
    eps = pilot_step_sizes(model, x, cfg)
    forward, _ = ais_log_weights(model, x, chains, cfg, eps)
    reverse, _ = ais_log_weights(model, x, chains, cfg, eps, reverse_from=z)
    log_k = math.log(chains)
    lower = torch.logsumexp(forward, 0) - log_k
    upper = -(torch.logsumexp(reverse, 0) - log_k)
    return lower.detach(), upper.detach()
